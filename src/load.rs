//! The load generator behind `weir load`: a deterministic stream of orders
//! with redeliveries, resends and poison records, and a manifest of what a
//! correct job must produce from it.
//!
//! The same `--seed` always gives the same records in the same order, so a
//! test or a benchmark can compare outputs exactly: `confirmed` lists every
//! orderId that must be confirmed once, `poison` every record that must be
//! dead-lettered, with where it landed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Unique valid orders.
    pub orders: usize,
    /// Redeliveries (same bytes again) per unique order.
    pub duplicate_ratio: f64,
    /// Resends (same orderId, new eventId) per unique order.
    pub resend_ratio: f64,
    /// Poison records per unique order.
    pub poison_ratio: f64,
    /// Records per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// Seed of the generator.
    pub seed: u64,
}

/// Why a poison record is poison, and the failure class the job must report.
const POISON: &[(&str, &str)] = &[
    ("not-json", "deserialization"),
    ("empty", "deserialization"),
    ("non-utf8", "deserialization"),
    ("json-array", "deserialization"),
    ("null-value", "deserialization"),
    ("quantity-zero", "validation"),
    ("key-mismatch", "validation"),
    ("no-customer", "validation"),
    ("total-overflow", "processing"),
];

/// One record of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Record key.
    pub key: String,
    /// Record value (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// What it is: `order`, `redelivery`, `resend` or `poison:<why>`.
    pub class: String,
}

/// A poison record and where it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonRecord {
    /// Record key.
    pub key: String,
    /// Why it is poison (`not-json`, `quantity-zero`, …).
    pub reason: String,
    /// The failure kind the job must report.
    pub kind: String,
    /// Input partition.
    pub partition: i32,
    /// Input offset; -1 when the broker acknowledged the record without
    /// saying where: a retry of a batch the broker had already stored
    /// (after a broker crash) is answered with DUPLICATE_SEQUENCE_NUMBER,
    /// which librdkafka reports as delivered at an unknown offset.
    pub offset: i64,
}

/// What was sent and what must come out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Topic written.
    pub topic: String,
    /// Generator seed.
    pub seed: u64,
    /// Records sent.
    pub sent: usize,
    /// Unique valid orders (each must be confirmed exactly once).
    pub unique_orders: usize,
    /// Redeliveries sent.
    pub redeliveries: usize,
    /// Resends sent.
    pub resends: usize,
    /// Seconds spent sending.
    pub elapsed_seconds: f64,
    /// orderIds that must be confirmed, sorted.
    pub confirmed: Vec<String>,
    /// Records that must be dead-lettered.
    pub poison: Vec<PoisonRecord>,
}

/// SplitMix64: tiny, fast, and the same sequence on every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn order_event(rng: &mut Rng, event_id: &str, order_id: &str) -> serde_json::Value {
    let items: Vec<_> = (0..1 + rng.below(3))
        .map(|_| {
            json!({
                "productId": format!("p-{:05}", rng.below(20_000)),
                "quantity": 1 + rng.below(5),
                "price": (rng.below(100_000) as f64) / 100.0,
            })
        })
        .collect();
    json!({
        "eventId": event_id,
        "eventType": "OrderReceived",
        "version": 1,
        "timestamp": "2026-11-22T12:00:00.000Z",
        "correlationId": format!("load-{order_id}"),
        "data": {
            "orderId": order_id,
            "customerId": format!("c-{:06}", rng.below(100_000)),
            "items": items,
            "currency": "EUR",
        }
    })
}

fn poison(rng: &mut Rng, i: usize, reason: &str) -> Planned {
    let key = format!("poison-{i}");
    let good = |rng: &mut Rng, id: &str| order_event(rng, &format!("pe-{i}"), id);
    let value: Option<Vec<u8>> = match reason {
        "not-json" => Some(b"<order id=1/>".to_vec()),
        "empty" => Some(Vec::new()),
        "non-utf8" => Some(vec![0xff, 0xfe, 0x7b, 0x00]),
        "json-array" => Some(b"[{\"orderId\":\"x\"}]".to_vec()),
        "null-value" => None,
        "quantity-zero" => {
            let mut e = good(rng, &key);
            e["data"]["items"][0]["quantity"] = json!(0);
            Some(serde_json::to_vec(&e).unwrap())
        }
        "key-mismatch" => Some(serde_json::to_vec(&good(rng, &format!("{key}-other"))).unwrap()),
        "no-customer" => {
            let mut e = good(rng, &key);
            e["data"].as_object_mut().unwrap().remove("customerId");
            Some(serde_json::to_vec(&e).unwrap())
        }
        _ => {
            let mut e = good(rng, &key);
            e["data"]["items"] = json!([{"productId": "p", "quantity": 10, "price": 1.7e308}]);
            Some(serde_json::to_vec(&e).unwrap())
        }
    };
    Planned {
        key,
        value,
        class: format!("poison:{reason}"),
    }
}

