//! Faults injected through the embedded broker's API, at-least-once: a
//! broker outage, errors on produce and on offset commits, added latency.
//! Nothing is lost and the job recovers by itself.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::Message as _;
use weir::broker::{RDKafkaApiKey, RDKafkaRespErr};
use weir::job::Job;

#[test]
fn at_least_once_rides_out_an_outage_request_errors_and_latency() {
    let broker = cluster(4);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    let mut expected = Vec::new();
    let mut batch = |name: &str| {
        let orders = numbered_orders(name, "e", 150);
        expected.extend(orders.iter().map(|o| o.key.clone().unwrap()));
        orders
    };
    produce(&b, INPUT, &batch("before"));

    // A broker outage while orders arrive: the test's producer waits for it.
    let during = batch("outage");
    broker.broker_down(1).unwrap();
    let sender = {
        let b = b.clone();
        std::thread::spawn(move || produce(&b, INPUT, &during))
    };
    std::thread::sleep(Duration::from_secs(2)); // the outage
    broker.broker_up(1).unwrap();
    sender.join().unwrap();

    // Errors on produce (retried by the producer) and on offset commits
    // (the commit fails; the job backs off and reprocesses).
    use RDKafkaRespErr::*;
    broker
        .request_errors(
            RDKafkaApiKey::Produce,
            &[
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        )
        .unwrap();
    broker
        .request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[
                RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            ],
        )
        .unwrap();
    let errors = batch("errors");
    produce(&b, INPUT, &errors);
    produce(
        &b,
        INPUT,
        &[Input {
            key: Some("poison".into()),
            value: Some(b"{".to_vec()),
        }],
    );

    // Slow responses.
    broker
        .round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    produce(&b, INPUT, &batch("slow"));
    wait_committed(&b, "inventory");
    broker.round_trip_time(1, Duration::ZERO).unwrap();

    assert!(
        job.handle().is_ready(),
        "the job recovered by itself: {:?}",
        job.handle().error()
    );
    let got: BTreeMap<String, usize> = confirmations(&b);
    let missing: Vec<_> = expected.iter().filter(|k| !got.contains_key(*k)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(got.len(), expected.len());
    assert!(
        read_all(&b, DLQ).iter().any(|m| key_of(m) == "poison"),
        "the poison record is dead-lettered"
    );
    job.stop().unwrap();
}

#[test]
fn a_member_refused_at_its_first_sync_costs_a_rejoin_not_records() {
    // The embedded broker refuses a follower whose SyncGroup reaches it
    // after the leader's (REBALANCE_IN_PROGRESS; a race two stream threads
    // lose about 1 start in 8). Forced here on the first SyncGroup: that
    // member rejoins, the group rebalances, and every order is still
    // confirmed exactly once.
    let broker = cluster(4);
    let b = broker.bootstrap_servers().to_string();
    let orders = numbered_orders("sync", "e", 200);
    produce(&b, INPUT, &orders);
    broker.track_requests().unwrap();
    broker
        .request_errors(
            RDKafkaApiKey::SyncGroup,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = job_config(&b, dir.path());
    cfg.stream_threads = 2;
    let job = Job::start(&cfg).unwrap();
    wait_committed(&b, "inventory");
    // Whichever member was refused (the follower, or the leader, which
    // then leaves the follower's sync unanswered), it syncs again: two
    // SyncGroups are a start without the fault, four with it.
    let syncs = broker.requests(RDKafkaApiKey::SyncGroup).unwrap();
    assert!(
        syncs >= 3,
        "the refused member synced again: {syncs} SyncGroups"
    );
    let got = confirmations(&b);
    let expected: BTreeMap<String, usize> =
        orders.iter().map(|o| (o.key.clone().unwrap(), 1)).collect();
    assert_eq!(got, expected, "every order confirmed exactly once");
    job.stop().unwrap();
}

/// Committed offsets of the job's group on the input, by partition.
fn committed(brokers: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "inventory")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(INPUT, p);
    }
    let got = c.committed_offsets(tpl, TIMEOUT).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// A dead letter that cannot be published is not skipped: every commit
/// that would move the input past it fails, the job rewinds and retries
/// (and says so on `/ready`), and once the dead-letter topic is reachable
/// the record is there and processing goes on.
#[test]
fn a_dead_letter_that_cannot_be_published_holds_the_input_until_it_can() {
    use weir::broker::{EmbeddedBroker, TopicSpec};
    let changelog = "inventory-dedup-changelog";
    let topics = [(INPUT, 2), (CONFIRMED, 2), (DLQ, 1), (changelog, 2)].map(|(n, p)| TopicSpec {
        name: n.into(),
        partitions: p,
    });
    let broker = EmbeddedBroker::start(2, &topics).unwrap();
    // Everything on broker 1 but the dead-letter topic, whose broker fails.
    for t in [INPUT, CONFIRMED, changelog] {
        for p in 0..2 {
            broker.partition_leader(t, p, 1).unwrap();
        }
    }
    broker.partition_leader(DLQ, 0, 2).unwrap();
    broker.group_coordinator("inventory", 1).unwrap();
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = job_config(&b, dir.path());
    // Undeliverable records fail after 1.5 s instead of 5 minutes.
    cfg.kafka
        .push(("producer.message.timeout.ms".into(), "1500".into()));
    let job = Job::start(&cfg).unwrap();
    let mut expected: Vec<String> = Vec::new();
    let before = numbered_orders("before", "e", 20);
    expected.extend(before.iter().map(|o| o.key.clone().unwrap()));
    produce(&b, INPUT, &before);
    wait_committed(&b, "inventory");
    let at_start = committed(&b);

    broker.broker_down(2).unwrap();
    let poison = Input {
        key: Some("poison".into()),
        value: Some(b"{\"not\": \"an order\"".to_vec()),
    };
    produce(&b, INPUT, &[poison]);
    let (poison_partition, poison_offset) = read_all(&b, INPUT)
        .iter()
        .find(|m| key_of(m) == "poison")
        .map(|m| (m.partition(), m.offset()))
        .unwrap();
    let after = numbered_orders("after", "f", 20);
    expected.extend(after.iter().map(|o| o.key.clone().unwrap()));
    produce(&b, INPUT, &after);

    // The job sees the failure and retries...
    let status = job.handle().status();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while status.failed_commits() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "commits never failed while the dead-letter topic was unreachable"
        );
        assert!(status.error().is_none(), "{:?}", status.error());
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and says so on /ready...
    let ready = job.readiness()();
    assert!(!ready.ready, "{}", ready.detail);
    assert!(ready.detail["failedCommitsInARow"].as_u64().unwrap() >= 2);
    // ...and its input partition is not committed past it: the poison
    // record is not skipped.
    let held = committed(&b).get(&poison_partition).copied();
    assert!(
        held.unwrap_or(0) <= poison_offset,
        "committed {held:?} past the undelivered dead letter at {poison_offset}"
    );
    assert_eq!(held, at_start.get(&poison_partition).copied());

    broker.broker_up(2).unwrap();
    wait_committed(&b, "inventory");
    let dead = read_all(&b, DLQ);
    assert!(!dead.is_empty(), "the poison record was lost");
    assert!(dead.iter().all(|m| key_of(m) == "poison"));
    let got = confirmations(&b);
    let missing: Vec<_> = expected.iter().filter(|k| !got.contains_key(*k)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(status.failed_commits(), 0);
    assert!(status.error().is_none());
    assert!(job.readiness()().ready);
    job.stop().unwrap();
}

/// An output the producer refuses outright (here: a confirmation bigger
/// than the producer's `message.max.bytes`) is never skipped: each commit
/// fails and rewinds, the input stays committed just before that order,
/// and the orders after it wait with it — none is confirmed while it is
/// refused. Restarted with a limit that fits, the job confirms every order
/// exactly once.
#[test]
fn an_output_the_producer_refuses_holds_the_input_until_it_is_accepted() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let small = job_config(&b, dir.path());
    let mut limited = small.clone();
    limited
        .kafka
        .push(("producer.message.max.bytes".into(), "3000".into()));
    let job = Job::start(&limited).unwrap();
    let before = numbered_orders("before", "e", 5);
    produce(&b, INPUT, &before);
    wait_committed(&b, "inventory");
    assert_eq!(committed(&b).get(&0), Some(&5));

    let mut big = order("big-event", "big");
    big["data"]["note"] = serde_json::Value::String("x".repeat(4000));
    let mut rest = vec![Input::json("big", &big)];
    rest.extend(numbered_orders("after", "f", 5));
    produce(&b, INPUT, &rest);

    let status = job.handle().status();
    wait_for("commits never failed while an output was refused", || {
        assert!(status.error().is_none(), "{:?}", status.error());
        status.failed_commits() >= 2
    });
    assert!(!job.readiness()().ready);
    assert_eq!(
        committed(&b).get(&0),
        Some(&5),
        "the input moved past the refused order"
    );
    let got = confirmations(&b);
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        (0..5).map(|i| format!("before-{i}")).collect::<Vec<_>>(),
        "an order at or after the refused one was confirmed"
    );
    // Its final commit fails the same way: nothing more is committed.
    let _ = job.stop();
    assert_eq!(committed(&b).get(&0), Some(&5));

    let job = Job::start(&small).unwrap();
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let got = confirmations(&b);
    let mut expected: Vec<String> = before
        .iter()
        .chain(&rest)
        .map(|o| o.key.clone().unwrap())
        .collect();
    expected.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
    assert!(read_all(&b, DLQ).is_empty());
}

