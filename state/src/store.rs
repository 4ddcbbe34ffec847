//! The bytes-level store contract.
//!
//! Every cross-cutting concern (changelogging, metrics, serde) is layered over
//! this trait; implementations only keep bytes and one number, the changelog
//! offset, which must be written atomically with the data it describes.

use crate::StateError;

/// One atomic write: data operations plus, optionally, the changelog offset
/// that the store has reached once these operations are applied.
///
/// Keys and values are copied into one buffer, back to back, and each
/// operation is three numbers into it. A restore batch of 4,096 records was
/// 8,192 allocations on the reading thread, freed again on the writing one
/// (jemalloc's slow path for a foreign thread's blocks): perf put the two
/// threads' allocator calls and moves at ~10% of a restore.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Every operation's key, then its value (for a put), in the order added.
    data: Vec<u8>,
    /// Operations in apply order.
    ops: Vec<Op>,
    /// The next changelog offset to read on restore, recorded with the data.
    changelog_offset: Option<i64>,
}

/// One operation: its key at `data[at..at + key_len]`, its value right
/// after the key; a delete has no value.
#[derive(Debug, Clone, Copy)]
struct Op {
    at: usize,
    key_len: u32,
    value_len: u32,
}

impl Op {
    /// `value_len` of a delete.
    const DELETE: u32 = u32::MAX;
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        self.push(key.as_ref(), Some(value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.push(key.as_ref(), None);
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let len = |n: usize| u32::try_from(n).expect("keys and values are under 4 GiB");
        let at = self.data.len();
        self.data.extend_from_slice(key);
        let value_len = match value {
            Some(v) => {
                self.data.extend_from_slice(v);
                len(v.len())
            }
            None => Op::DELETE,
        };
        self.ops.push(Op {
            at,
            key_len: len(key.len()),
            value_len,
        });
    }

    /// Records the changelog offset reached by this batch.
    pub fn set_changelog_offset(&mut self, offset: i64) {
        self.changelog_offset = Some(offset);
    }

    /// The changelog offset this batch records, if any.
    pub fn changelog_offset(&self) -> Option<i64> {
        self.changelog_offset
    }

    /// Bytes of keys and values in the batch.
    pub(crate) fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The operations in apply order: `(key, Some(value))` puts and
    /// `(key, None)` deletes.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], Option<&[u8]>)> + '_ {
        self.ops.iter().map(|op| self.op(op))
    }

    fn key(&self, op: &Op) -> &[u8] {
        &self.data[op.at..op.at + op.key_len as usize]
    }

    fn op(&self, op: &Op) -> (&[u8], Option<&[u8]>) {
        let value_at = op.at + op.key_len as usize;
        let value = (op.value_len != Op::DELETE)
            .then(|| &self.data[value_at..value_at + op.value_len as usize]);
        (self.key(op), value)
    }

    /// Puts the operations in key order, keeping the order of operations on
    /// one key. Stores apply batches in key order (RocksDB's memtable inserts
    /// a run of ascending keys fastest) and sorting a sorted batch again
    /// costs one pass, so a caller can sort on its own thread ahead of the
    /// write: restore does, while the previous batch is being written.
    ///
    /// Keys are sorted by the 8 bytes after the prefix every key shares
    /// (`o-42-` of a restore batch's orderIds), as integers, with a
    /// counting sort per byte that differs; keys tied on those 8 bytes are
    /// sorted the same way from there (a commit's time-index keys tie on
    /// `\0weir.ex`, then on a timestamp's high bytes). Comparing keys where
    /// they lie was a pointer chase per comparison (~27% of a restore's
    /// reading thread, perf). Measured per key, against comparing each
    /// key's first 24 bytes as integers: a 4,096-key restore batch 39 →
    /// 26 ns, a commit's 270,000 keys (orderIds and index keys) 160 → 117.
    /// Only the operations move; keys and values stay where they are.
    pub fn sort_by_key(&mut self) {
        if self.ops.is_sorted_by(|a, b| self.key(a) <= self.key(b)) {
            return;
        }
        let mut order: Vec<(u64, u32)> = (0..self.ops.len() as u32).map(|i| (0, i)).collect();
        self.sort_run(&mut order, 0);
        self.ops = order.iter().map(|(_, i)| self.ops[*i as usize]).collect();
    }

