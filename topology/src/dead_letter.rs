//! The dead-letter route: every per-record failure class ends here, with the
//! exact original bytes and where they came from, instead of stopping the job
//! (Arroyo #1103: a 27 h outage from one bad byte) or vanishing.
//!
//! A [`DeadLetterHandler`] shapes the record's key and value; the runtime then
//! adds the original headers and Kafka Streams' KIP-1034 error headers, so
//! tooling written for Kafka Streams reads ours.

use crate::record::{Headers, SourceRecord};
use crate::FailureKind;

/// KIP-1034 header: the class of the failure.
pub const HEADER_EXCEPTION: &str = "__streams.errors.exception";
/// KIP-1034 header: the failure's message.
pub const HEADER_MESSAGE: &str = "__streams.errors.message";
/// KIP-1034 header: the input topic.
pub const HEADER_TOPIC: &str = "__streams.errors.topic";
/// KIP-1034 header: the input partition.
pub const HEADER_PARTITION: &str = "__streams.errors.partition";
/// KIP-1034 header: the input offset.
pub const HEADER_OFFSET: &str = "__streams.errors.offset";

/// Everything known about one failed record.
#[derive(Debug)]
pub struct Failure<'a> {
    /// The class of failure.
    pub kind: FailureKind,
    /// What is wrong.
    pub message: &'a str,
    /// The node that failed.
    pub processor: &'a str,
    /// The input record, bytes untouched.
    pub source: &'a SourceRecord<'a>,
    /// Wall-clock time of the failure (ms since the epoch).
    pub failed_at_ms: i64,
}

/// The key, value and extra headers of a dead-letter record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetter {
    /// Key of the dead-letter record.
    pub key: Option<Vec<u8>>,
    /// Value of the dead-letter record.
    pub value: Option<Vec<u8>>,
    /// Headers added before the runtime's own.
    pub headers: Headers,
}

/// Shapes dead-letter records. Must not fail: whatever it returns is written.
pub trait DeadLetterHandler: Send + Sync + 'static {
    /// Builds the dead-letter record of a failure.
    fn dead_letter(&self, failure: &Failure<'_>) -> DeadLetter;
}

/// Writes the original key and value unchanged (Kafka Streams' default shape).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDeadLetters;

impl DeadLetterHandler for RawDeadLetters {
    fn dead_letter(&self, failure: &Failure<'_>) -> DeadLetter {
        DeadLetter {
            key: failure.source.key.map(<[u8]>::to_vec),
            value: failure.source.value.map(<[u8]>::to_vec),
            headers: Headers::new(),
        }
    }
}

/// The headers of a dead-letter record: the original headers (minus any
/// earlier error headers, so a replayed and re-failed record carries one
/// set), the handler's, then the KIP-1034 ones.
pub(crate) fn dead_letter_headers(failure: &Failure<'_>, extra: &Headers) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in failure.source.headers.iter() {
        if !name.starts_with("__streams.errors.") {
            headers.push(name, value.map(<[u8]>::to_vec));
        }
    }
    for (name, value) in extra.iter() {
        headers.push(name, value.map(<[u8]>::to_vec));
    }
    let c = &failure.source.coordinates;
    headers
        .with(HEADER_EXCEPTION, exception_name(failure.kind))
        .with(HEADER_MESSAGE, failure.message)
        .with(HEADER_TOPIC, c.topic.as_bytes())
        .with(HEADER_PARTITION, c.partition.to_string())
        .with(HEADER_OFFSET, c.offset.to_string())
}

/// The `__streams.errors.exception` value of a failure class.
pub fn exception_name(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Deserialization => "weir.DeserializationError",
        FailureKind::Validation => "weir.ValidationError",
        FailureKind::Processing => "weir.ProcessingError",
    }
}
