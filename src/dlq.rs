//! Reading and replaying the dead-letter topic (`weir dlq`).
//!
//! Records are read as `OrderProcessingFailed` envelopes when they are ones;
//! any other dead letter (e.g. Kafka Streams' raw shape) is read from its
//! value and KIP-1034 headers. A replay publishes the exact original bytes,
//! key and headers back to the source topic with a `weir.replay.count`
//! header one higher than the record carried; a record that has already
//! been replayed `max_replays` times is refused (the loop guard), so a
//! record that always fails cannot circle forever.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

/// Header counting how many times a record was replayed from the dead-letter topic.
pub const REPLAY_COUNT_HEADER: &str = "weir.replay.count";

/// Errors of the dead-letter tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// A Kafka client call failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done.
        op: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic or partition does not exist.
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    /// No record at that offset.
    #[error("no dead letter at {topic}[{partition}]@{offset}")]
    NotFound {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

fn kafka(op: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> DlqError {
    let op = op.into();
    move |source| DlqError::Kafka { op, source }
}

/// One dead-letter record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    /// Partition in the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// When it was written (ms since the epoch).
    pub timestamp_ms: i64,
    /// Record key (the original key).
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The value parsed as an `OrderProcessingFailed` envelope, if it is one.
    pub envelope: Option<Value>,
}

/// What replay needs to republish a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Original {
    /// Source topic.
    pub topic: String,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value (`None`: it was a tombstone).
    pub value: Option<Vec<u8>>,
    /// Original headers.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl DeadLetterRecord {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The failure kind (`deserialization`, `validation`, `processing`).
    pub fn kind(&self) -> String {
        self.envelope
            .as_ref()
            .and_then(|e| e["error"]["kind"].as_str().map(str::to_string))
            .or_else(|| self.header("__streams.errors.exception"))
            .unwrap_or_else(|| "unknown".into())
    }

    /// What was wrong.
    pub fn message(&self) -> String {
        self.envelope
            .as_ref()
            .and_then(|e| e["error"]["message"].as_str().map(str::to_string))
            .or_else(|| self.header("__streams.errors.message"))
            .unwrap_or_default()
    }

    /// Where the original came from: `topic[partition]@offset`.
    pub fn source(&self) -> (String, i64, i64) {
        match &self.envelope {
            Some(e) => (
                e["source"]["topic"].as_str().unwrap_or("?").to_string(),
                e["source"]["partition"].as_i64().unwrap_or(-1),
                e["source"]["offset"].as_i64().unwrap_or(-1),
            ),
            None => (
                self.header("__streams.errors.topic")
                    .unwrap_or_else(|| "?".into()),
                self.header("__streams.errors.partition")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(-1),
                self.header("__streams.errors.offset")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(-1),
            ),
        }
    }

    /// The original record, or why it cannot be rebuilt exactly.
    pub fn original(&self) -> Result<Original, String> {
        let (topic, _, _) = self.source();
        if topic == "?" {
            return Err("the source topic is unknown".into());
        }
        let Some(e) = &self.envelope else {
            // A raw dead letter: the value is the original.
            let headers = self
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with("__streams.errors."))
                .cloned()
                .collect();
            return Ok(Original {
                topic,
                key: self.key.clone(),
                value: self.value.clone(),
                headers,
            });
        };
        if e["originalPayloadTruncated"] == Value::Bool(true) {
            return Err("the original was truncated to fit the dead-letter topic".into());
        }
        let value = match &e["originalPayload"] {
            Value::Null => None,
            Value::String(s) => Some(b64d(s).ok_or("originalPayload is not base64")?),
            _ => return Err("originalPayload is not a string".into()),
        };
        let headers = e["originalHeaders"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter_map(|h| {
                        Some((
                            h["key"].as_str()?.to_string(),
                            h["value"].as_str().and_then(b64d),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Original {
            topic,
            key: self.key.clone(),
            value,
            headers,
        })
    }

    /// How many times the original had been replayed when it failed.
    pub fn replay_count(&self) -> u32 {
        self.original()
            .ok()
            .and_then(|o| {
                o.headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k == REPLAY_COUNT_HEADER)
                    .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The record as one JSON object (for `--json`).
    pub fn to_json(&self) -> Value {
        let (topic, partition, offset) = self.source();
        serde_json::json!({
            "partition": self.partition,
            "offset": self.offset,
            "timestampMs": self.timestamp_ms,
            "key": self.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "kind": self.kind(),
            "message": self.message(),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "replayCount": self.replay_count(),
            "envelope": self.envelope,
        })
    }
}

fn consumer(brokers: &str) -> Result<BaseConsumer, DlqError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-dlq-tools")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka("create consumer"))
}

/// Reads dead letters from offset `from` (per partition) to the current
/// end, or on and on when `follow`, calling `f` for each until it returns
/// `false`.
pub fn read(
    brokers: &str,
    topic: &str,
    from: Offset,
    follow: bool,
    mut f: impl FnMut(DeadLetterRecord) -> bool,
) -> Result<(), DlqError> {
    let c = consumer(brokers)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka("read metadata"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .ok_or_else(|| DlqError::NoTopic(topic.into()))?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in t.partitions() {
        let (low, high) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .map_err(kafka("read watermarks"))?;
        let start = match from {
            Offset::Offset(o) => o.max(low),
            Offset::End => high,
            _ => low,
        };
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(start))
            .map_err(kafka("assign"))?;
        ends.insert(p.id(), (start, high));
    }
    c.assign(&tpl).map_err(kafka("assign"))?;
    let done = |ends: &BTreeMap<i32, (i64, i64)>| ends.values().all(|(pos, end)| pos >= end);
    while follow || !done(&ends) {
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(kafka("consume"))?;
        if let Some(e) = ends.get_mut(&m.partition()) {
            e.0 = m.offset() + 1;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let envelope = m
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .filter(|v| v["eventType"] == "OrderProcessingFailed");
        let rec = DeadLetterRecord {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            envelope,
        };
        if !f(rec) {
            break;
        }
    }
    Ok(())
}

/// Reads the record at `partition`/`offset`.
pub fn show(
    brokers: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<DeadLetterRecord, DlqError> {
    let mut found = None;
    read(brokers, topic, Offset::Offset(offset), false, |r| {
        if r.partition == partition && r.offset == offset {
            found = Some(r);
            return false;
        }
        true
    })?;
    found.ok_or(DlqError::NotFound {
        topic: topic.into(),
        partition,
        offset,
    })
}

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only this failure kind.
    pub kind: Option<String>,
    /// Only records written at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only records written before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Start at this offset of the dead-letter topic (default: its beginning).
    pub from_offset: Option<i64>,
    /// Report what would be replayed without publishing.
    pub dry_run: bool,
    /// Refuse records already replayed this many times.
    pub max_replays: u32,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub examined: usize,
    /// Published back (or, on a dry run, that would be).
    pub replayed: usize,
    /// Left out by `--kind`/`--since`/`--until`.
    pub filtered: usize,
    /// Refused by the loop guard.
    pub loop_guard: usize,
    /// Could not be rebuilt (truncated original, unknown source).
    pub unreplayable: usize,
    /// Replayed per failure kind.
    pub by_kind: BTreeMap<String, usize>,
    /// Replayed per source topic.
    pub by_topic: BTreeMap<String, usize>,
}

/// Replays dead letters to their source topics.
pub fn replay(
    brokers: &str,
    dlq_topic: &str,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, DlqError> {
    let mut picked = Vec::new();
    let mut sum = ReplaySummary::default();
    let from = opts
        .from_offset
        .map(Offset::Offset)
        .unwrap_or(Offset::Beginning);
    read(brokers, dlq_topic, from, false, |r| {
        sum.examined += 1;
        let kind_ok = opts.kind.as_deref().is_none_or(|k| r.kind() == k);
        let time_ok = opts.since_ms.is_none_or(|s| r.timestamp_ms >= s)
            && opts.until_ms.is_none_or(|u| r.timestamp_ms < u);
        if !kind_ok || !time_ok {
            sum.filtered += 1;
        } else if r.replay_count() >= opts.max_replays {
            tracing::warn!(
                offset = r.offset,
                count = r.replay_count(),
                "loop guard: already replayed {} times, not replaying",
                r.replay_count()
            );
            sum.loop_guard += 1;
        } else {
            match r.original() {
                Ok(o) => picked.push((r.kind(), r.replay_count(), o)),
                Err(why) => {
                    tracing::warn!(offset = r.offset, why, "cannot replay");
                    sum.unreplayable += 1;
                }
            }
        }
        true
    })?;
    if !opts.dry_run && !picked.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .create()
            .map_err(kafka("create producer"))?;
        rt.block_on(async {
            for (_, count, o) in &picked {
                let mut headers = OwnedHeaders::new();
                for (k, v) in o.headers.iter().filter(|(k, _)| k != REPLAY_COUNT_HEADER) {
                    headers = headers.insert(rdkafka::message::Header {
                        key: k,
                        value: v.as_deref(),
                    });
                }
                let next = (count + 1).to_string();
                headers = headers.insert(rdkafka::message::Header {
                    key: REPLAY_COUNT_HEADER,
                    value: Some(next.as_bytes()),
                });
                let mut rec: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&o.topic).headers(headers);
                if let Some(k) = &o.key {
                    rec = rec.key(k.as_slice());
                }
                if let Some(v) = &o.value {
                    rec = rec.payload(v.as_slice());
                }
                producer
                    .send(rec, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| DlqError::Kafka {
                        op: format!("publish to {}", o.topic),
                        source: e,
                    })?;
            }
            Ok::<(), DlqError>(())
        })?;
    }
    for (kind, _, o) in &picked {
        sum.replayed += 1;
        *sum.by_kind.entry(kind.clone()).or_default() += 1;
        *sum.by_topic.entry(o.topic.clone()).or_default() += 1;
    }
    Ok(sum)
}
