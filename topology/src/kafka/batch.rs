//! Reading a consumer's records many at a time.
//!
//! Why: rust-rdkafka's `BaseConsumer::poll` returns one record per call,
//! each wrapped in a librdkafka event that is allocated, reference-counted
//! and freed, with a queue lock and two clock reads per call. In a restore,
//! which does little else per record, that was about half of the reading
//! thread (perf, 1,000,000 changelog records on the embedded broker).
//! librdkafka's `rd_kafka_consume_batch_queue` takes up to a batch of
//! records from the consumer's queue under one lock.
//!
//! Only for consumers that `assign` partitions and never commit: the batch
//! call serves no rebalance or commit events (they would reach it as
//! records librdkafka cannot turn into messages). The restore consumer and
//! the benchmark's raw read are such consumers.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Takes records from an assigning consumer's queue in batches.
pub struct BatchReader<'c> {
    queue: *mut rd::rd_kafka_queue_t,
    slots: Vec<*mut rd::rd_kafka_message_t>,
    /// The queue belongs to this consumer's client: it must outlive us.
    _consumer: PhantomData<&'c ()>,
}

impl<'c> BatchReader<'c> {
    /// A reader of up to `batch` records per call, or `None` when the
    /// consumer has no consumer queue (no `group.id`).
    pub fn new<C: ConsumerContext>(consumer: &'c BaseConsumer<C>, batch: usize) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives, and
        // so is the queue handle (refcounted, destroyed in `Drop`).
        let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        (!queue.is_null()).then(|| Self {
            queue,
            slots: vec![std::ptr::null_mut(); batch.max(1)],
            _consumer: PhantomData,
        })
    }

    /// Waits up to `timeout` for records and hands each to `f`, in the
    /// order librdkafka delivers them; an error librdkafka reports in
    /// place of a record goes to `f` as `Err`, with the partition it is
    /// about (-1: none). Returns how many it handed.
    ///
    /// Careful: librdkafka moves a partition's application position (what
    /// `Consumer::position` reports) past an error's offset as if a record
    /// had been read there; the record itself comes later, when the fetch
    /// is retried. A reader that trusts positions must not trust them for a
    /// partition that had an error (restore seeks it back instead).
    pub fn read(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Result<Record<'_>, (i32, KafkaError)>),
    ) -> usize {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `slots` has room for `slots.len()` pointers; librdkafka
        // fills at most that many and returns how many (or -1).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue,
                ms,
                self.slots.as_mut_ptr(),
                self.slots.len(),
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        // Destroys every message even if `f` panics.
        let taken = Taken(&self.slots[..n]);
        for &m in taken.0 {
            // SAFETY: librdkafka returned `n` valid message pointers; each
            // is destroyed only when `taken` drops, after `f` saw it.
            let msg = unsafe { &*m };
            if msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                f(Err((
                    msg.partition,
                    KafkaError::MessageConsumption(RDKafkaErrorCode::from(msg.err)),
                )));
            } else {
                f(Ok(Record { msg }));
            }
        }
        n
    }
}

struct Taken<'a>(&'a [*mut rd::rd_kafka_message_t]);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        for &m in self.0 {
            // SAFETY: each pointer came from `rd_kafka_consume_batch_queue`
            // and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
    }
}

