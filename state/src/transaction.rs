//! The write overlay of one commit interval.
//!
//! Processors write into the overlay; reads see those writes first. Nothing
//! reaches the store until the runtime's commit protocol has made the
//! changelog and the outputs durable and committed the input offsets. Then
//! [`StoreTransaction::commit`] applies the overlay *and* the new changelog
//! offset in one atomic batch. A failure anywhere before that is an
//! [`StoreTransaction::abort`]: the overlay is dropped and the store still
//! equals committed state — the property exactly-once needs too.
//!
//! The overlay also collapses repeated writes to a key within an interval,
//! so the changelog carries one record per key per commit (Kafka Streams'
//! caching layer does the same).
//!
//! Local writes ([`StoreTransaction::put_local`]) commit with the rest but
//! are never logged: they are for entries derived from logged ones (an
//! index), which restore re-derives instead of reading them back. A key is
//! written either always logged or always local.

use std::collections::HashMap;

use crate::{ChangelogSink, KeyValueStore, StateError, WriteBatch};

/// A pending write: the value (`None` deletes), the input offset that
/// caused it, and whether it goes to the changelog.
#[derive(Debug, Clone)]
struct Pending {
    value: Option<Vec<u8>>,
    source_offset: i64,
    logged: bool,
}

/// A store partition plus the writes of the current, uncommitted interval.
pub struct StoreTransaction {
    /// The committed state.
    store: Box<dyn KeyValueStore>,
    /// Writes since the last commit, by key. foldhash, not SipHash: every
    /// processed record looks a key up here, and SipHash was ~4% of the
    /// stream thread (perf); foldhash is seeded per process, so keys taken
    /// from input cannot be chosen to collide.
    pending: HashMap<Vec<u8>, Pending, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for StoreTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTransaction")
            .field("store", &self.store.name())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl StoreTransaction {
    /// Wraps a store with an empty overlay.
    pub fn new(store: Box<dyn KeyValueStore>) -> Self {
        Self {
            store,
            pending: HashMap::default(),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        self.store.name()
    }

    /// Reads a key, seeing this interval's writes first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.pending.get(key) {
            Some(p) => Ok(p.value.clone()),
            None => self.store.get(key),
        }
    }

    /// True when `key` has a committed or pending value, without copying it.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StateError> {
        match self.pending.get(key) {
            Some(p) => Ok(p.value.is_some()),
            None => Ok(self.store.get(key)?.is_some()),
        }
    }

    /// Buffers a put caused by the input record at `source_offset`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, source_offset: i64) {
        self.write(key, Some(value), source_offset, true);
    }

    /// Buffers a delete caused by the input record at `source_offset`.
    pub fn delete(&mut self, key: Vec<u8>, source_offset: i64) {
        self.write(key, None, source_offset, true);
    }

    /// Buffers a put that is committed to the store but not logged.
    pub fn put_local(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write(key, Some(value), -1, false);
    }

    /// Buffers a delete that is committed to the store but not logged.
    pub fn delete_local(&mut self, key: Vec<u8>) {
        self.write(key, None, -1, false);
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, source_offset: i64, logged: bool) {
        self.pending.insert(
            key,
            Pending {
                value,
                source_offset,
                logged,
            },
        );
    }

    /// Number of keys written in this interval.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Sends one changelog record per key written (and logged) in this interval.
    pub fn log_changes(&self, sink: &mut dyn ChangelogSink) -> Result<(), StateError> {
        for (key, p) in self.pending.iter().filter(|(_, p)| p.logged) {
            sink.send(key, p.value.as_deref(), p.source_offset)?;
        }
        Ok(())
    }

    /// Applies the overlay and `changelog_offset` (when given) in one atomic
    /// batch, then starts a new interval.
    pub fn commit(&mut self, changelog_offset: Option<i64>) -> Result<(), StateError> {
        let mut batch = WriteBatch::new();
        for (key, p) in self.pending.drain() {
            match p.value {
                Some(v) => batch.put(key, v),
                None => batch.delete(key),
            }
        }
        if let Some(offset) = changelog_offset {
            batch.set_changelog_offset(offset);
        }
        self.store.write(batch)
    }

    /// Drops this interval's writes.
    pub fn abort(&mut self) {
        self.pending.clear();
    }

    /// The committed store underneath (restore writes here directly).
    pub fn store(&self) -> &dyn KeyValueStore {
        self.store.as_ref()
    }

    /// Mutable access to the committed store (restore, wipe, flush).
    pub fn store_mut(&mut self) -> &mut dyn KeyValueStore {
        self.store.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changelog::RecordingSink;
    use crate::MemoryStore;

    #[test]
    fn reads_see_pending_writes_and_the_store_sees_them_only_after_commit() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"v".to_vec(), 10);
        assert_eq!(tx.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(tx.store().get(b"k").unwrap(), None);
        tx.commit(Some(5)).unwrap();
        assert_eq!(tx.store().get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(tx.store().changelog_offset(), Some(5));
        assert_eq!(tx.pending_len(), 0);
    }

    #[test]
    fn abort_drops_pending_writes() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"v".to_vec(), 1);
        tx.abort();
        assert_eq!(tx.get(b"k").unwrap(), None);
        tx.commit(None).unwrap();
        assert_eq!(tx.store().get(b"k").unwrap(), None);
    }

    #[test]
    fn repeated_writes_to_a_key_log_once_with_the_last_value() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"1".to_vec(), 1);
        tx.put(b"k".to_vec(), b"2".to_vec(), 2);
        tx.delete(b"gone".to_vec(), 3);
        let mut sink = RecordingSink::default();
        tx.log_changes(&mut sink).unwrap();
        sink.records.sort();
        assert_eq!(
            sink.records,
            vec![
                (b"gone".to_vec(), None, 3),
                (b"k".to_vec(), Some(b"2".to_vec()), 2)
            ]
        );
    }

    #[test]
    fn local_writes_commit_to_the_store_but_never_reach_the_changelog() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"v".to_vec(), 1);
        tx.put_local(b"idx".to_vec(), b"".to_vec());
        tx.delete_local(b"old-idx".to_vec());
        assert_eq!(tx.get(b"idx").unwrap(), Some(Vec::new()));
        let mut sink = RecordingSink::default();
        tx.log_changes(&mut sink).unwrap();
        assert_eq!(sink.records, vec![(b"k".to_vec(), Some(b"v".to_vec()), 1)]);
        tx.commit(Some(1)).unwrap();
        assert_eq!(tx.store().get(b"idx").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn a_pending_delete_hides_a_committed_value() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"v".to_vec(), 1);
        tx.commit(None).unwrap();
        tx.delete(b"k".to_vec(), 2);
        assert!(!tx.contains(b"k").unwrap());
        tx.commit(None).unwrap();
        assert_eq!(tx.store().get(b"k").unwrap(), None);
    }
}
