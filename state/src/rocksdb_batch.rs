//! A [`WriteBatch`] in RocksDB's own batch format, built in one pass.
//!
//! Handing RocksDB a batch record by record (`rocksdb_writebatch_put`: an
//! FFI call, a save point, two length-prefixed appends to a growing C++
//! string and a count update per record) was about a quarter of a restore
//! writer's CPU (perf). The format is RocksDB's documented, long-stable
//! `WriteBatch::rep_` (`db/write_batch.cc`):
//!
//! ```text
//! rep    := sequence: fixed64, count: fixed32, record[count]
//! record := kTypeValue (0x1) varstring varstring | kTypeDeletion (0x0) varstring
//! varstring := len: varint32, bytes
//! ```
//!
//! Building it here is one exactly sized buffer filled with copies; RocksDB
//! copies it once more (`WriteBatch::from_data`). A test holds the bytes equal
//! to what RocksDB's own `put`/`delete` produce, so a format change in a
//! RocksDB upgrade fails the suite rather than a restore.

use crate::WriteBatch;

/// `kTypeDeletion`: a delete of the default column family.
const TYPE_DELETION: u8 = 0x0;
/// `kTypeValue`: a put to the default column family.
const TYPE_VALUE: u8 = 0x1;
/// Sequence number (set by the write) and record count.
const HEADER: usize = 12;

/// `batch`'s operations, in its order, as a RocksDB batch on the default
/// column family.
pub(crate) fn encode(batch: &WriteBatch) -> rocksdb::WriteBatch {
    // Bytes per record besides key and value: a type and two varint32s.
    let mut rep = Vec::with_capacity(HEADER + batch.data_len() + batch.len() * 11);
    rep.extend_from_slice(&0u64.to_le_bytes());
    let count = u32::try_from(batch.len()).expect("a batch has under 4 G operations");
    rep.extend_from_slice(&count.to_le_bytes());
    for (key, value) in batch.iter() {
        match value {
            Some(v) => {
                rep.push(TYPE_VALUE);
                varstring(&mut rep, key);
                varstring(&mut rep, v);
            }
            None => {
                rep.push(TYPE_DELETION);
                varstring(&mut rep, key);
            }
        }
    }
    rocksdb::WriteBatch::from_data(&rep)
}

/// A length as varint32, then the bytes (`PutLengthPrefixedSlice`).
fn varstring(rep: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are under 4 GiB (`WriteBatch::push` checks).
    let mut n = bytes.len() as u32;
    while n >= 0x80 {
        rep.push((n as u8) | 0x80);
        n >>= 7;
    }
    rep.push(n as u8);
    rep.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same operations through RocksDB's own API.
    fn by_rocksdb(batch: &WriteBatch) -> rocksdb::WriteBatch {
        let mut wb = rocksdb::WriteBatch::default();
        for (k, v) in batch.iter() {
            match v {
                Some(v) => wb.put(k, v),
                None => wb.delete(k),
            }
        }
        wb
    }

    #[test]
    fn the_encoding_is_byte_for_byte_what_rocksdb_builds() {
        let mut batch = WriteBatch::new();
        batch.put("o-1", "v");
        batch.delete("o-2");
        batch.put("", ""); // empty key and value
        batch.put(vec![b'k'; 127], vec![0u8; 128]); // the varint's one- and two-byte forms
        batch.put(vec![b'k'; 300], vec![7u8; 70_000]); // three bytes
        batch.delete(vec![0xffu8; 16_384]);
        batch.put("o-1", "again"); // a key twice, in order
        let ours = encode(&batch);
        let theirs = by_rocksdb(&batch);
        assert_eq!(ours.data(), theirs.data());
        assert_eq!(ours.len(), 7);
    }

    #[test]
    fn an_empty_batch_is_a_bare_header() {
        let batch = WriteBatch::new();
        assert_eq!(encode(&batch).data(), by_rocksdb(&batch).data());
        assert_eq!(encode(&batch).data().len(), HEADER);
    }

    #[test]
    fn a_column_family_put_appends_to_an_encoded_batch() {
        // The store adds its changelog offset to the meta column family
        // with RocksDB's own call, after the encoded data.
        let dir = tempfile::tempdir().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), ["meta"]).unwrap();
        let mut batch = WriteBatch::new();
        batch.put("a", "1");
        batch.delete("b");
        db.put("b", "old").unwrap();
        let mut wb = encode(&batch);
        wb.put_cf(db.cf_handle("meta").unwrap(), "offset", "9");
        assert_eq!(wb.len(), 3);
        db.write(wb).unwrap();
        assert_eq!(db.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get("b").unwrap(), None);
        let meta = db.cf_handle("meta").unwrap();
        assert_eq!(
            db.get_cf(meta, "offset").unwrap().as_deref(),
            Some(&b"9"[..])
        );
    }
}