impl Drop for BatchReader<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_queue_get_consumer`.
        unsafe { rd::rd_kafka_queue_destroy(self.queue) };
    }
}

/// One record of a batch, valid while [`BatchReader::read`]'s callback runs.
pub struct Record<'m> {
    msg: &'m rd::rd_kafka_message_t,
}

impl Record<'_> {
    /// The record's partition.
    pub fn partition(&self) -> i32 {
        self.msg.partition
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.msg.offset
    }

    /// The record's topic.
    pub fn topic(&self) -> &str {
        // SAFETY: a consumed message's topic handle lives as long as the
        // message; its name is a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.msg.rkt)) };
        name.to_str().unwrap_or("")
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        bytes(self.msg.key.cast(), self.msg.key_len)
    }

    /// The value; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        bytes(self.msg.payload.cast(), self.msg.len)
    }

    /// The value of the last header named `name`, if any (a null value
    /// reads as empty).
    pub fn header(&self, name: &CStr) -> Option<&[u8]> {
        let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
        let ptr = std::ptr::from_ref(self.msg).cast_mut();
        // SAFETY: the message is valid; librdkafka owns the parsed header
        // list and the value it points into, both freed with the message.
        unsafe {
            if rd::rd_kafka_message_headers(ptr, &mut headers)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return None;
            }
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size = 0usize;
            if rd::rd_kafka_header_get_last(headers, name.as_ptr(), &mut value, &mut size)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return None;
            }
            Some(bytes(value.cast(), size).unwrap_or_default())
        }
    }
}

fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka gives a pointer to `len` bytes that live as long
    // as the message, or null.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::*;
    use crate::kafka::testing::cluster_with;

    type Seen = (
        String,
        i32,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
    );

    #[test]
    fn reads_every_record_with_its_coordinates_key_value_and_headers() {
        let (_cluster, brokers, producer) = cluster_with(&[("a", 2), ("b", 1)]);
        let send =
            |topic: &str, p: i32, key: Option<&str>, value: Option<&str>, h: OwnedHeaders| {
                let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic).partition(p).headers(h);
                if let Some(k) = key {
                    r = r.key(k);
                }
                if let Some(v) = value {
                    r = r.payload(v);
                }
                producer.send(r).map_err(|(e, _)| e).unwrap();
            };
        let header = |v: Option<&str>| {
            OwnedHeaders::new()
                .insert(Header {
                    key: "h",
                    value: Some("first"),
                })
                .insert(Header { key: "h", value: v })
        };
        for i in 0..500 {
            send(
                "a",
                i % 2,
                Some(&format!("k{i}")),
                Some(&format!("v{i}")),
                header(Some("last")),
            );
        }
        send("a", 0, Some("gone"), None, header(None)); // tombstone, null header
        send("b", 0, None, Some("no key"), OwnedHeaders::new());
        producer.flush(Duration::from_secs(10)).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "batch-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in [("a", 0), ("a", 1), ("b", 0)] {
            tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut reader = BatchReader::new(&consumer, 64).unwrap();
        let mut seen: Vec<Seen> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 502 && std::time::Instant::now() < deadline {
            let n = reader.read(Duration::from_millis(100), |m| {
                let m = m.unwrap();
                seen.push((
                    m.topic().to_string(),
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    m.header(c"h").map(<[u8]>::to_vec),
                ));
            });
            assert!(n <= 64, "at most a batch per call");
        }
        assert_eq!(seen.len(), 502);
        // Per partition, offsets in order from 0.
        for (t, p) in [("a", 0), ("a", 1), ("b", 0)] {
            let offsets: Vec<i64> = seen
                .iter()
                .filter(|s| s.0 == t && s.1 == p)
                .map(|s| s.2)
                .collect();
            assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
        }
        let first = seen
            .iter()
            .find(|s| s.0 == "a" && s.1 == 1 && s.2 == 0)
            .unwrap();
        assert_eq!(first.3.as_deref(), Some(&b"k1"[..]));
        assert_eq!(first.4.as_deref(), Some(&b"v1"[..]));
        assert_eq!(
            first.5.as_deref(),
            Some(&b"last"[..]),
            "the last header of the name"
        );
        let tombstone = seen
            .iter()
            .find(|s| s.3.as_deref() == Some(b"gone"))
            .unwrap();
        assert_eq!(tombstone.4, None, "a tombstone has no value");
        assert_eq!(
            tombstone.5.as_deref(),
            Some(&b""[..]),
            "a null header reads as empty"
        );
        let b = seen.iter().find(|s| s.0 == "b").unwrap();
        assert_eq!(
            (b.3.as_deref(), b.4.as_deref()),
            (None, Some(&b"no key"[..]))
        );
        assert_eq!(b.5, None, "no such header");
        // Nothing more: a read waits out its timeout and hands nothing.
        assert_eq!(
            reader.read(Duration::from_millis(50), |_| panic!("no record")),
            0
        );
    }
}
