//! The producer side of the runtime: sending output and changelog records
//! without waiting per record, and learning from delivery reports what was
//! delivered (errors, and the changelog offsets restore will resume from).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::record::Headers;
use crate::{metrics, TopologyError};

/// Delivery opaque of a sink record (its end-to-end latency is measured).
pub(crate) const KIND_OUTPUT: usize = 0;
/// Delivery opaque of a changelog record.
pub(crate) const KIND_CHANGELOG: usize = 1;
/// Delivery opaque of a dead-letter record.
pub(crate) const KIND_DEAD_LETTER: usize = 2;

/// Maps looked up on every delivery report (by topic): foldhash, not SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct DeliveryState {
    /// The first delivery error since the last check.
    first_error: Option<String>,
    /// Highest delivered offset per changelog topic and partition.
    changelog_offsets: FastMap<String, FastMap<i32, i64>>,
    /// Cached counters per topic, so a delivery costs no label allocation.
    produced: FastMap<String, ::metrics::Counter>,
    /// Cached end-to-end latency histograms per sink topic.
    latency: FastMap<String, ::metrics::Histogram>,
}

/// Producer context that tracks deliveries.
#[derive(Default)]
pub(crate) struct DeliveryTracker {
    state: Mutex<DeliveryState>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, kind: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(m) => {
                let topic = m.topic();
                if kind == KIND_CHANGELOG {
                    let slot = match st.changelog_offsets.get_mut(topic) {
                        Some(parts) => parts.entry(m.partition()).or_insert(-1),
                        None => st
                            .changelog_offsets
                            .entry(topic.to_string())
                            .or_default()
                            .entry(m.partition())
                            .or_insert(-1),
                    };
                    *slot = (*slot).max(m.offset());
                }
                if kind == KIND_OUTPUT {
                    if let Some(ts) = m.timestamp().to_millis() {
                        let secs = (crate::task::now_ms() - ts).max(0) as f64 / 1000.0;
                        match st.latency.get(topic) {
                            Some(h) => h.record(secs),
                            None => {
                                let h = ::metrics::histogram!(metrics::END_TO_END_LATENCY, metrics::LABEL_TOPIC => topic.to_string());
                                h.record(secs);
                                st.latency.insert(topic.to_string(), h);
                            }
                        }
                    }
                }
                match st.produced.get(topic) {
                    Some(c) => c.increment(1),
                    None => {
                        let c = ::metrics::counter!(metrics::RECORDS_PRODUCED, metrics::LABEL_TOPIC => topic.to_string());
                        c.increment(1);
                        st.produced.insert(topic.to_string(), c);
                    }
                }
            }
            // Records purged by an aborted transaction belong to an
            // interval that is reprocessed: not a failed delivery (counted
            // as one, the next commit's flush failed too, and aborted
            // again). Only `abort_transaction` purges while Weir runs (no
            // purge without transactions, until the producer is dropped).
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => {}
            Err((e, m)) => {
                if st.first_error.is_none() {
                    st.first_error = Some(format!(
                        "delivery to {}[{}] failed: {e}",
                        m.topic(),
                        m.partition()
                    ));
                }
            }
        }
    }
}

impl DeliveryTracker {
    /// Takes the first delivery error since the last call.
    pub(crate) fn take_error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_error
            .take()
    }

    /// The next offset after the highest delivered record of a changelog partition.
    pub(crate) fn changelog_end(&self, topic: &str, partition: i32) -> Option<i64> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.changelog_offsets
            .get(topic)
            .and_then(|p| p.get(&partition))
            .map(|o| o + 1)
    }
}

pub(crate) type WeirProducer = ThreadedProducer<DeliveryTracker>;

/// Hands one record to the producer, waiting (not failing) while its queue is full.
///
/// `extra` headers follow the record's own `headers` (the run's provenance,
/// a changelog record's source offset). They go straight into librdkafka's
/// header list: building a [`Headers`] first cost two allocations per
/// header, ~7 per changelog record (perf, at-least-once stream thread).
#[allow(clippy::too_many_arguments)]
pub(crate) fn send(
    producer: &WeirProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &Headers,
    extra: &[(&str, &[u8])],
    timestamp: Option<i64>,
    kind: usize,
) -> Result<(), TopologyError> {
    let mut rd_headers = (headers.len() + extra.len() > 0).then(|| {
        let mut h = OwnedHeaders::new_with_capacity(headers.len() + extra.len());
        for (name, value) in headers.iter() {
            h = h.insert(Header { key: name, value });
        }
        for (name, value) in extra {
            h = h.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        h
    });
    loop {
        let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, kind);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        if let Some(ts) = timestamp {
            rec = rec.timestamp(ts);
        }
        if let Some(h) = rd_headers.take() {
            rec = rec.headers(h);
        }
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                rd_headers = rec.headers;
                // Back-pressure: the background thread drains the queue.
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => {
                return Err(TopologyError::Kafka {
                    op: format!("produce to {topic}"),
                    source: e,
                })
            }
        }
    }
}

/// Waits until everything handed to the producer is delivered, then reports
/// the first delivery error, if any.
pub(crate) fn flush(producer: &WeirProducer, timeout: Duration) -> Result<(), TopologyError> {
    // Not `Producer::flush`: it waits in slices of `poll(100 ms)`, and with
    // a `ThreadedProducer` the polling thread takes every event, so each
    // slice runs out — any flush with a record in flight took ≥ 100 ms, in
    // 100 ms steps (measured: two stalls per at-least-once commit; under
    // exactly-once, through `commit_transaction`, 100 ms of every 100 ms
    // interval). librdkafka's own flush waits for its count of undelivered
    // messages to reach zero and wakes when it does; a message leaves that
    // count when it is destroyed, after its delivery report was handled, so
    // the tracker has seen every report when this returns (the changelog
    // offsets of step 5 depend on it; tests/crash.rs's clean-restart test
    // fails if they lag).
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: the pointer is the live client handle the producer owns for
    // the whole call; rd_kafka_flush is thread-safe.
    let err = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), ms) };
    if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(TopologyError::Kafka {
            op: "flush producer".into(),
            source: KafkaError::Flush(err.into()),
        });
    }
    match producer.context().take_error() {
        Some(e) => Err(TopologyError::Commit(e)),
        None => Ok(()),
    }
}