#[test]
fn restore_rides_out_fetch_errors_and_slow_responses() {
    // Errors on the restore consumer's fetches (retried by librdkafka; one
    // comes back as a message that moves the partition's position past its
    // offset) and slow responses must cost time, never entries or the
    // store's changelog offset. Batched reads (rd_kafka_consume_batch_queue)
    // lost a partition's first record here on every run.
    let partitions = 3;
    let broker = cluster(partitions);
    let b = broker.bootstrap_servers().to_string();
    let n = 3_000;
    for p in 0..partitions {
        let log: Vec<Input> = (0..n)
            .map(|i| Input {
                key: Some(format!("p{p}-k{i:05}")),
                value: Some(b"seen".to_vec()),
            })
            .collect();
        produce_at(&b, "inventory-dedup-changelog", Some(p), &log);
    }
    use RDKafkaRespErr::*;
    broker
        .request_errors(
            RDKafkaApiKey::Fetch,
            &[
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            ],
        )
        .unwrap();
    broker
        .round_trip_time(1, Duration::from_millis(100))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "the job restores and runs: {:?}",
        job.handle().error()
    );
    broker.round_trip_time(1, Duration::ZERO).unwrap();
    job.stop().unwrap();
    for p in 0..partitions {
        assert_restored(dir.path(), p, n);
    }
}

