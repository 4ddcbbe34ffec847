//! Sample orders for `weir run --sample-orders`: publish them, then read
//! the output topics and show what became of each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir::inventory::samples::{samples, Sample};
use weir::inventory::InventoryTopics;

/// A sample and where it landed in the input topic.
pub struct Published {
    pub sample: Sample,
    pub partition: i32,
    pub offset: i64,
}

/// Publishes the samples, one at a time, in order.
pub async fn publish(brokers: &str, topic: &str) -> anyhow::Result<Vec<Published>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .context("creating the sample producer")?;
    let mut out = Vec::new();
    for sample in samples() {
        let mut rec = FutureRecord::<String, Vec<u8>>::to(topic).payload(&sample.value);
        if let Some(k) = &sample.key {
            rec = rec.key(k);
        }
        let delivery = producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .context("publishing a sample order")?;
        out.push(Published {
            sample,
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    Ok(out)
}

/// Reads OrderConfirmed and DeadLetterQueue until every expected outcome is
/// there (or `timeout`), then prints a table. Returns (confirmed, dead letters).
pub fn report(
    brokers: &str,
    topics: &InventoryTopics,
    published: &[Published],
    timeout: Duration,
) -> anyhow::Result<(usize, usize)> {
    let expect_confirmed = published
        .iter()
        .filter(|p| p.sample.expect == "confirmed")
        .count();
    let expect_dlq = published
        .iter()
        .filter(|p| p.sample.expect.starts_with("dead letter"))
        .count();
    let (confirmed_records, dead_records) =
        collect(brokers, topics, expect_confirmed, expect_dlq, timeout)?;
    // causationId (source eventId) → confirmed eventId; (partition, offset) → DLQ error.
    let confirmed: HashMap<String, String> = confirmed_records
        .iter()
        .map(|(_, v)| {
            (
                v["causationId"].as_str().unwrap_or_default().to_string(),
                v["eventId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let failed: HashMap<(i64, i64), String> = dead_records
        .iter()
        .map(|(_, v)| {
            let src = &v["source"];
            (
                (
                    src["partition"].as_i64().unwrap_or(-1),
                    src["offset"].as_i64().unwrap_or(-1),
                ),
                format!(
                    "{}: {}",
                    v["error"]["kind"].as_str().unwrap_or("?"),
                    v["error"]["message"].as_str().unwrap_or("?")
                ),
            )
        })
        .collect();
    println!();
    println!("Sample orders published to {}:", topics.input);
    println!("  {:<3} {:<8} {:<44} outcome", "#", "key", "expected");
    // A confirmation belongs to the first sample that carried its eventId;
    // a redelivery of the same event is the duplicate.
    let mut claimed = std::collections::HashSet::new();
    for (i, p) in published.iter().enumerate() {
        let event_id = serde_json::from_slice::<serde_json::Value>(&p.sample.value)
            .ok()
            .and_then(|v| v["eventId"].as_str().map(str::to_string));
        let outcome = if let Some(err) = failed.get(&(p.partition as i64, p.offset)) {
            format!("{} ({err})", topics.dead_letters)
        } else if let Some(id) = event_id
            .as_ref()
            .filter(|e| claimed.insert((*e).clone()))
            .and_then(|e| confirmed.get(e))
        {
            format!("{} (eventId {id})", topics.confirmed)
        } else {
            "no output: dropped as a duplicate".to_string()
        };
        println!(
            "  {:<3} {:<8} {:<44} {outcome}",
            i + 1,
            p.sample.key.as_deref().unwrap_or("-"),
            p.sample.expect
        );
    }
    println!(
        "{}: {} record(s), {}: {} record(s)",
        topics.confirmed,
        confirmed.len(),
        topics.dead_letters,
        failed.len()
    );
    Ok((confirmed.len(), failed.len()))
}

/// Publishes one raw record (for the demo's "legacy producer").
pub async fn publish_raw(
    brokers: &str,
    topic: &str,
    key: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .create()?;
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Records as (key, JSON value).
pub type Keyed = Vec<(String, serde_json::Value)>;

/// Reads the confirmed and dead-letter topics until `want_confirmed` and
/// `want_dead` records are there (or `timeout`): (key, value) of each.
pub fn collect(
    brokers: &str,
    topics: &InventoryTopics,
    want_confirmed: usize,
    want_dead: usize,
    timeout: Duration,
) -> anyhow::Result<(Keyed, Keyed)> {
    let consumer = output_consumer(brokers, topics)?;
    let (mut confirmed, mut dead) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + timeout;
    while (confirmed.len() < want_confirmed || dead.len() < want_dead) && Instant::now() < deadline
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let Some(v) = m
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            continue;
        };
        if m.topic() == topics.confirmed {
            confirmed.push((key, v));
        } else {
            dead.push((key, v));
        }
    }
    Ok((confirmed, dead))
}

/// A consumer assigned to every partition of the output topics, from the start.
fn output_consumer(brokers: &str, topics: &InventoryTopics) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-samples-report")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the report consumer")?;
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.confirmed, &topics.dead_letters] {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading metadata of {topic}"))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}
