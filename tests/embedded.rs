//! The Inventory job end to end on the embedded broker: exact outputs,
//! restart, state rebuilt from the changelog, two instances in one group.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use rdkafka::Message as _;
use serde_json::json;
use weir::job::Job;
use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore, WriteBatch};

/// 250 unique orders, 30 redeliveries, 20 resends, and one record of every
/// bad-input class. Returns (inputs, unique orderIds, poison (key, kind)).
fn workload(prefix: &str) -> (Vec<Input>, BTreeSet<String>, Vec<(String, &'static str)>) {
    let mut inputs = Vec::new();
    let mut unique = BTreeSet::new();
    for i in 0..250 {
        let id = format!("{prefix}-{i}");
        inputs.push(Input::json(&id, &order(&format!("e-{id}"), &id)));
        unique.insert(id);
    }
    for i in 0..30 {
        let id = format!("{prefix}-{}", i * 7);
        inputs.push(Input::json(&id, &order(&format!("e-{id}"), &id)));
    }
    for i in 0..20 {
        let id = format!("{prefix}-{}", i * 11 + 1);
        inputs.push(Input::json(&id, &order(&format!("resend-{id}"), &id)));
    }
    let mut bad_qty = order("e-bad-qty", "bad-qty");
    bad_qty["data"]["items"][0]["quantity"] = json!(0);
    let mut overflow = order("e-overflow", "overflow");
    overflow["data"]["items"][0]["price"] = json!(1.7e308);
    overflow["data"]["items"][0]["quantity"] = json!(10);
    let mut huge = order("e-huge", "huge");
    huge["version"] = json!(9);
    huge["data"]["notes"] = json!("x".repeat(400_000));
    let poison: Vec<(Input, &str)> = vec![
        (
            Input {
                key: Some("null-value".into()),
                value: None,
            },
            "deserialization",
        ),
        (
            Input {
                key: Some("empty".into()),
                value: Some(vec![]),
            },
            "deserialization",
        ),
        (
            Input {
                key: Some("non-utf8".into()),
                value: Some(vec![0xff, 0x00, 0xfe]),
            },
            "deserialization",
        ),
        (
            Input {
                key: Some("broken".into()),
                value: Some(b"{\"eventId\": ".to_vec()),
            },
            "deserialization",
        ),
        (
            Input {
                key: Some("array".into()),
                value: Some(b"[1]".to_vec()),
            },
            "deserialization",
        ),
        (Input::json("bad-qty", &bad_qty), "validation"),
        (
            Input::json("not-the-order-id", &order("e-mismatch", "mismatch")),
            "validation",
        ),
        (Input::json("overflow", &overflow), "processing"),
        (Input::json("huge", &huge), "validation"),
    ];
    let mut kinds = Vec::new();
    for (i, (input, kind)) in poison.into_iter().enumerate() {
        kinds.push((input.key.clone().unwrap(), kind));
        // Spread the poison through the stream.
        inputs.insert(i * 30 + 5, input);
    }
    (inputs, unique, kinds)
}

#[test]
fn outputs_are_exact_confirmations_once_and_every_poison_record_dead_lettered() {
    let broker = cluster(4);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (inputs, unique, poison) = workload("o");
    // Half before the job starts (earliest offset reset), half while it runs.
    let (before, after) = inputs.split_at(inputs.len() / 2);
    produce(&b, INPUT, before);
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    produce(&b, INPUT, after);
    wait_committed(&b, "inventory");

    let confirmed = read_all(&b, CONFIRMED);
    let mut seen = BTreeMap::new();
    for m in &confirmed {
        let v = json_of(m);
        assert_eq!(
            key_of(m),
            v["data"]["orderId"],
            "confirmations are keyed by orderId"
        );
        assert_eq!(v["eventType"], "OrderConfirmed");
        assert_eq!(
            v["causationId"],
            format!("e-{}", key_of(m)),
            "the first event confirms, not the resend"
        );
        *seen.entry(key_of(m)).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), unique);
    assert!(
        seen.values().all(|n| *n == 1),
        "each order confirmed exactly once"
    );

    let input_by_coords: BTreeMap<(i32, i64), rdkafka::message::OwnedMessage> = read_all(&b, INPUT)
        .into_iter()
        .map(|m| {
            use rdkafka::Message;
            ((m.partition(), m.offset()), m)
        })
        .collect();
    let dead = read_all(&b, DLQ);
    assert_eq!(
        dead.len(),
        poison.len(),
        "each poison record dead-lettered once"
    );
    for (key, kind) in &poison {
        let m = dead
            .iter()
            .find(|m| key_of(m) == *key)
            .unwrap_or_else(|| panic!("no dead letter for {key}"));
        let v = json_of(m);
        assert_eq!(v["error"]["kind"], *kind, "{key}");
        let p = v["source"]["partition"].as_i64().unwrap() as i32;
        let o = v["source"]["offset"].as_i64().unwrap();
        let original = &input_by_coords[&(p, o)];
        use rdkafka::Message;
        let original_bytes = original
            .payload()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        assert_eq!(
            v["originalPayload"].as_str().map(str::to_string),
            original_bytes,
            "{key}: exact original bytes"
        );
        assert_eq!(v["source"]["topic"], INPUT);
        assert_eq!(header(m, "__streams.errors.topic").as_deref(), Some(INPUT));
        assert_eq!(header(m, "__streams.errors.partition"), Some(p.to_string()));
        assert_eq!(header(m, "__streams.errors.offset"), Some(o.to_string()));
        assert_eq!(
            header(m, "__streams.errors.message").as_deref(),
            v["error"]["message"].as_str(),
            "{key}"
        );
        assert!(header(m, "__streams.errors.exception")
            .unwrap()
            .starts_with("weir."));
        assert!(m.payload().unwrap().len() < 1_000_000);
    }
    // At-least-once stamps no provenance by default: no weir.* header on
    // any output, dead letter or changelog record.
    let changelog = read_all(&b, "inventory-dedup-changelog");
    assert_eq!(changelog.len(), unique.len(), "one entry per order");
    for m in confirmed.iter().chain(&dead).chain(&changelog) {
        assert_unstamped(m);
    }
    job.stop().unwrap();
}

