//! Fixtures for integration tests on the embedded broker: a cluster with
//! the job's topics, producing test orders, and reading topics exactly once
//! the job has committed everything.
#![allow(dead_code)]

pub mod process;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use weir::broker::{EmbeddedBroker, TopicSpec};
use weir::job::JobConfig;

pub const INPUT: &str = "OrderReceived";
pub const CONFIRMED: &str = "OrderConfirmed";
pub const DLQ: &str = "DeadLetterQueue";
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// An embedded cluster with the inventory topics (changelog included).
pub fn cluster(partitions: i32) -> EmbeddedBroker {
    let topics = [
        (INPUT, partitions),
        (CONFIRMED, partitions),
        (DLQ, 1),
        ("inventory-dedup-changelog", partitions),
    ]
    .map(|(n, p)| TopicSpec {
        name: n.into(),
        partitions: p,
    });
    EmbeddedBroker::start(1, &topics).expect("embedded broker starts")
}

/// Job settings for tests: quick commits and quick failure detection.
pub fn job_config(brokers: &str, state_dir: &Path) -> JobConfig {
    let mut cfg = JobConfig::new(brokers);
    cfg.state_dir = state_dir.to_path_buf();
    cfg.commit_interval = Duration::from_millis(100);
    // The embedded broker cannot store transactional offset commits.
    cfg.guarantee = weir_topology::Guarantee::AtLeastOnce;
    cfg.kafka = vec![
        ("consumer.session.timeout.ms".into(), "6000".into()),
        ("consumer.heartbeat.interval.ms".into(), "500".into()),
    ];
    cfg
}

/// A valid OrderReceived event.
pub fn order(event_id: &str, order_id: &str) -> Value {
    json!({
        "eventId": event_id,
        "eventType": "OrderReceived",
        "version": 1,
        "timestamp": "2026-11-22T10:00:00.000Z",
        "data": {
            "orderId": order_id,
            "customerId": "c-1",
            "items": [{"productId": "p-1", "quantity": 1, "price": 2.5}]
        }
    })
}

/// `n` valid orders keyed `<prefix>-<i>`, with eventIds `<event_prefix>-<i>`.
pub fn numbered_orders(prefix: &str, event_prefix: &str, n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            Input::json(&id, &order(&format!("{event_prefix}-{i}"), &id))
        })
        .collect()
}

/// `n` valid orders keyed `<prefix>-<i>` (eventIds `e-<i>`), each
/// delivered twice in a row: the second is a duplicate to drop.
pub fn orders_each_twice(prefix: &str, n: usize) -> Vec<Input> {
    numbered_orders(prefix, "e", n)
        .into_iter()
        .flat_map(|o| [o.clone(), o])
        .collect()
}

/// Polls `cond` until it holds; fails with `what` after [`TIMEOUT`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Input {
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
}

impl Input {
    pub fn json(key: &str, v: &Value) -> Self {
        Self {
            key: Some(key.into()),
            value: Some(serde_json::to_vec(v).unwrap()),
        }
    }
}

/// Produces records (idempotent, keyed like any Java client) and waits for delivery.
pub fn produce(brokers: &str, topic: &str, records: &[Input]) {
    produce_at(brokers, topic, None, records)
}

/// [`produce`], every record to `partition` when one is given.
pub fn produce_at(brokers: &str, topic: &str, partition: Option<i32>, records: &[Input]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for r in records {
        let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(TIMEOUT).expect("test records delivered");
}

fn partitions(c: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = c.fetch_metadata(Some(topic), TIMEOUT).unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

fn consumer(brokers: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c.create().unwrap()
}

/// Waits until `group` has committed every input partition to its high
/// watermark: by the commit protocol, every output is then delivered.
pub fn wait_committed(brokers: &str, group: &str) {
    wait_committed_for(brokers, group, TIMEOUT)
}

/// [`wait_committed`] with a longer patience (big backlogs, slow brokers).
pub fn wait_committed_for(brokers: &str, group: &str, timeout: Duration) {
    let c = consumer(brokers, &[("group.id", group)]);
    let parts = partitions(&c, INPUT);
    let deadline = Instant::now() + timeout;
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(INPUT, *p);
        }
        let committed = c.committed_offsets(tpl, TIMEOUT).unwrap();
        let done = parts.iter().all(|p| {
            let (_, high) = c.fetch_watermarks(INPUT, *p, TIMEOUT).unwrap();
            let off = committed.find_partition(INPUT, *p).map(|e| e.offset());
            high == 0 || off == Some(Offset::Offset(high))
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not commit all input within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads every record of `topic` up to its current high watermarks.
pub fn read_all(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let c = consumer(brokers, &[("group.id", "test-reader")]);
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in partitions(&c, topic) {
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .unwrap();
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while ends
        .iter()
        .any(|(p, e)| pos.get(p).copied().unwrap_or(0) < *e)
    {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                pos.insert(m.partition(), m.offset() + 1);
                out.push(m.detach());
            }
            _ => {
                // Transactional topics end with commit markers, never
                // delivered: the consumer's position moves past them.
                if let Ok(p) = c.position() {
                    for e in p.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            let cur = pos.entry(e.partition()).or_insert(0);
                            *cur = (*cur).max(o);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The value of a message as JSON.
pub fn json_of(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().expect("a value")).expect("JSON")
}

/// The key as UTF-8.
pub fn key_of(m: &OwnedMessage) -> String {
    String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap()
}

/// The last value of a header, as UTF-8.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter()
        .filter(|x| x.key == name)
        .last()
        .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Asserts that `m` carries none of Weir's provenance headers (the
/// at-least-once default).
pub fn assert_unstamped(m: &OwnedMessage) {
    for name in ["weir.run", "weir.txn", "weir.source.offset"] {
        assert_eq!(header(m, name), None, "{name} under at-least-once");
    }
}

/// orderId → number of confirmations.
pub fn confirmations(brokers: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for m in read_all(brokers, CONFIRMED) {
        *n.entry(key_of(&m)).or_insert(0) += 1;
    }
    n
}

/// A stopped job's dedup store partition `p` under `state_dir`: its
/// recorded changelog offset and every data entry, by key.
pub fn dedup_partition(state_dir: &Path, p: i32) -> (Option<i64>, BTreeMap<Vec<u8>, Vec<u8>>) {
    let (offset, mut entries) = dedup_partition_all(state_dir, p);
    // The operator's own keys (time index, rebuild mark) are not data.
    entries.retain(|k, _| !k.starts_with(weir_topology::dedup::RESERVED_PREFIX));
    (offset, entries)
}

/// [`dedup_partition`] with the operator's own keys (time index, marks).
pub fn dedup_partition_all(state_dir: &Path, p: i32) -> (Option<i64>, BTreeMap<Vec<u8>, Vec<u8>>) {
    use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore};
    let path = state_dir.join(format!("inventory/dedup/{p}"));
    let store = RocksDbStore::open("dedup", &path, RocksDbOptions::default()).unwrap();
    let mut entries = BTreeMap::new();
    store
        .for_each(&mut |k, v| {
            entries.insert(k.to_vec(), v.to_vec());
            true
        })
        .unwrap();
    (store.changelog_offset(), entries)
}
