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
//! A commit may also be pipelined: [`StoreTransaction::freeze`] sets the
//! interval's writes aside as [`FrozenWrites`] — readable by processors,
//! which go on writing a new overlay, and shareable with a thread that logs
//! them — until [`StoreTransaction::commit_frozen`] applies them (the
//! runtime does this under at-least-once, so the stream thread does not
//! wait while the changelog is written).
//!
//! Local writes ([`StoreTransaction::put_local`]) commit with the rest but
//! are never logged: they are for entries derived from logged ones (an
//! index), which restore re-derives instead of reading them back. A key is
//! written either always logged or always local.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{ChangelogSink, KeyValueStore, StateError, WriteBatch};

/// A pending write: the value (`None` deletes), the input offset that
/// caused it, and whether it goes to the changelog.
#[derive(Debug, Clone)]
struct Pending {
    value: Option<Vec<u8>>,
    source_offset: i64,
    logged: bool,
}

/// Writes by key. foldhash, not SipHash: every processed record looks a key
/// up here, and SipHash was ~4% of the stream thread (perf); foldhash is
/// seeded per process, so keys taken from input cannot be chosen to collide.
type Writes = HashMap<Vec<u8>, Pending, foldhash::fast::RandomState>;

/// The writes of an interval whose commit is under way: shared, read-only,
/// between the stream thread (reads see them) and whoever logs them.
#[derive(Debug, Clone)]
pub struct FrozenWrites(Arc<Writes>);

impl FrozenWrites {
    /// Sends one changelog record per key written (and logged) in the interval.
    pub fn log_changes(&self, sink: &mut dyn ChangelogSink) -> Result<(), StateError> {
        log_changes(&self.0, sink)
    }

    /// Number of keys written in the interval.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the interval wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn log_changes(writes: &Writes, sink: &mut dyn ChangelogSink) -> Result<(), StateError> {
    for (key, p) in writes.iter().filter(|(_, p)| p.logged) {
        sink.send(key, p.value.as_deref(), p.source_offset)?;
    }
    Ok(())
}

/// One atomic batch of `writes` (in order: a later write of a key wins)
/// and, when given, the changelog offset they reach.
fn batch_of<'a>(
    writes: impl Iterator<Item = (&'a Vec<u8>, &'a Pending)>,
    changelog_offset: Option<i64>,
) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (key, p) in writes {
        match &p.value {
            Some(v) => batch.put(key, v),
            None => batch.delete(key),
        }
    }
    if let Some(offset) = changelog_offset {
        batch.set_changelog_offset(offset);
    }
    batch
}

/// A store partition plus the writes of the current, uncommitted interval
/// (and of the previous one while its commit is under way).
pub struct StoreTransaction {
    /// The committed state.
    store: Box<dyn KeyValueStore>,
    /// Writes since the last commit (or freeze), by key.
    pending: Writes,
    /// The previous interval's writes, frozen until its commit applies or
    /// drops them; reads look here after `pending`.
    frozen: Option<FrozenWrites>,
}

impl std::fmt::Debug for StoreTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTransaction")
            .field("store", &self.store.name())
            .field("pending", &self.pending.len())
            .field("frozen", &self.frozen.as_ref().map(FrozenWrites::len))
            .finish()
    }
}