/// The records to send, in order. Duplicates always follow their original
/// (same key, so same partition, so the original is the one confirmed).
pub fn plan(cfg: &LoadConfig) -> Vec<Planned> {
    let mut rng = Rng(cfg.seed);
    let n = cfg.orders;
    let count = |r: f64| (n as f64 * r).round() as usize;
    // (sort position, record); originals at i, the rest spread after them.
    let mut keyed: Vec<(f64, Planned)> =
        Vec::with_capacity(n + count(cfg.duplicate_ratio + cfg.resend_ratio + cfg.poison_ratio));
    let mut originals = Vec::with_capacity(n);
    for i in 0..n {
        let order_id = format!("o-{}-{i}", cfg.seed);
        let e = order_event(&mut rng, &format!("e-{}-{i}", cfg.seed), &order_id);
        let value = serde_json::to_vec(&e).unwrap();
        originals.push((order_id.clone(), value.clone()));
        keyed.push((
            i as f64,
            Planned {
                key: order_id,
                value: Some(value),
                class: "order".into(),
            },
        ));
    }
    let spread = (n as f64 / 10.0).max(2.0);
    for _ in 0..count(cfg.duplicate_ratio) {
        let j = rng.below(n as u64) as usize;
        let (k, v) = originals[j].clone();
        keyed.push((
            j as f64 + 0.5 + rng.unit() * spread,
            Planned {
                key: k,
                value: Some(v),
                class: "redelivery".into(),
            },
        ));
    }
    for r in 0..count(cfg.resend_ratio) {
        let j = rng.below(n as u64) as usize;
        let order_id = originals[j].0.clone();
        let e = order_event(&mut rng, &format!("resend-{}-{r}", cfg.seed), &order_id);
        keyed.push((
            j as f64 + 0.5 + rng.unit() * spread,
            Planned {
                key: order_id,
                value: Some(serde_json::to_vec(&e).unwrap()),
                class: "resend".into(),
            },
        ));
    }
    for i in 0..count(cfg.poison_ratio) {
        let (reason, _) = POISON[rng.below(POISON.len() as u64) as usize];
        keyed.push((rng.unit() * n as f64, poison(&mut rng, i, reason)));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The producer failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Some records were not delivered.
    #[error("{0} record(s) were not delivered (first error: {1})")]
    Undelivered(usize, String),
}

#[derive(Default)]
struct Deliveries {
    /// (partition, offset) per record index; `None` until delivered.
    coords: Mutex<Vec<Option<(i32, i64)>>>,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, index: usize) {
        match r {
            Ok(m) => self.coords.lock().unwrap()[index] = Some((m.partition(), m.offset())),
            Err((e, _)) => {
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Sends the plan to `topic` and returns the manifest. `progress` is called
/// with the number of records handed to the producer so far.
pub fn run(
    cfg: &LoadConfig,
    brokers: &str,
    topic: &str,
    mut progress: impl FnMut(u64),
) -> Result<Manifest, LoadError> {
    let records = plan(cfg);
    let ctx = Deliveries {
        coords: Mutex::new(vec![None; records.len()]),
        ..Default::default()
    };
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .create_with_context(ctx)?;
    let started = Instant::now();
    for (i, r) in records.iter().enumerate() {
        if cfg.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / cfg.rate);
            let now = Instant::now();
            if due > now {
                producer.poll(due - now);
            }
        }
        let mut rec: BaseRecord<'_, str, [u8], usize> =
            BaseRecord::with_opaque_to(topic, i).key(r.key.as_str());
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_slice());
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(5));
                    rec = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
        if i % 1000 == 0 {
            progress(i as u64);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    progress(records.len() as u64);
    let elapsed = started.elapsed().as_secs_f64();
    let ctx = producer.context();
    let coords = ctx.coords.lock().unwrap();
    let missing = coords.iter().filter(|c| c.is_none()).count();
    if missing > 0 {
        let e = ctx.first_error.lock().unwrap().clone().unwrap_or_default();
        return Err(LoadError::Undelivered(missing, e));
    }
    let mut confirmed: Vec<String> = records
        .iter()
        .filter(|r| r.class == "order")
        .map(|r| r.key.clone())
        .collect();
    confirmed.sort();
    let poison = records
        .iter()
        .zip(coords.iter())
        .filter_map(|(r, c)| {
            let reason = r.class.strip_prefix("poison:")?;
            let kind = POISON.iter().find(|(p, _)| *p == reason)?.1;
            let (partition, offset) = (*c)?;
            Some(PoisonRecord {
                key: r.key.clone(),
                reason: reason.into(),
                kind: kind.into(),
                partition,
                offset,
            })
        })
        .collect();
    Ok(Manifest {
        topic: topic.to_string(),
        seed: cfg.seed,
        sent: records.len(),
        unique_orders: confirmed.len(),
        redeliveries: records.iter().filter(|r| r.class == "redelivery").count(),
        resends: records.iter().filter(|r| r.class == "resend").count(),
        elapsed_seconds: elapsed,
        confirmed,
        poison,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> LoadConfig {
        LoadConfig {
            orders: 1000,
            duplicate_ratio: 0.15,
            resend_ratio: 0.1,
            poison_ratio: 0.05,
            rate: 0.0,
            seed,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_records_and_another_seed_does_not() {
        assert_eq!(plan(&cfg(7)), plan(&cfg(7)));
        assert_ne!(plan(&cfg(7)), plan(&cfg(8)));
    }

    #[test]
    fn counts_follow_the_ratios_and_duplicates_follow_their_original() {
        let p = plan(&cfg(1));
        let n = |c: &str| p.iter().filter(|r| r.class.starts_with(c)).count();
        assert_eq!(
            (n("order"), n("redelivery"), n("resend"), n("poison")),
            (1000, 150, 100, 50)
        );
        let mut seen = std::collections::HashSet::new();
        for r in &p {
            match r.class.as_str() {
                "order" => assert!(seen.insert(r.key.clone())),
                "redelivery" | "resend" => {
                    assert!(seen.contains(&r.key), "{} before its original", r.key)
                }
                _ => {}
            }
        }
        // Realistic sizes: about 300 bytes an order.
        let avg = p
            .iter()
            .filter(|r| r.class == "order")
            .map(|r| r.value.as_ref().unwrap().len())
            .sum::<usize>()
            / 1000;
        assert!((200..450).contains(&avg), "{avg} bytes");
    }
}