#[test]
fn a_restarted_job_does_not_confirm_again_and_a_lost_state_dir_is_rebuilt() {
    let broker = cluster(2);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<Input> = numbered_orders("r", "e", 100);
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    produce(&b, INPUT, &first);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    assert_eq!(confirmations(&b).len(), 100);

    // Restart on the same state: every order resent is a duplicate.
    let resend: Vec<Input> = numbered_orders("r", "again", 100);
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    produce(&b, INPUT, &resend);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let after_restart = confirmations(&b);
    assert_eq!(after_restart.len(), 100);
    assert!(
        after_restart.values().all(|n| *n == 1),
        "no second confirmation after restart"
    );

    // Lose the state directory: the store is rebuilt from the changelog.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    let mut third: Vec<Input> = numbered_orders("r", "third", 100);
    third.push(Input::json("r-new", &order("e-new", "r-new")));
    produce(&b, INPUT, &third);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let after_rebuild = confirmations(&b);
    assert_eq!(after_rebuild.len(), 101, "only the new order is confirmed");
    assert!(
        after_rebuild.values().all(|n| *n == 1),
        "duplicates still dropped after rebuild"
    );

    // The rebuilt store holds every confirmed order, across partitions.
    let mut keys = BTreeSet::new();
    for p in 0..2 {
        let store = RocksDbStore::open(
            "dedup",
            dir.path().join("inventory/dedup").join(p.to_string()),
            RocksDbOptions::default(),
        )
        .unwrap();
        store
            .for_each(&mut |k, _| {
                if !k.starts_with(weir_topology::dedup::RESERVED_PREFIX) {
                    keys.insert(String::from_utf8(k.to_vec()).unwrap());
                }
                true
            })
            .unwrap();
        assert!(store.changelog_offset().is_some());
    }
    assert_eq!(keys.len(), 101);
}