    /// Sorts a run of operations (positions; the integers are scratch)
    /// whose keys are known to share their first `from` bytes, stably.
    /// Runs of keys tied on their 8 bytes are sorted the same way from 8
    /// bytes further on (a batch's time-index keys all tie on their first
    /// 8 bytes, and are half of a commit's batch); a run whose keys do not
    /// all reach that far (zero padding made them tie) is compared whole.
    fn sort_run(&self, run: &mut [(u64, u32)], from: usize) {
        let key = |i: u32| self.key(&self.ops[i as usize]);
        if run.len() < RADIX_MIN {
            run.sort_by(|a, b| key(a.1).cmp(key(b.1)));
            return;
        }
        let first = &key(run[0].1)[from..];
        let shared = from
            + run[1..].iter().fold(first.len(), |n, x| {
                first[..n]
                    .iter()
                    .zip(&key(x.1)[from..])
                    .take_while(|(a, b)| a == b)
                    .count()
            });
        for x in run.iter_mut() {
            x.0 = word_after(key(x.1), shared);
        }
        radix_sort(run);
        for tied in run.chunk_by_mut(|a, b| a.0 == b.0) {
            if tied.len() < 2 {
                continue;
            }
            if tied.iter().all(|x| key(x.1).len() >= shared + 8) {
                self.sort_run(tied, shared + 8);
            } else {
                tied.sort_by(|a, b| key(a.1).cmp(key(b.1)));
            }
        }
    }

    /// True when the batch neither writes data nor moves the offset.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.changelog_offset.is_none()
    }
}

/// Below this many operations a comparison sort beats a counting sort's
/// 256-entry tables.
const RADIX_MIN: usize = 64;

/// The 8 bytes of `key` from `at`, zero-padded, as a big-endian integer:
/// integers order as the bytes do, and a tie (equal bytes, or a short key
/// zero-padded) goes to a comparison of the keys.
fn word_after(key: &[u8], at: usize) -> u64 {
    let rest = &key[at..];
    let n = rest.len().min(8);
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(bytes)
}

/// Sorts by the integer, stably: a counting sort per byte, least
/// significant first, skipping bytes that are equal in every integer.
fn radix_sort(v: &mut [(u64, u32)]) {
    let (all, any) = v
        .iter()
        .fold((u64::MAX, 0), |(all, any), x| (all & x.0, any | x.0));
    let differ = all ^ any;
    let mut scratch = v.to_vec();
    // Which of the two holds the sorted-so-far order.
    let mut in_scratch = false;
    for shift in (0..64).step_by(8) {
        if (differ >> shift) & 0xff == 0 {
            continue;
        }
        if in_scratch {
            counting_pass(&scratch, v, shift);
        } else {
            counting_pass(v, &mut scratch, shift);
        }
        in_scratch = !in_scratch;
    }
    if in_scratch {
        v.copy_from_slice(&scratch);
    }
}

