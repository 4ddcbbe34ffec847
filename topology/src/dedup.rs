//! Deduplication as a first-class operator (Kafka Streams still lacks one:
//! KIP-655). The first record of a dedup key passes; every later one is
//! dropped with no output at all and counted. Seen keys live in a store with
//! a changelog, so the memory of what was seen survives crashes and moves
//! with the partition.
//!
//! With a retention, every seen key also gets an entry in a time index kept
//! in the same store (key prefix [`EXPIRY_INDEX_PREFIX`], then the first-seen
//! time big-endian, then the key). The index is local: it is derived from
//! the entries, so it is not logged, and the changelog carries one record
//! per seen key, not two (logging it cost ~15% of the at-least-once job's
//! throughput, and doubled the changelog a restore reads). After each
//! commit the operator walks the index from its oldest end (or from where
//! its last pass stopped) and removes expired keys (tombstones reach the
//! changelog at the next commit) and their index entries, at most
//! [`EXPIRY_BUDGET`] at a time: the cost follows what expires, never the
//! size of the store. An index entry whose key is gone or was seen again
//! later is just dropped. Measured by `cargo bench --workspace --bench
//! dedup_expiry`.
//!
//! A full restore does not derive the index (per record it was a second
//! memtable insert, ~16% of a restore): it writes a rebuild mark with the
//! first entries it applies, and after restore the operator derives the
//! index from the entries, [`REBUILD_BUDGET`] per commit, from where the
//! mark says it got to (`cargo bench --bench dedup_expiry` measures it). A
//! restore that replays a tail (what the store had not flushed when its
//! process was killed) derives the index entries of what it replays, as it
//! applies them: rebuilding a whole store's index for a short tail would
//! cost far more. Meanwhile, and always, a key's entry is also judged when the
//! key is seen again: a record more than the retention after the entry's
//! time passes (and renews it) whether or not an expiry pass removed it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::builder::{Data, KStream, LocalDerivation};
use crate::graph::{ErasedRecord, Node, NodeContext, Target};
use crate::metrics;
use crate::record::Record;
use crate::ProcessError;

/// What the dedup store keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEntry {
    /// Timestamp of the first record with this key (ms since the epoch).
    pub first_seen_ms: i64,
    /// Input offset of that first record.
    pub first_offset: i64,
}

/// Prefix of the operator's own keys in its store; dedup keys starting with
/// it are refused.
pub const RESERVED_PREFIX: &[u8] = b"\x00weir.";
/// The first key after every key with [`RESERVED_PREFIX`].
const RESERVED_END: &[u8] = b"\x00weir/";
/// Prefix of the expiry index's keys.
pub const EXPIRY_INDEX_PREFIX: &[u8] = b"\x00weir.expiry\x00";
/// The rebuild mark: present while the index lacks restored entries; its
/// value is the data key the rebuild goes on from. Outside the index's range.
pub const REBUILD_KEY: &[u8] = b"\x00weir.expiry-rebuild";
/// Most keys one punctuation expires (the rest go at the next commit).
pub const EXPIRY_BUDGET: usize = 10_000;
/// Most entries one punctuation indexes after a restore. Small: a thread
/// may have just restored a hundred partitions, each rebuilding at the same
/// commit (at ~0.4 µs an entry, 2,000 is under 1 ms a partition).
pub const REBUILD_BUDGET: usize = 2_000;