#[test]
fn restore_replays_only_the_tail_after_the_recorded_changelog_offset() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let orders: Vec<Input> = numbered_orders("t", "e", 50);
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    produce(&b, INPUT, &orders);
    wait_committed(&b, "inventory");
    job.stop().unwrap();

    // Simulate a crash between "commit offsets" and "apply state": the store
    // forgets the writes of the changelog's last 10 records and records an
    // older changelog offset.
    use rdkafka::Message;
    let log: Vec<Vec<u8>> = read_all(&b, "inventory-dedup-changelog")
        .iter()
        .map(|m| m.key().unwrap().to_vec())
        .collect();
    assert_eq!(log.len(), 50, "one record per confirmed order");
    let (head, tail) = log.split_at(40);
    let path = dir.path().join("inventory/dedup/0");
    {
        let mut store = RocksDbStore::open("dedup", &path, RocksDbOptions::default()).unwrap();
        assert_eq!(store.changelog_offset(), Some(50));
        let mut batch = WriteBatch::new();
        // A key below the offset is deleted too: a tail replay must not
        // bring it back (a full replay would).
        batch.delete(head[0].clone());
        for k in tail {
            batch.delete(k.clone());
        }
        batch.set_changelog_offset(40);
        store.write(batch).unwrap();
    }
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "job restores and runs"
    );
    job.stop().unwrap();
    let store = RocksDbStore::open("dedup", &path, RocksDbOptions::default()).unwrap();
    assert_eq!(store.changelog_offset(), Some(50));
    for k in tail {
        assert!(
            store.get(k).unwrap().is_some(),
            "{k:?} restored from the tail"
        );
    }
    assert!(
        store.get(&head[0]).unwrap().is_none(),
        "records before the recorded offset are not replayed"
    );
}

#[test]
fn changelogs_longer_than_one_restore_batch_restore_every_entry_in_log_order() {
    // Restore hands its writer thread batches of at most 4,096 records:
    // the ~10,000 records of each partition take several, and a key's later
    // records (a tombstone after a put, a put after a tombstone) arrive in
    // later batches than its first. Three partitions of different lengths
    // restore at once (planned together); each must end with its own
    // entries and offset.
    let partitions = 3;
    let broker = cluster(partitions);
    let b = broker.bootstrap_servers().to_string();
    let record = |k: &str, v: Option<&str>| Input {
        key: Some(k.into()),
        value: v.map(|v| v.as_bytes().to_vec()),
    };
    let n = 10_000;
    let mut logs = Vec::new();
    for p in 0..partitions {
        // Each partition's own keys and final values.
        let mut log = vec![record("k-back", Some("old")), record("k-back", None)];
        log.extend((0..n + p as usize).map(|i| record(&format!("k-{i:05}"), Some("seen"))));
        log.push(record("k-00005", None));
        log.push(record("k-back", Some(&format!("new-{p}"))));
        produce_at(&b, "inventory-dedup-changelog", Some(p), &log);
        logs.push(log);
    }

    let dir = tempfile::tempdir().unwrap();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "job restores and runs"
    );
    job.stop().unwrap();
    for (p, log) in logs.iter().enumerate() {
        let (offset, entries) = dedup_partition(dir.path(), p as i32);
        assert_eq!(offset, Some(log.len() as i64), "partition {p}");
        assert_eq!(
            entries.len(),
            n + p,
            "partition {p}: every key once, k-00005 deleted, k-back back"
        );
        assert_eq!(entries.get(&b"k-00005"[..]), None, "partition {p}");
        let last = format!("k-{:05}", n + p - 1);
        assert_eq!(
            entries.get(last.as_bytes()).map(Vec::as_slice),
            Some(&b"seen"[..]),
            "partition {p}"
        );
        assert_eq!(
            entries.get(&b"k-back"[..]),
            Some(&format!("new-{p}").into_bytes()),
            "partition {p}"
        );
    }
}