impl StoreTransaction {
    /// Wraps a store with an empty overlay.
    pub fn new(store: Box<dyn KeyValueStore>) -> Self {
        Self {
            store,
            pending: HashMap::default(),
            frozen: None,
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        self.store.name()
    }

    /// The newest uncommitted write of `key`: this interval's, else the
    /// frozen one's.
    fn uncommitted(&self, key: &[u8]) -> Option<&Pending> {
        self.pending
            .get(key)
            .or_else(|| self.frozen.as_ref()?.0.get(key))
    }

    /// Reads a key, seeing uncommitted writes first.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.uncommitted(key) {
            Some(p) => Ok(p.value.clone()),
            None => self.store.get(key),
        }
    }

    /// True when `key` has a committed or uncommitted value, without copying it.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StateError> {
        match self.uncommitted(key) {
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
        log_changes(&self.pending, sink)
    }

    /// Applies the overlay and `changelog_offset` (when given) in one atomic
    /// batch, then starts a new interval. Frozen writes, if any, are applied
    /// first, in the same batch: they are older.
    pub fn commit(&mut self, changelog_offset: Option<i64>) -> Result<(), StateError> {
        let frozen = self.frozen.take();
        let older = frozen.iter().flat_map(|f| f.0.iter());
        let batch = batch_of(older.chain(self.pending.iter()), changelog_offset);
        self.pending.clear();
        self.store.write(batch)
    }

    /// Sets this interval's writes aside for a pipelined commit and starts
    /// a new interval; reads still see them until [`Self::commit_frozen`]
    /// or [`Self::abort`]. `None` when nothing was written. Writes frozen
    /// earlier and not yet applied stay under the new ones (a commit is
    /// not expected to start before the previous one ended).
    pub fn freeze(&mut self) -> Option<FrozenWrites> {
        if self.pending.is_empty() {
            return None;
        }
        let mut writes = std::mem::take(&mut self.pending);
        if let Some(older) = self.frozen.take() {
            let older = Arc::try_unwrap(older.0).unwrap_or_else(|shared| (*shared).clone());
            for (k, p) in older {
                writes.entry(k).or_insert(p);
            }
        }
        let frozen = FrozenWrites(Arc::new(writes));
        self.frozen = Some(frozen.clone());
        Some(frozen)
    }

    /// True while frozen writes wait for [`Self::commit_frozen`].
    pub fn has_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Applies the frozen writes and `changelog_offset` (when given) in one
    /// atomic batch; this interval's writes stay pending.
    pub fn commit_frozen(&mut self, changelog_offset: Option<i64>) -> Result<(), StateError> {
        let Some(frozen) = self.frozen.take() else {
            return Ok(());
        };
        self.store
            .write(batch_of(frozen.0.iter(), changelog_offset))
    }

    /// Drops every uncommitted write: this interval's and the frozen ones.
    pub fn abort(&mut self) {
        self.pending.clear();
        self.frozen = None;
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
    fn frozen_writes_stay_readable_under_new_ones_until_applied() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"a".to_vec(), b"1".to_vec(), 1);
        tx.put(b"b".to_vec(), b"1".to_vec(), 2);
        let frozen = tx.freeze().expect("writes to freeze");
        assert!(tx.freeze().is_none(), "nothing new to freeze");
        // The next interval writes on top of them.
        tx.put(b"b".to_vec(), b"2".to_vec(), 3);
        tx.delete(b"a".to_vec(), 4);
        assert_eq!(tx.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert!(!tx.contains(b"a").unwrap());
        tx.put(b"a".to_vec(), b"3".to_vec(), 5);
        // The frozen interval logs only its own writes.
        let mut sink = RecordingSink::default();
        frozen.log_changes(&mut sink).unwrap();
        sink.records.sort();
        assert_eq!(
            sink.records,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec()), 1),
                (b"b".to_vec(), Some(b"1".to_vec()), 2)
            ]
        );
        tx.delete(b"a".to_vec(), 6);
        tx.commit_frozen(Some(7)).unwrap();
        assert!(!tx.has_frozen());
        assert_eq!(tx.store().get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(tx.store().changelog_offset(), Some(7));
        // Reads still see the pending interval over the applied one.
        assert_eq!(tx.get(b"a").unwrap(), None);
        assert_eq!(tx.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(tx.pending_len(), 2);
    }

    #[test]
    fn abort_drops_frozen_writes_too_and_commit_applies_them_first() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        tx.put(b"k".to_vec(), b"old".to_vec(), 1);
        tx.freeze();
        tx.abort();
        assert_eq!(tx.get(b"k").unwrap(), None);
        tx.put(b"k".to_vec(), b"1".to_vec(), 2);
        tx.put(b"f".to_vec(), b"1".to_vec(), 2);
        tx.freeze();
        tx.put(b"k".to_vec(), b"2".to_vec(), 3);
        tx.commit(Some(9)).unwrap();
        assert_eq!(tx.store().get(b"k").unwrap(), Some(b"2".to_vec()));
        assert_eq!(tx.store().get(b"f").unwrap(), Some(b"1".to_vec()));
        assert!(!tx.has_frozen());
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
