//! What a store transaction needs from the outside world to log its writes.
//!
//! The state crate does not know Kafka; the runtime implements this trait over
//! its producer, one changelog partition per store partition.

use crate::StateError;

/// Receives the changelog records of a committing [`crate::StoreTransaction`].
pub trait ChangelogSink {
    /// Logs one write: `value == None` is a tombstone. `source_offset` is the
    /// input offset of the record that caused the write; restore uses it to
    /// skip changes whose input was never committed.
    fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        source_offset: i64,
    ) -> Result<(), StateError>;
}

/// One logged write: `(key, value, source_offset)`; `None` is a tombstone.
pub type ChangeRecord = (Vec<u8>, Option<Vec<u8>>, i64);

/// A sink that keeps what it was sent, for tests and the topology test driver.
#[derive(Debug, Default)]
pub struct RecordingSink {
    /// Every record sent, in order.
    pub records: Vec<ChangeRecord>,
}

impl ChangelogSink for RecordingSink {
    fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        source_offset: i64,
    ) -> Result<(), StateError> {
        self.records
            .push((key.to_vec(), value.map(<[u8]>::to_vec), source_offset));
        Ok(())
    }
}