/// One stable counting sort of `from` into `to` by the byte at `shift`.
fn counting_pass(from: &[(u64, u32)], to: &mut [(u64, u32)], shift: u32) {
    let digit = |x: &(u64, u32)| ((x.0 >> shift) & 0xff) as usize;
    let mut at = [0usize; 256];
    for x in from {
        at[digit(x)] += 1;
    }
    let mut sum = 0;
    for slot in &mut at {
        (sum, *slot) = (sum + *slot, sum);
    }
    for x in from {
        let d = digit(x);
        to[at[d]] = *x;
        at[d] += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn owned(batch: &WriteBatch) -> Owned {
        batch
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn a_batch_gives_back_its_operations_in_order_with_empty_keys_and_values() {
        let mut batch = WriteBatch::new();
        assert!(batch.is_empty());
        batch.put(b"k", b"v");
        batch.delete(b"k");
        batch.put(b"", b"");
        batch.delete(b"");
        batch.put(b"k", b"second");
        assert_eq!(batch.len(), 5);
        assert_eq!(
            owned(&batch),
            vec![
                (b"k".to_vec(), Some(b"v".to_vec())),
                (b"k".to_vec(), None),
                (Vec::new(), Some(Vec::new())),
                (Vec::new(), None),
                (b"k".to_vec(), Some(b"second".to_vec())),
            ]
        );
        assert_eq!(batch.changelog_offset(), None);
        batch.set_changelog_offset(9);
        assert_eq!(batch.changelog_offset(), Some(9));
    }

    #[test]
    fn sorting_orders_keys_as_bytes_and_keeps_each_keys_operations_in_order() {
        // Keys that tie on the compared bytes, keys that are prefixes of
        // others (and equal once zero-padded), empty keys, repeated keys;
        // and keys that all share a prefix, one of them the prefix itself.
        let prefix = b"\x00weir.expiry\x00\x00\x00\x01\x93".as_slice();
        let long = |tail: &[u8]| [prefix, tail].concat();
        let mixed: Vec<Vec<u8>> = vec![
            b"o-1-10".to_vec(),
            long(b"\x00\x00\x01o-1-2"),
            b"o-1-1".to_vec(),
            b"o-1-1\x00".to_vec(),
            Vec::new(),
            long(b"\x00\x00\x01o-1-1"),
            b"o-1-10".to_vec(),
            b"\xff".to_vec(),
            long(b"\x00\x00\x00o-9"),
            b"o-1-1".to_vec(),
            Vec::new(),
            long(b"\x00\x00\x01o-1-2"),
        ];
        let shared: Vec<Vec<u8>> = vec![
            long(b"\x00\x00\x01o-1-2"),
            long(b""),
            long(b"\x00\x00\x01o-1-10"),
            long(b"\x00"),
            long(b"\x00\x00\x01o-1-1"),
            long(b"\x00\x00\x00o-9"),
            long(b"\x00\x00\x01o-1-2"),
            long(b""),
        ];
        // Once (a comparison sort) and repeated past RADIX_MIN (the
        // counting sort, then whole keys within runs of tied words).
        for keys in [&mixed, &shared] {
            for copies in [1, RADIX_MIN / keys.len() + 1] {
                // Every op is tagged with its position, so order among
                // equal keys shows.
                let mut batch = WriteBatch::new();
                for (i, k) in keys.iter().cycle().take(keys.len() * copies).enumerate() {
                    if i % 3 == 2 {
                        batch.delete(k);
                    } else {
                        batch.put(k, i.to_string());
                    }
                }
                let mut expected = owned(&batch);
                expected.sort_by(|a, b| a.0.cmp(&b.0));
                batch.sort_by_key();
                assert_eq!(owned(&batch), expected, "{copies} copies");
                // Sorted already: unchanged.
                batch.sort_by_key();
                assert_eq!(owned(&batch), expected);
            }
        }
    }

    #[test]
    fn sorting_a_large_random_batch_matches_a_stable_sort() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut batch = WriteBatch::new();
        for i in 0..5_000u32 {
            // Few distinct keys of mixed lengths: many ties and repeats.
            let len = (next() % 30) as usize;
            let fill = (next() % 3) as u8;
            let key: Vec<u8> = (0..len)
                .map(|j| if j + 1 == len { fill } else { b'k' })
                .collect();
            batch.put(key, i.to_be_bytes());
        }
        let mut expected = owned(&batch);
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        batch.sort_by_key();
        assert_eq!(owned(&batch), expected);

        // A commit's batch: orderIds and their time-index keys, which all
        // tie on their first 8 bytes and then on the timestamp's high bytes
        // (sorted by the bytes after those, level by level); some orders
        // twice, some index entries deleted.
        let mut batch = WriteBatch::new();
        for i in 0..3_000u32 {
            let order = format!("o-7-{}", next() % 2_000);
            let ts = 1_763_000_000_000u64 + next() % 50_000;
            let index = [
                b"\x00weir.expiry\x00".as_slice(),
                &ts.to_be_bytes(),
                order.as_bytes(),
            ]
            .concat();
            batch.put(&order, i.to_be_bytes());
            if i % 5 == 0 {
                batch.delete(&index);
            } else {
                batch.put(&index, b"");
            }
        }
        let mut expected = owned(&batch);
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        batch.sort_by_key();
        assert_eq!(owned(&batch), expected);
    }
}
