//! The bytes-level store contract.
//!
//! Every cross-cutting concern (changelogging, metrics, serde) is layered over
//! this trait; implementations only keep bytes and one number, the changelog
//! offset, which must be written atomically with the data it describes.

use crate::StateError;

/// One atomic write: data operations plus, optionally, the changelog offset
/// that the store has reached once these operations are applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// `(key, Some(value))` puts, `(key, None)` deletes, applied in order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The next changelog offset to read on restore, recorded with the data.
    pub changelog_offset: Option<i64>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Records the changelog offset reached by this batch.
    pub fn set_changelog_offset(&mut self, offset: i64) {
        self.changelog_offset = Some(offset);
    }

    /// Puts the operations in key order, keeping the order of operations on
    /// one key. Stores apply batches in key order (RocksDB's memtable inserts
    /// a run of ascending keys fastest) and sorting a sorted batch again
    /// costs one pass, so a caller can sort on its own thread ahead of the
    /// write: restore does, while the previous batch is being written.
    pub fn sort_by_key(&mut self) {
        self.ops.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// True when the batch neither writes data nor moves the offset.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.changelog_offset.is_none()
    }
}

/// A key-value store partition over bytes.
///
/// One instance serves one store of one task (one input partition); it is
/// never shared between threads at the same time, hence `&mut self` writes.
pub trait KeyValueStore: Send {
    /// The store's name, as declared in the topology.
    fn name(&self) -> &str;

    /// Reads a key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// Applies a batch atomically: either all of its operations and its
    /// changelog offset are visible after a crash, or none are.
    fn write(&mut self, batch: WriteBatch) -> Result<(), StateError>;

    /// The changelog offset recorded by the last batch that carried one;
    /// `None` for a store that has never been written (restore from the start).
    fn changelog_offset(&self) -> Option<i64>;

    /// Estimated number of live entries (for metrics; may be approximate).
    fn approximate_entries(&self) -> u64;

    /// Calls `f` for every entry in key order until it returns `false`.
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), StateError> {
        self.scan_from(&[], f)
    }

    /// Calls `f` for every entry with a key `>= from`, in key order, until it
    /// returns `false` (a seek, then a walk: cheap for time indexes).
    fn scan_from(
        &self,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError>;

    /// Makes everything written so far durable (on clean shutdown).
    fn flush(&mut self) -> Result<(), StateError>;

    /// Removes all data and the recorded changelog offset, so the next restore
    /// starts from the beginning of the changelog.
    fn wipe(&mut self) -> Result<(), StateError>;
}