#[test]
fn two_logged_stores_restore_each_from_its_own_changelog() {
    // One task owns a partition of each store; their changelogs share
    // partition numbers and a key, so a record applied to the wrong store
    // (or from the wrong partition) shows.
    use weir::broker::{EmbeddedBroker, TopicSpec};
    use weir_topology::record::Record;
    use weir_topology::{KafkaStreams, StoreSpec, StreamsConfig, StringSerde, TopologyBuilder};
    let topics = [
        ("words", 2),
        ("out", 2),
        ("app-first-changelog", 2),
        ("app-second-changelog", 2),
    ]
    .map(|(n, p)| TopicSpec {
        name: n.into(),
        partitions: p,
    });
    let broker = EmbeddedBroker::start(1, &topics).unwrap();
    let b = broker.bootstrap_servers().to_string();
    let record = |k: String, v: &str| Input {
        key: Some(k),
        value: Some(v.as_bytes().to_vec()),
    };
    let mut expected: BTreeMap<(&str, i32), BTreeMap<String, String>> = BTreeMap::new();
    for store in ["first", "second"] {
        for p in 0..2 {
            let mut log: Vec<Input> = (0..300)
                .map(|i| record(format!("{store}-{p}-{i:03}"), "seen"))
                .collect();
            log.push(record("shared".into(), &format!("{store} {p}")));
            produce_at(&b, &format!("app-{store}-changelog"), Some(p), &log);
            let mut want: BTreeMap<String, String> = (0..300)
                .map(|i| (format!("{store}-{p}-{i:03}"), "seen".to_string()))
                .collect();
            want.insert("shared".into(), format!("{store} {p}"));
            expected.insert((store, p), want);
        }
    }

    let t = TopologyBuilder::new();
    t.add_store(StoreSpec::key_value("first"));
    t.add_store(StoreSpec::key_value("second"));
    t.source("words", StringSerde, StringSerde)
        .dedup("by-key", "first", |r: &Record<String, String>| {
            r.key.clone().map(String::into_bytes)
        })
        .dedup("by-value", "second", |r: &Record<String, String>| {
            r.value.clone().map(String::into_bytes)
        })
        .to("out", StringSerde, StringSerde);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StreamsConfig::new("app", &b);
    cfg.state_dir = dir.path().to_path_buf();
    cfg.guarantee = weir_topology::Guarantee::AtLeastOnce;
    let streams = KafkaStreams::start(t.build().unwrap(), cfg).unwrap();
    assert!(
        streams.wait_until_running(TIMEOUT),
        "both stores restore and the job runs"
    );
    streams.close().unwrap();

    for ((store, p), want) in expected {
        let path = dir.path().join(format!("app/{store}/{p}"));
        let s = RocksDbStore::open(store, &path, RocksDbOptions::default()).unwrap();
        let mut got = BTreeMap::new();
        s.for_each(&mut |k, v| {
            got.insert(
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            );
            true
        })
        .unwrap();
        assert_eq!(got, want, "store {store}, partition {p}");
        assert_eq!(
            s.changelog_offset(),
            Some(301),
            "store {store}, partition {p}"
        );
    }
}

#[test]
fn state_from_another_cluster_is_wiped_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = cluster(1);
        let b = broker.bootstrap_servers().to_string();
        let job = Job::start(&job_config(&b, dir.path())).unwrap();
        produce(&b, INPUT, &[Input::json("w-1", &order("e-1", "w-1"))]);
        wait_committed(&b, "inventory");
        job.stop().unwrap();
    }
    // A fresh cluster (the embedded broker keeps nothing): its changelog is
    // empty, the local store claims offset 1. The same order is new here.
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    produce(&b, INPUT, &[Input::json("w-1", &order("e-1", "w-1"))]);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    assert_eq!(confirmations(&b).get("w-1"), Some(&1));
}

