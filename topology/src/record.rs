//! Records as processors see them, as they arrive from Kafka, and as they leave.
//!
//! [`Record`] is the typed, immutable-by-convention value a processor receives
//! and forwards (`with_key`/`with_value` build changed copies, as in Kafka
//! Streams). [`SourceRecord`] is the raw input, kept so a failure can carry the
//! exact original bytes to the dead-letter topic. [`OutputRecord`] is what a
//! sink or the dead-letter route hands to the producer.

use std::sync::Arc;

/// Kafka record headers, in order; a header value may be null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Option<Vec<u8>>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a header (Kafka allows repeated names).
    pub fn push(&mut self, name: impl Into<String>, value: Option<Vec<u8>>) {
        self.0.push((name.into(), value));
    }

    /// Appends a header, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.push(name, Some(value.into()));
        self
    }

    /// The value of the last header with this name.
    pub fn last(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value of the last header with this name, as UTF-8.
    pub fn last_str(&self, name: &str) -> Option<&str> {
        self.last(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Removes every header with this name.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// Iterates over `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A typed record flowing between processors.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    /// The key; `None` for a record without one.
    pub key: Option<K>,
    /// The value; `None` is a Kafka tombstone (null value).
    pub value: Option<V>,
    /// Headers, forwarded unchanged unless a processor changes them.
    pub headers: Headers,
    /// Event time in milliseconds since the epoch (the input record's timestamp).
    pub timestamp: i64,
}

impl<K, V> Record<K, V> {
    /// A record with a key and a value, no headers, timestamp 0.
    pub fn new(key: K, value: V) -> Self {
        Self {
            key: Some(key),
            value: Some(value),
            headers: Headers::new(),
            timestamp: 0,
        }
    }

    /// The same record with another key.
    pub fn with_key<K2>(self, key: Option<K2>) -> Record<K2, V> {
        Record {
            key,
            value: self.value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }

    /// The same record with another value.
    pub fn with_value<V2>(self, value: Option<V2>) -> Record<K, V2> {
        Record {
            key: self.key,
            value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }

    /// The same record with other headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The same record with another timestamp.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }
}

/// Where an input record came from: enough to find it again with any Kafka tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCoordinates {
    /// Input topic.
    pub topic: Arc<str>,
    /// Input partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// An input record exactly as it was consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord<'a> {
    /// Topic, partition and offset.
    pub coordinates: SourceCoordinates,
    /// The record's timestamp (ms since the epoch).
    pub timestamp: i64,
    /// The raw key bytes.
    pub key: Option<&'a [u8]>,
    /// The raw value bytes.
    pub value: Option<&'a [u8]>,
    /// The original headers.
    pub headers: Headers,
}

/// A record on its way to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Serialized key.
    pub key: Option<Vec<u8>>,
    /// Serialized value (`None` is a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Headers,
    /// Timestamp to write (ms since the epoch).
    pub timestamp: i64,
}

impl OutputRecord {
    /// The key as UTF-8, for tests and tools.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value parsed as JSON, for tests and tools.
    pub fn value_json(&self) -> Option<serde_json::Value> {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
    }
}