/// Partition `p`'s store holds exactly the changelog's `n` entries
/// `p{p}-k{i:05}` and its offset is past them.
fn assert_restored(state: &std::path::Path, p: i32, n: usize) {
    let (offset, entries) = dedup_partition(state, p);
    assert_eq!(offset, Some(n as i64), "partition {p}");
    let missing: Vec<String> = (0..n)
        .map(|i| format!("p{p}-k{i:05}"))
        .filter(|k| !entries.contains_key(k.as_bytes()))
        .collect();
    assert!(missing.is_empty(), "partition {p}: lost {missing:?}");
    assert_eq!(entries.len(), n, "partition {p}: nothing else");
}

#[test]
fn a_fetch_error_at_the_last_record_left_to_restore_costs_time_not_the_record() {
    // A fetch error moves the partition's consumer position past the failed
    // offset as if a record had been read there, and restore takes the end
    // of a changelog from that position (under exactly-once the last
    // record is followed by commit markers, never delivered; the mock
    // broker writes none, so this test cannot show them). Partition 1's
    // store has all but the last record: its first fetch, at that record,
    // fails. Trusting the position would end the restore without it;
    // restore seeks an errored partition back and reads it again.
    use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore, WriteBatch};
    const CHANGELOG: &str = "inventory-dedup-changelog";
    let broker = cluster(2);
    let b = broker.bootstrap_servers().to_string();
    let key = |p: i32, i: usize| format!("p{p}-k{i:05}");
    let written = [3_000, 6];
    for p in 0..2 {
        let log: Vec<Input> = (0..written[p as usize])
            .map(|i| Input {
                key: Some(key(p, i)),
                value: Some(b"seen".to_vec()),
            })
            .collect();
        produce_at(&b, CHANGELOG, Some(p), &log);
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = RocksDbStore::open(
            "dedup",
            dir.path().join("inventory/dedup/1"),
            RocksDbOptions::default(),
        )
        .unwrap();
        let mut batch = WriteBatch::default();
        for i in 0..5 {
            batch.put(key(1, i).into_bytes(), b"seen");
        }
        batch.set_changelog_offset(5); // the last record is left
        store.write(batch).unwrap();
    }
    use RDKafkaRespErr::*;
    broker
        .request_errors(
            RDKafkaApiKey::Fetch,
            &[
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            ],
        )
        .unwrap();

    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "the job restores and runs: {:?}",
        job.handle().error()
    );
    job.stop().unwrap();
    for p in 0..2 {
        assert_restored(dir.path(), p, written[p as usize]);
    }
}