/// The expiry-index key of a seen `key` first seen at `first_seen_ms`:
/// [`EXPIRY_INDEX_PREFIX`], the time big-endian (negative times as 0), the key.
pub fn index_key(first_seen_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(EXPIRY_INDEX_PREFIX.len() + 8 + key.len());
    k.extend_from_slice(EXPIRY_INDEX_PREFIX);
    k.extend_from_slice(&(first_seen_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The index entry of a seen key a restore replays as part of a tail.
/// (Records of the index itself, in changelogs written before it was
/// local, restore as they are.)
fn restore_index(key: &[u8], value: &[u8], batch: &mut weir_state::WriteBatch) {
    if let Some(index) = index_entry_of(key, value) {
        batch.put(index, b"");
    }
}

/// The index key of a stored `(key, value)`, when it is a seen entry (not
/// one of the operator's own keys, nor a value of another shape).
fn index_entry_of(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    if key.starts_with(RESERVED_PREFIX) {
        return None;
    }
    let seen = weir_state::typed::decode::<SeenEntry>("", value).ok()?;
    Some(index_key(seen.first_seen_ms, key))
}

/// The source offset of a seen entry's write: its first offset (the
/// operator writes an entry only for the record it passes, at that record's
/// offset). Lets exactly-once changelog records go without a
/// `weir.source.offset` header; on nisshi (a row per header) that header
/// alone cost ~20% of exactly-once throughput.
fn first_offset_of(value: &[u8]) -> Option<i64> {
    weir_state::typed::decode::<SeenEntry>("", value)
        .ok()
        .map(|seen| seen.first_offset)
}

type KeyFn<K, V> = Arc<dyn Fn(&Record<K, V>) -> Option<Vec<u8>> + Send + Sync>;

struct DedupNode<K, V> {
    store: String,
    key_fn: KeyFn<K, V>,
    retention_ms: Option<i64>,
    /// Where the index rebuild goes on from: `None` until the first
    /// punctuation reads the rebuild mark, then `Some(None)` when there is
    /// nothing to rebuild.
    rebuild: Option<Option<Vec<u8>>>,
    /// Where the next expiry pass seeks to: the last index entry it deleted.
    /// Deleted entries stay in RocksDB as tombstones until compaction, and a
    /// walk from the index's start steps over them on every pass (measured,
    /// 1,000,000 expiries: 7.2 µs a key from the start, 3.9 µs from here).
    /// Empty: from the start (after a restart, an aborted interval, or when
    /// a record with an older timestamp put an index entry below it).
    resume: Vec<u8>,
    /// The duplicates counter, looked up at the first duplicate (not at
    /// construction, which may come before a metrics recorder is installed)
    /// and kept: a labelled lookup per duplicate was a registry hash and a
    /// string copy.
    duplicates: Option<::metrics::Counter>,
}

impl<K: Data, V: Data> Node for DedupNode<K, V> {
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let typed = record.typed_ref::<K, V>();
        let Some(key) = (self.key_fn)(typed) else {
            ctx.forwards.push((Target::All, record));
            return Ok(());
        };
        if key.starts_with(RESERVED_PREFIX) {
            return Err(ProcessError::processing(
                "the dedup key uses a reserved prefix",
            ));
        }
        let offset = ctx.source.offset;
        let tx = ctx.stores.get_mut(&self.store).ok_or_else(|| {
            ProcessError::Misuse(format!("dedup store {:?} is missing", self.store))
        })?;
        let mut store = weir_state::TypedStore::new(tx, offset);
        let seen = store.get::<SeenEntry>(&key)?.filter(|seen| {
            // Past its retention the entry no longer counts, whether or not
            // an expiry pass (or the index rebuild) has reached it yet.
            self.retention_ms
                .is_none_or(|r| typed.timestamp.saturating_sub(seen.first_seen_ms) <= r)
        });
        if let Some(seen) = seen {
            self.duplicates
                .get_or_insert_with(|| {
                    ::metrics::counter!(metrics::DUPLICATES, metrics::LABEL_STORE => self.store.clone())
                })
                .increment(1);
            tracing::debug!(
                key = %String::from_utf8_lossy(&key),
                offset,
                first_offset = seen.first_offset,
                "duplicate dropped"
            );
            return Ok(());
        }
        store.put(
            &key,
            &SeenEntry {
                first_seen_ms: typed.timestamp,
                first_offset: offset,
            },
        )?;
        if self.retention_ms.is_some() {
            let index = index_key(typed.timestamp, &key);
            if index < self.resume {
                self.resume.clear();
            }
            store.put_local(&index, &())?;
        }
        ctx.forwards.push((Target::All, record));
        Ok(())
    }

    fn abort(&mut self) {
        // The deletes of the last pass may be among the dropped writes.
        self.resume.clear();
    }

    fn punctuate(&mut self, now_ms: i64, ctx: &mut NodeContext<'_>) -> Result<(), ProcessError> {
        let Some(retention) = self.retention_ms else {
            return Ok(());
        };
        let cutoff = now_ms - retention;
        let offset = ctx.source.offset;
        let tx = ctx.stores.get_mut(&self.store).ok_or_else(|| {
            ProcessError::Misuse(format!("dedup store {:?} is missing", self.store))
        })?;
        if self.rebuild.is_none() {
            self.rebuild = Some(tx.get(REBUILD_KEY)?);
        }
        if let Some(Some(from)) = &self.rebuild {
            let next = rebuild_index(tx, from)?;
            // Its entries may sort below where the expiry walk stopped.
            self.resume.clear();
            self.rebuild = Some(next);
        }
        let mut expired: Vec<(Vec<u8>, i64, Vec<u8>)> = Vec::new();
        let from = if self.resume.is_empty() {
            EXPIRY_INDEX_PREFIX
        } else {
            &self.resume
        };
        tx.store().scan_from(from, &mut |k, _| {
            let Some(rest) = k.strip_prefix(EXPIRY_INDEX_PREFIX) else {
                return false; // past the index
            };
            let Some((ts, key)) = rest.split_first_chunk::<8>() else {
                return true;
            };
            let ts = u64::from_be_bytes(*ts) as i64;
            if ts >= cutoff || expired.len() >= EXPIRY_BUDGET {
                return false;
            }
            expired.push((k.to_vec(), ts, key.to_vec()));
            true
        })?;
        let Some((last, _, _)) = expired.last() else {
            return Ok(());
        };
        self.resume = last.clone();
        let mut store = weir_state::TypedStore::new(tx, offset);
        for (index, ts, key) in &expired {
            // Only the entry this index entry describes: a key confirmed
            // again after an expiry has a newer entry and index.
            if store
                .get::<SeenEntry>(key)?
                .is_some_and(|s| s.first_seen_ms == *ts)
            {
                store.delete(key);
            }
            store.delete_local(index);
        }
        ::metrics::counter!(metrics::DEDUP_EXPIRED, metrics::LABEL_STORE => self.store.clone())
            .increment(expired.len() as u64);
        tracing::debug!(store = %self.store, expired = expired.len(), "dedup keys expired");
        Ok(())
    }
}

/// One step of the index rebuild after a restore: index entries for up to
/// [`REBUILD_BUDGET`] data entries from `from` on, written straight to the
/// store with the mark's new position in one batch (not through the
/// interval's overlay: they derive from committed entries, so they hold
/// whatever happens to the interval; through the overlay's map and copies
/// the rebuild took 0.52 µs an entry, now 0.41). Returns where the next
/// step starts (`None`: done, the mark is deleted).
fn rebuild_index(
    tx: &mut weir_state::StoreTransaction,
    from: &[u8],
) -> Result<Option<Vec<u8>>, ProcessError> {
    let mut batch = weir_state::WriteBatch::default();
    let mut indexed = 0;
    let mut next: Option<Vec<u8>> = None;
    let mut start = from.to_vec();
    loop {
        let mut reserved = false;
        tx.store().scan_from(&start, &mut |k, v| {
            if k.starts_with(RESERVED_PREFIX) {
                reserved = true;
                return false;
            }
            if indexed >= REBUILD_BUDGET {
                next = Some(k.to_vec());
                return false;
            }
            if let Some(index) = index_entry_of(k, v) {
                batch.put(index, b"");
                indexed += 1;
            }
            true
        })?;
        if !reserved {
            break;
        }
        start = RESERVED_END.to_vec();
    }
    match &next {
        Some(k) => batch.put(REBUILD_KEY, k),
        None => batch.delete(REBUILD_KEY),
    }
    tx.store_mut().write(batch)?;
    ::metrics::counter!(metrics::DEDUP_INDEX_REBUILT, metrics::LABEL_STORE => tx.name().to_string())
        .increment(indexed as u64);
    tracing::debug!(indexed, done = next.is_none(), "dedup index rebuilt");
    Ok(next)
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Passes the first record of each dedup key and drops the rest.
    ///
    /// `key_fn` gives the dedup key (`None`: not subject to dedup, passes).
    /// `store` must be declared with `add_store`; its changelog makes the
    /// operator fault tolerant. Keys are kept forever; see
    /// [`KStream::dedup_with_retention`].
    pub fn dedup<F>(&self, name: &str, store: &str, key_fn: F) -> KStream<K, V>
    where
        F: Fn(&Record<K, V>) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        self.dedup_with_retention(name, store, None, key_fn)
    }

    /// [`KStream::dedup`] that forgets a key `retention` after the timestamp
    /// of its first record: the store and its changelog stay bounded, and a
    /// key seen again after that passes again.
    pub fn dedup_with_retention<F>(
        &self,
        name: &str,
        store: &str,
        retention: Option<std::time::Duration>,
        key_fn: F,
    ) -> KStream<K, V>
    where
        F: Fn(&Record<K, V>) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let retention_ms = retention.map(|r| r.as_millis() as i64);
        if retention_ms.is_some() {
            self.add_local_derivation(
                store,
                LocalDerivation {
                    derive: restore_index,
                    mark: (REBUILD_KEY, b""),
                },
            );
        }
        self.set_value_source_offset(store, first_offset_of);
        let key_fn: KeyFn<K, V> = Arc::new(key_fn);
        let store_name = store.to_string();
        self.add_node(
            name,
            &[store],
            Arc::new(move || {
                Box::new(DedupNode {
                    store: store_name.clone(),
                    key_fn: key_fn.clone(),
                    retention_ms,
                    rebuild: None,
                    resume: Vec::new(),
                    duplicates: None,
                })
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_state::{KeyValueStore, MemoryStore, WriteBatch};

    use super::*;
    use crate::{
        StoreSpec, StringSerde, TestRecord, Topology, TopologyBuilder, TopologyTestDriver,
    };

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_seen_entry_tells_its_first_offset_and_other_values_tell_nothing() {
        let seen = SeenEntry {
            first_seen_ms: 5,
            first_offset: 1234,
        };
        let value = weir_state::typed::encode("", &seen).unwrap();
        assert_eq!(first_offset_of(&value), Some(1234));
        assert_eq!(first_offset_of(b"seen"), None);
        assert_eq!(first_offset_of(b""), None);
        // Trailing bytes: another shape, not a seen entry.
        assert_eq!(first_offset_of(&[value.as_slice(), b"x"].concat()), None);
    }

    fn topology() -> Topology {
        let b = TopologyBuilder::new();
        b.add_store(StoreSpec::key_value("seen"));
        b.source("in", StringSerde, StringSerde)
            .dedup_with_retention(
                "dedup",
                "seen",
                Some(Duration::from_millis(DAY as u64)),
                |r: &Record<String, String>| r.key.clone().map(String::into_bytes),
            )
            .to("out", StringSerde, StringSerde);
        b.build().unwrap()
    }

    fn at(key: &str, timestamp: i64) -> TestRecord {
        let mut r = TestRecord::new(key, "v");
        r.timestamp = timestamp;
        r
    }

    #[test]
    fn a_key_seen_again_after_its_retention_passes_before_any_expiry_pass() {
        let mut d = TopologyTestDriver::new(&topology());
        d.pipe(at("k", 1_000)).unwrap();
        d.pipe(at("k", 1_000 + DAY)).unwrap(); // exactly the retention: still seen
        d.pipe(at("k", 1_000 + DAY + 1)).unwrap(); // past it, no punctuation yet
        d.pipe(at("k", 1_000 + DAY + 2)).unwrap(); // the renewed entry counts
        let passed: Vec<i64> = d.read_output("out").iter().map(|r| r.timestamp).collect();
        assert_eq!(passed, [1_000, 1_000 + DAY + 1]);
    }

    #[test]
    fn keys_with_the_operators_reserved_prefix_are_refused() {
        let mut d = TopologyTestDriver::new(&topology());
        // (Without a dead-letter topic the failure stops the task.)
        let err = d.pipe(at("\u{0}weir.expiry-rebuild", 1_000)).unwrap_err();
        assert!(err.to_string().contains("reserved prefix"), "{err}");
        assert!(d.store_get("seen", REBUILD_KEY).is_none());
    }

    /// A store as restore leaves it: entries without index entries, and the
    /// rebuild mark restore writes with the first batch.
    #[test]
    fn after_a_restore_the_index_is_rebuilt_in_steps_and_restored_keys_expire() {
        let n = 5 * REBUILD_BUDGET + 500;
        let mut restored = MemoryStore::new("seen");
        let mut b = WriteBatch::default();
        b.put(REBUILD_KEY, b"");
        for i in 0..n {
            let seen = SeenEntry {
                first_seen_ms: 1_000,
                first_offset: i as i64,
            };
            b.put(
                format!("k{i:06}").into_bytes(),
                weir_state::typed::encode("seen", &seen).unwrap(),
            );
        }
        b.set_changelog_offset(n as i64);
        restored.write(b).unwrap();
        let mut restored = Some(restored);
        let mut d = TopologyTestDriver::with_stores(&topology(), |_| {
            Box::new(restored.take().expect("one store"))
        });

        // Within its retention a restored key is a duplicate, index or not.
        d.pipe(at("k000007", 1_000 + DAY)).unwrap();
        assert!(d.read_output("out").is_empty());

        // One step of at most REBUILD_BUDGET entries per punctuation.
        let mut steps = 0;
        while d.store_get("seen", REBUILD_KEY).is_some() {
            d.punctuate(2_000).unwrap(); // nothing is due yet
            steps += 1;
            assert!(steps <= 20, "the rebuild does not finish");
        }
        assert_eq!(steps, 6);
        assert_eq!(
            d.store_len("seen"),
            2 * n as u64,
            "each entry and its index entry"
        );

        // The rebuilt index expires every restored key, in passes.
        let mut passes = 0;
        while d.store_len("seen") > 0 {
            d.punctuate(1_000 + DAY + 1).unwrap();
            passes += 1;
            assert!(passes <= 10, "expiry does not finish");
        }
        let tombstones = d
            .changelog("seen")
            .iter()
            .filter(|(_, v, _)| v.is_none())
            .count();
        assert_eq!(tombstones, n, "one tombstone per restored key");
    }
}
