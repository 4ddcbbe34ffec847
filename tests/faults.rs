//! Faults injected through the embedded broker's API, at-least-once: a
//! broker outage, errors on produce and on offset commits, added latency.
//! Nothing is lost and the job recovers by itself.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
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