#[test]
fn two_instances_split_the_partitions_and_confirm_each_order_once() {
    let broker = cluster(4);
    let b = broker.bootstrap_servers().to_string();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Job::start(&job_config(&b, d1.path())).unwrap();
    let c = Job::start(&job_config(&b, d2.path())).unwrap();
    // Both members get work before the data flows.
    wait_for("both instances should get partitions", || {
        a.handle().assigned_partitions() > 0
            && c.handle().assigned_partitions() > 0
            && a.handle().assigned_partitions() + c.handle().assigned_partitions() == 4
            && a.handle().is_ready()
            && c.handle().is_ready()
    });
    produce(&b, INPUT, &orders_each_twice("s", 200));
    wait_committed(&b, "inventory");
    let n = confirmations(&b);
    assert_eq!(n.len(), 200);
    assert!(n.values().all(|c| *c == 1));
    // Each instance holds its own share of the state.
    let count = |d: &std::path::Path| {
        std::fs::read_dir(d.join("inventory/dedup"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert!(count(d1.path()) >= 1 && count(d2.path()) >= 1);
    // When one instance leaves, the other takes its partitions over in a
    // rebalance, which its status counts.
    let status = a.handle().status();
    let before = status.assignments();
    assert!(before >= 1);
    c.stop().unwrap();
    wait_for("the remaining instance should own all 4 partitions", || {
        a.handle().assigned_partitions() == 4 && a.handle().is_ready()
    });
    assert!(status.assignments() > before);
    a.stop().unwrap();
}

#[test]
fn a_caught_up_job_commits_without_waiting_for_its_interval() {
    // A 600 s interval: only the commit when the input ran dry can move
    // the group's offsets within the test's patience (60 s).
    for guarantee in [
        weir_topology::Guarantee::AtLeastOnce,
        weir_topology::Guarantee::ExactlyOnce,
    ] {
        let (broker, dir) = (cluster(4), tempfile::tempdir().unwrap());
        let b = broker.bootstrap_servers().to_string();
        let mut cfg = job_config(&b, dir.path());
        cfg.commit_interval = Duration::from_secs(600);
        cfg.guarantee = guarantee;
        let job = Job::start(&cfg).unwrap();
        wait_for("the job owns all 4 partitions", || {
            job.handle().assigned_partitions() == 4 && job.handle().is_ready()
        });
        produce(&b, INPUT, &orders_each_twice("c", 100));
        let status = job.handle().status();
        wait_for("all 200 records committed", || {
            status.records_committed() == 200
        });
        if guarantee == weir_topology::Guarantee::AtLeastOnce {
            // The group's lag is 0. (The embedded broker keeps no
            // transactional offset commits: under exactly-once only the
            // committed transactions show it.)
            wait_committed(&b, "inventory");
        }
        let confirmed = confirmations(&b);
        assert_eq!(confirmed.len(), 100, "{guarantee:?}");
        assert!(confirmed.values().all(|&n| n == 1), "{guarantee:?}");
        job.stop().unwrap();
    }
}

/// Two stream threads that commit only when stopped (a 600 s interval, and
/// no commit when caught up).
fn two_threads_committing_at_stop(brokers: &str, dir: &std::path::Path) -> weir::job::JobConfig {
    let mut cfg = job_config(brokers, dir);
    cfg.stream_threads = 2;
    cfg.commit_interval = Duration::from_secs(600);
    cfg.commit_when_caught_up = false;
    cfg
}

/// Starts the job and waits until its threads own all 4 partitions.
fn start_both_threads(cfg: &weir::job::JobConfig) -> Job {
    let job = Job::start(cfg).unwrap();
    wait_for("the two threads should own all 4 partitions", || {
        job.handle().assigned_partitions() == 4 && job.handle().is_ready()
    });
    job
}

#[test]
fn two_stream_threads_share_the_partitions_and_the_state_a_one_thread_restart_keeps() {
    // Nothing commits before the stop: the stop's final commits must carry
    // the whole run, in both threads.
    let (broker, dir) = (cluster(4), tempfile::tempdir().unwrap());
    let b = broker.bootstrap_servers().to_string();
    let mut cfg = two_threads_committing_at_stop(&b, dir.path());
    // Stamped on request under at-least-once too.
    cfg.provenance_headers = weir_topology::ProvenanceHeaders::Always;
    let job = start_both_threads(&cfg);
    produce(&b, INPUT, &orders_each_twice("t", 200));
    let status = job.handle().status();
    wait_for("all 400 records processed", || {
        status.records_processed() == 400
    });
    assert_eq!(status.records_committed(), 0, "nothing committed yet");
    job.stop().unwrap();
    assert_eq!(
        status.records_committed(),
        400,
        "the final commits report what they carried"
    );
    let confirmed = read_all(&b, CONFIRMED);
    assert_eq!(confirmed.len(), 200, "each order confirmed once");
    assert_eq!(confirmations(&b).len(), 200);
    // Each thread stamps its own run id: both threads did work.
    let runs: BTreeSet<String> = confirmed
        .iter()
        .map(|m| header(m, "weir.run").expect("weir.run header"))
        .collect();
    assert_eq!(
        runs.len(),
        2,
        "both stream threads confirmed orders: {runs:?}"
    );
    // Both final commits landed (a thread leaving the group before its
    // sibling committed made that commit fail): nothing is left to redo.
    wait_committed(&b, "inventory");

    // One thread on the same state directory opens the stores both wrote:
    // nothing is processed again, every resend is a duplicate, only the new
    // order is confirmed.
    cfg.stream_threads = 1;
    cfg.commit_interval = Duration::from_millis(100);
    let job = Job::start(&cfg).unwrap();
    let mut again = numbered_orders("t", "again", 200);
    again.push(Input::json("t-new", &order("e-new", "t-new")));
    produce(&b, INPUT, &again);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let n = confirmations(&b);
    assert_eq!(n.len(), 201);
    assert!(n.values().all(|c| *c == 1), "no order confirmed twice");
}

#[test]
fn a_stop_lets_every_stream_thread_commit_before_any_leaves_the_group() {
    // All input on partition 0: one thread has work to commit at the stop,
    // the other has none and would leave the group at once, and a leave
    // starts a rebalance under which the busy thread's commit is refused.
    let (broker, dir) = (cluster(4), tempfile::tempdir().unwrap());
    let b = broker.bootstrap_servers().to_string();
    let job = start_both_threads(&two_threads_committing_at_stop(&b, dir.path()));
    produce_at(&b, INPUT, Some(0), &numbered_orders("p", "e", 50));
    let status = job.handle().status();
    wait_for("all 50 records processed", || {
        status.records_processed() == 50
    });
    job.stop().expect("a clean stop commits in every thread");
    wait_committed(&b, "inventory");
    assert_eq!(confirmations(&b).len(), 50);
}

#[test]
fn a_stop_during_a_rebalance_is_clean_and_loses_nothing() {
    // The second thread's join starts a rebalance while the first thread
    // already processes; the stop's final commit meets the rebalance in
    // progress. That is no failure: the next owner reprocesses.
    let (broker, dir) = (cluster(4), tempfile::tempdir().unwrap());
    let b = broker.bootstrap_servers().to_string();
    let mut cfg = two_threads_committing_at_stop(&b, dir.path());
    produce_at(&b, INPUT, Some(0), &numbered_orders("m", "e", 50));
    let job = Job::start(&cfg).unwrap();
    let status = job.handle().status();
    wait_for("all 50 records processed", || {
        status.records_processed() >= 50
    });
    job.stop().expect("a stop during a rebalance is clean");
    cfg.stream_threads = 1;
    cfg.commit_interval = Duration::from_millis(100);
    let job = Job::start(&cfg).unwrap();
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let n = confirmations(&b);
    assert_eq!(n.len(), 50, "every order confirmed");
}

#[test]
fn a_truncated_changelog_restores_what_remains_and_the_job_runs() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    let first: Vec<Input> = numbered_orders("c", "e", 5);
    produce(&b, INPUT, &first);
    wait_committed(&b, "inventory");
    job.stop().unwrap();

    // Another writer fills the changelog past what the broker keeps (the
    // embedded broker drops the oldest records beyond ~5 MiB a partition).
    let filler: Vec<Input> = (0..80)
        .map(|i| Input {
            key: Some(format!("filler-{i}")),
            value: Some(vec![b'f'; 100_000]),
        })
        .collect();
    produce(&b, "inventory-dedup-changelog", &filler);
    let remaining = read_all(&b, "inventory-dedup-changelog");
    use rdkafka::Message;
    let low = remaining.first().map(|m| m.offset()).unwrap();
    assert!(
        low > 5,
        "the broker truncated the changelog (first offset left: {low})"
    );

    // The store recorded offset 5, below what is left: restore what remains.
    let job = Job::start(&job_config(&b, dir.path())).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "job restores and runs"
    );
    produce(
        &b,
        INPUT,
        &[
            Input::json("c-1", &order("again", "c-1")),
            Input::json("c-9", &order("e-9", "c-9")),
        ],
    );
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let n = confirmations(&b);
    assert_eq!(n.len(), 6, "c-1 is still a duplicate, c-9 is new: {n:?}");
    assert!(n.values().all(|c| *c == 1));
    let store = RocksDbStore::open(
        "dedup",
        dir.path().join("inventory/dedup/0"),
        RocksDbOptions::default(),
    )
    .unwrap();
    let last = remaining.last().unwrap();
    assert!(
        store.get(last.key().unwrap()).unwrap().is_some(),
        "the remaining records were restored"
    );
}

/// The embedded broker cannot prove exactly-once (it neither hides aborted
/// records nor stores transactional offsets); this runs the transactional
/// code path end to end and checks what it can: exact outputs of one run,
/// every record stamped with its run and transaction when asked, none of
/// Weir's headers by default, and each changelog record telling (in its
/// value) the input offset that caused it, which restore reads.
#[test]
fn exactly_once_runs_its_transactional_path_and_stamps_every_record_when_asked() {
    for stamped in [false, true] {
        exactly_once_outputs(stamped);
    }
}

fn exactly_once_outputs(stamped: bool) {
    let broker = cluster(2);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = job_config(&b, dir.path());
    cfg.guarantee = weir_topology::Guarantee::ExactlyOnce;
    if stamped {
        cfg.provenance_headers = weir_topology::ProvenanceHeaders::Always;
    }
    let job = Job::start(&cfg).unwrap();
    let mut inputs = numbered_orders("x", "e", 40);
    inputs.extend(numbered_orders("x", "e", 10));
    inputs.push(Input {
        key: Some("bad".into()),
        value: Some(b"nope".to_vec()),
    });
    produce(&b, INPUT, &inputs);
    let deadline = Instant::now() + TIMEOUT;
    while read_all(&b, CONFIRMED).len() < 40 || read_all(&b, DLQ).is_empty() {
        assert!(Instant::now() < deadline, "outputs never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    job.stop().unwrap();
    let n = confirmations(&b);
    assert_eq!(n.len(), 40);
    assert!(n.values().all(|c| *c == 1));
    assert_eq!(read_all(&b, DLQ).len(), 1);
    let changelog = read_all(&b, "inventory-dedup-changelog");
    assert_eq!(
        changelog.len(),
        40,
        "one entry per order (the expiry index is local)"
    );
    // Each changelog record names the input offset of its order's first
    // occurrence (its duplicates came later and wrote nothing).
    let mut first = BTreeMap::new();
    for m in read_all(&b, INPUT) {
        first
            .entry((m.partition(), key_of(&m)))
            .or_insert(m.offset());
    }
    // It tells that offset in its value (restore reads it there), so no
    // record carries a `weir.source.offset` header.
    for m in &changelog {
        let seen: weir_topology::dedup::SeenEntry =
            weir_state::typed::decode("", m.payload().unwrap()).unwrap();
        assert_eq!(
            Some(&seen.first_offset),
            first.get(&(m.partition(), key_of(m))),
            "{}",
            key_of(m)
        );
    }
    let outputs = read_all(&b, CONFIRMED)
        .into_iter()
        .chain(read_all(&b, DLQ))
        .collect::<Vec<_>>();
    assert!(outputs
        .iter()
        .chain(&changelog)
        .all(|m| header(m, "weir.source.offset").is_none()));
    if !stamped {
        for m in outputs.iter().chain(&changelog) {
            assert_eq!(header(m, "weir.run"), None, "unstamped by default");
            assert_eq!(header(m, "weir.txn"), None, "unstamped by default");
        }
        return;
    }
    let mut runs = BTreeSet::new();
    for m in outputs.iter().chain(&changelog) {
        runs.insert(header(m, "weir.run").expect("weir.run on every record"));
        header(m, "weir.txn")
            .expect("weir.txn on every record")
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(runs.len(), 1, "one run produced everything");
}

/// Exactly-once restore skips a changelog record written for an input
/// offset the group never committed (a killed instance's unfinished
/// transaction, on a broker that shows such records): the dedup store's
/// records tell that offset in their value (`SeenEntry::first_offset`),
/// others (tombstones, values of another shape, older writers) in a
/// `weir.source.offset` header, which wins where both are there.
#[test]
fn exactly_once_restore_skips_changes_whose_input_never_committed() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use weir_topology::dedup::SeenEntry;

    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    // The group committed its input up to offset 10 (exclusive).
    produce(&b, INPUT, &numbered_orders("in", "in", 10));
    let group: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "inventory")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(INPUT, 0, Offset::Offset(10))
        .unwrap();
    rdkafka::consumer::Consumer::commit(&group, &tpl, rdkafka::consumer::CommitMode::Sync).unwrap();
    drop(group);

    // Seen now: within the job's dedup retention (no expiry pass deletes them).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let seen = |offset: i64| {
        weir_state::typed::encode(
            "",
            &SeenEntry {
                first_seen_ms: now_ms,
                first_offset: offset,
            },
        )
        .unwrap()
    };
    /// Key, value (`None`: a tombstone), `weir.source.offset` header.
    type Change<'a> = (&'a str, Option<Vec<u8>>, Option<&'a str>);
    let log: Vec<Change> = vec![
        ("kept", Some(seen(3)), None),
        ("uncommitted", Some(seen(10)), None),
        ("header-wins", Some(seen(12)), Some("4")),
        ("header-skips", Some(seen(2)), Some("11")),
        ("other-shape", Some(b"x".to_vec()), Some("5")),
        ("other-shape-uncommitted", Some(b"y".to_vec()), Some("10")),
        ("older-writer", Some(b"z".to_vec()), None),
        // An uncommitted delete of a committed entry: the entry stays.
        ("kept", None, Some("10")),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .create()
        .unwrap();
    for (key, value, source) in &log {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to("inventory-dedup-changelog")
            .partition(0)
            .key(*key);
        if let Some(v) = value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(s) = source {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "weir.source.offset",
                value: Some(*s),
            }));
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(TIMEOUT).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = job_config(&b, dir.path());
    cfg.guarantee = weir_topology::Guarantee::ExactlyOnce;
    let job = Job::start(&cfg).unwrap();
    assert!(
        job.handle().wait_until_running(TIMEOUT),
        "job restores and runs"
    );
    job.stop().unwrap();
    let (offset, entries) = dedup_partition(dir.path(), 0);
    assert_eq!(
        offset,
        Some(log.len() as i64),
        "the whole changelog was read"
    );
    let keys: Vec<&str> = entries
        .keys()
        .map(|k| std::str::from_utf8(k).unwrap())
        .collect();
    assert_eq!(keys, ["header-wins", "kept", "older-writer", "other-shape"]);
    assert_eq!(entries[&b"kept"[..]], seen(3));
    assert!(
        read_all(&b, CONFIRMED).is_empty(),
        "nothing past the committed input was processed again"
    );
}

#[test]
fn an_expiry_index_rebuilt_by_restore_expires_orders_which_are_then_confirmed_again() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let dir = tempfile::tempdir().unwrap();
    // First run: no retention, so no time index at all; the changelog gets
    // the seen entry.
    let mut cfg = job_config(&b, dir.path());
    cfg.dedup_retention = None;
    let job = Job::start(&cfg).unwrap();
    produce(&b, INPUT, &[Input::json("ttl-1", &order("e-1", "ttl-1"))]);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    // Second run on a new machine with a 1.5 s retention: the store is
    // rebuilt from the changelog, and only an index derived during restore
    // can make the old entry expire.
    std::fs::remove_dir_all(dir.path()).unwrap();
    cfg.dedup_retention = Some(Duration::from_millis(1500));
    let job = Job::start(&cfg).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        use rdkafka::Message;
        let log = read_all(&b, "inventory-dedup-changelog");
        let tombstones: Vec<_> = log.iter().filter(|m| m.payload().is_none()).collect();
        if !tombstones.is_empty() {
            // One per expired order: the index is local, never logged.
            assert_eq!(log.len(), 2, "the entry and its tombstone");
            assert_eq!(tombstones[0].key(), Some(&b"ttl-1"[..]));
            break;
        }
        assert!(Instant::now() < deadline, "no tombstone in the changelog");
        std::thread::sleep(Duration::from_millis(100));
    }
    produce(&b, INPUT, &[Input::json("ttl-1", &order("e-2", "ttl-1"))]);
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    let confirmed: Vec<_> = read_all(&b, CONFIRMED).iter().map(json_of).collect();
    assert_eq!(confirmed.len(), 2, "an expired orderId is confirmed again");
    assert_eq!(confirmed[1]["causationId"], "e-2");
}
