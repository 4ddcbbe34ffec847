//! One store partition in its own RocksDB instance.
//!
//! Data lives in the default column family; the changelog offset lives in a
//! `__weir_meta__` column family and is written in the same RocksDB
//! `WriteBatch` as the data it describes (the Quix Streams design), so a crash
//! can never leave the two out of step.
//!
//! No write-ahead log (Kafka Streams' choice too): the changelog is the
//! store's log. Both column families are flushed together (`atomic_flush`),
//! so what survives a killed process is the state as of one flush, data and
//! changelog offset in step, and restore replays the changelog from that
//! offset. The cost of a kill is a longer replay (what the memtables held, at
//! most two write buffers per partition); the gain is every write without the
//! WAL's copy and `write()` call: the WAL was ~19% of a restore's RocksDB
//! writes (perf). A clean close flushes (RocksDB's own close does, and
//! [`KeyValueStore::flush`]), so a clean restart replays nothing.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteOptions, DB};

use crate::{KeyValueStore, StateError, WriteBatch};

const META_CF: &str = "__weir_meta__";
const CHANGELOG_OFFSET_KEY: &[u8] = b"changelog_offset";
/// Write buffer of the meta column family: one offset entry, rewritten at
/// each commit (~30,000 commits fill it).
const META_WRITE_BUFFER_SIZE: usize = 1 << 20;

/// Memory knobs for one store partition. The defaults keep a partition under
/// ~40 MiB whatever the number of keys, so memory is bounded by the number of
/// partitions a process owns, not by the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RocksDbOptions {
    /// Size of one memtable before it is flushed to an SST file.
    pub write_buffer_size: usize,
    /// How many memtables may exist at once.
    pub max_write_buffer_number: i32,
    /// LRU block cache for reads.
    pub block_cache_size: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            write_buffer_size: 8 << 20,
            max_write_buffer_number: 2,
            block_cache_size: 16 << 20,
        }
    }
}

/// A RocksDB-backed [`KeyValueStore`] for one store partition.
pub struct RocksDbStore {
    /// The store's name, for errors and metrics.
    name: String,
    /// Where the instance lives, so `wipe` can remove and reopen it.
    path: PathBuf,
    /// Options used to (re)open the instance.
    options: RocksDbOptions,
    /// The open instance; `None` only for the moment `wipe` has it closed.
    db: Option<DB>,
    /// Cached copy of the offset in `__weir_meta__`, read once at open.
    changelog_offset: Option<i64>,
}

impl std::fmt::Debug for RocksDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStore")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("changelog_offset", &self.changelog_offset)
            .finish()
    }
}

impl RocksDbStore {
    /// Opens (creating if missing) the store partition at `path`.
    pub fn open(
        name: impl Into<String>,
        path: impl AsRef<Path>,
        options: RocksDbOptions,
    ) -> Result<Self, StateError> {
        let name = name.into();
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|source| StateError::Io {
            store: name.clone(),
            op: "create directory",
            path: path.clone(),
            source,
        })?;
        let db = Self::open_db(&name, &path, options)?;
        let meta = db.cf_handle(META_CF).expect("meta column family exists");
        let changelog_offset =
            match db
                .get_cf(meta, CHANGELOG_OFFSET_KEY)
                .map_err(|source| StateError::RocksDb {
                    store: name.clone(),
                    op: "read changelog offset",
                    source,
                })? {
                None => None,
                Some(bytes) => Some(i64::from_be_bytes(bytes.as_slice().try_into().map_err(
                    |_| StateError::CorruptMetadata {
                        store: name.clone(),
                        message: format!("changelog offset has {} bytes, expected 8", bytes.len()),
                    },
                )?)),
            };
        Ok(Self {
            name,
            path,
            options,
            db: Some(db),
            changelog_offset,
        })
    }

    fn open_db(name: &str, path: &Path, options: RocksDbOptions) -> Result<DB, StateError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(256);
        // RocksDB's own log goes to the process's log (warnings and errors,
        // naming the store and its directory), not to a `LOG` file per store
        // partition: a partition's open created nine files, one of them that
        // log (renamed to `LOG.old.*` at every reopen), and wrote ~500 lines
        // of option dump into it. Measured (131 fresh partitions opened one
        // after another on tmpfs, so CPU only): 193–232 ms with the file,
        // 164–181 ms without. On this machine's ext4 volume, where each file
        // creation is slow, run-to-run spread was wider than the difference.
        let (store, dir) = (name.to_string(), path.display().to_string());
        db_opts.set_info_logger(rocksdb::InfoLogger::new_callback_logger(
            rocksdb::LogLevel::Warn,
            move |level, msg| match level {
                rocksdb::LogLevel::Warn => {
                    tracing::warn!(store = %store, path = %dir, "rocksdb: {}", msg.trim_end())
                }
                rocksdb::LogLevel::Error | rocksdb::LogLevel::Fatal => {
                    tracing::error!(store = %store, path = %dir, "rocksdb: {}", msg.trim_end())
                }
                // The option dump at open, and anything below the level.
                _ => {}
            },
        ));
        // RocksDB reserves 4 MiB for a new MANIFEST by default; a store
        // partition's MANIFEST stays a few KiB, and a process may own
        // hundreds of partitions.
        db_opts.set_manifest_preallocation_size(64 << 10);
        // Without a WAL, only flushes persist: data and meta must be
        // flushed as one, or a crash could keep an offset whose data was lost.
        db_opts.set_atomic_flush(true);
        // RocksDB loads a DB's table files at open on up to 16 threads,
        // started and joined per column family even when there are no files:
        // 32 thread starts per store partition. Partitions open on
        // `weir-open` threads already, and one has few files. Measured with
        // 131 fresh partitions opened one after another on tmpfs: 0.26 s →
        // 0.20 s.
        db_opts.set_max_file_opening_threads(1);
        let mut data_opts = Options::default();
        data_opts.set_write_buffer_size(options.write_buffer_size);
        data_opts.set_max_write_buffer_number(options.max_write_buffer_number);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(options.block_cache_size));
        // Index and filter blocks live in the (bounded) block cache, so
        // memory stays flat as keys grow; they are partitioned so a lookup
        // loads a 4 KiB piece, not a whole filter. Measured: with one
        // unpartitioned filter per SST, at 1,000,000 dedup keys every miss
        // re-read and re-checksummed a multi-MiB filter block (190 µs a key
        // on expiry; a few µs with partitions).
        table.set_bloom_filter(10.0, false);
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        data_opts.set_block_based_table_factory(&table);
        data_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // The meta column family holds one small entry: a small buffer.
        // (With a WAL, RocksDB reserved disk for it in blocks of 1.1 × the
        // largest write buffer: with RocksDB's default 64 MiB here, ~72 MiB
        // per store partition from its first write.)
        let mut meta_opts = Options::default();
        meta_opts.set_write_buffer_size(META_WRITE_BUFFER_SIZE);
        let cfs = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, data_opts),
            ColumnFamilyDescriptor::new(META_CF, meta_opts),
        ];
        DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StateError::Open {
            store: name.to_string(),
            path: path.to_path_buf(),
            source,
        })
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("store is open outside of wipe")
    }

    /// RocksDB's own account of its memory, in bytes: (block cache in use,
    /// of which pinned; memtables; table readers outside the cache).
    pub fn memory_usage(&self) -> [(&'static str, u64); 4] {
        let p = |name: &str| {
            self.db()
                .property_int_value(name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        [
            ("block cache", p("rocksdb.block-cache-usage")),
            ("pinned in cache", p("rocksdb.block-cache-pinned-usage")),
            ("memtables", p("rocksdb.cur-size-all-mem-tables")),
            ("table readers", p("rocksdb.estimate-table-readers-mem")),
        ]
    }

    /// The directory of this store partition.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rocks_err(&self, op: &'static str) -> impl FnOnce(rocksdb::Error) -> StateError + '_ {
        move |source| StateError::RocksDb {
            store: self.name.clone(),
            op,
            source,
        }
    }
}

impl KeyValueStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db().get(key).map_err(self.rocks_err("get"))
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        // In key order: RocksDB's memtable (a skip list) inserts a run of
        // ascending keys from where the previous insert stopped instead of
        // searching from the top (measured: skip-list search was ~40% of a
        // restore). Stable, so two writes to one key keep their order; one
        // pass when the caller sorted already.
        let mut batch = batch;
        batch.sort_by_key();
        let mut wb = crate::rocksdb_batch::encode(&batch);
        if let Some(offset) = batch.changelog_offset() {
            let meta = self
                .db()
                .cf_handle(META_CF)
                .expect("meta column family exists");
            wb.put_cf(meta, CHANGELOG_OFFSET_KEY, offset.to_be_bytes());
        }
        // No WAL: see the module doc.
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db()
            .write_opt(wb, &opts)
            .map_err(self.rocks_err("write"))?;
        if let Some(offset) = batch.changelog_offset() {
            self.changelog_offset = Some(offset);
        }
        Ok(())
    }

    fn changelog_offset(&self) -> Option<i64> {
        self.changelog_offset
    }

    fn approximate_entries(&self) -> u64 {
        self.db()
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn scan_from(
        &self,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        let mode = IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.db().iterator(mode) {
            let (k, v) = item.map_err(self.rocks_err("iterate"))?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StateError> {
        let db = self.db();
        let data = db
            .cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .expect("default column family exists");
        let meta = db.cf_handle(META_CF).expect("meta column family exists");
        db.flush_cfs_opt(&[&data, &meta], &rocksdb::FlushOptions::default())
            .map_err(self.rocks_err("flush"))
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        // Close first: the directory's lock is released only when the handle drops.
        self.db = None;
        std::fs::remove_dir_all(&self.path).map_err(|source| StateError::Io {
            store: self.name.clone(),
            op: "remove directory",
            path: self.path.clone(),
            source,
        })?;
        self.db = Some(Self::open_db(&self.name, &self.path, self.options)?);
        self.changelog_offset = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> RocksDbStore {
        RocksDbStore::open("dedup", dir, RocksDbOptions::default()).unwrap()
    }

    /// Set in the child process of the crash test: the store directory.
    const CRASH_CHILD: &str = "WEIR_ROCKSDB_CRASH_CHILD";
    /// Batches the crash test's child writes before it aborts.
    const CRASH_BATCHES: i64 = 400;

    fn crash_key(batch: i64, entry: usize) -> Vec<u8> {
        format!("k{batch:05}-{entry:02}").into_bytes()
    }

    /// What a killed process leaves: the store as of its last flush, data
    /// and changelog offset in step. The child writes batches (20 entries
    /// and the changelog offset each) through small write buffers, so
    /// RocksDB flushes while it writes, then aborts with a memtable still
    /// unflushed. Without atomic flushes the data column family's flushes
    /// would persist entries ahead of the (rarely flushed) offset.
    #[test]
    fn a_killed_process_leaves_data_and_changelog_offset_in_step() {
        let options = RocksDbOptions {
            write_buffer_size: 64 << 10,
            ..RocksDbOptions::default()
        };
        if let Ok(dir) = std::env::var(CRASH_CHILD) {
            let mut store = RocksDbStore::open("dedup", &dir, options).unwrap();
            for i in 0..CRASH_BATCHES {
                let mut b = WriteBatch::default();
                for e in 0..20 {
                    b.put(crash_key(i, e), vec![b'v'; 100]);
                }
                b.set_changelog_offset(i + 1);
                store.write(b).unwrap();
            }
            std::process::abort(); // no close: nothing flushed on the way out
        }
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rocksdb::tests::a_killed_process_leaves_data_and_changelog_offset_in_step",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let store = RocksDbStore::open("dedup", dir.path(), options).unwrap();
        let kept = store.changelog_offset().unwrap_or(0);
        for i in 0..CRASH_BATCHES {
            for e in 0..20 {
                assert_eq!(
                    store.get(&crash_key(i, e)).unwrap().is_some(),
                    i < kept,
                    "batch {i} entry {e} against offset {kept}"
                );
            }
        }
        assert!(kept > 0, "the child's flushes persisted some batches");
    }

    #[test]
    fn data_and_changelog_offset_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            assert_eq!(store.changelog_offset(), None);
            let mut b = WriteBatch::new();
            b.put("a", "1");
            b.put("b", "2");
            b.delete("a");
            b.set_changelog_offset(42);
            store.write(b).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.changelog_offset(), Some(42));
        assert_eq!(store.get(b"a").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    /// Bytes the files under `dir` take on disk (allocated blocks, which
    /// include space RocksDB reserves ahead of writing).
    fn allocated_bytes(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .filter(|m| m.is_file())
            .map(|m| m.blocks() * 512)
            .sum()
    }

    #[test]
    fn a_store_partition_with_little_data_takes_little_disk() {
        // RocksDB reserves (fallocate) its WAL in blocks of 1.1 × the
        // largest write buffer of any column family, and 4 MiB for a new
        // MANIFEST. The offset's column family once had RocksDB's default
        // 64 MiB buffer: every store partition took ~75 MiB of disk from
        // its first write, 19 GiB for a 2,000,000-order benchmark's 262
        // partitions; then the data's write buffer × 1.1 (~9 MiB). Without
        // a WAL nothing is reserved: ~130 KiB.
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut b = WriteBatch::new();
        b.put("order-1", "seen");
        b.set_changelog_offset(1);
        store.write(b).unwrap();
        let used = allocated_bytes(dir.path());
        let limit = 1 << 20;
        assert!(
            used < limit,
            "one entry took {used} bytes of disk (limit {limit})"
        );
    }

    #[test]
    fn rocksdb_keeps_no_log_file_in_a_store_partition() {
        // Its warnings and errors go to the process's log instead; a log
        // file per partition, re-created and renamed at every open, was one
        // of the nine files an open created.
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        drop(open(dir.path()));
        let logs: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("LOG"))
            .collect();
        assert!(logs.is_empty(), "RocksDB wrote {logs:?}");
    }

    #[test]
    fn a_batch_without_offset_keeps_the_previous_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut b = WriteBatch::new();
        b.set_changelog_offset(7);
        store.write(b).unwrap();
        let mut b = WriteBatch::new();
        b.put("k", "v");
        store.write(b).unwrap();
        assert_eq!(store.changelog_offset(), Some(7));
    }

    #[test]
    fn writes_to_one_key_in_a_batch_apply_in_their_order() {
        // A restore batch can hold a key's put and its later tombstone (or
        // the reverse); the batch is applied in key order, the two in theirs.
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("p0"));
        let mut b = WriteBatch::new();
        b.put(b"z", b"1");
        b.put(b"gone", b"1");
        b.delete(b"gone");
        b.delete(b"back");
        b.put(b"back", b"2");
        b.put(b"a", b"3");
        store.write(b).unwrap();
        assert_eq!(store.get(b"gone").unwrap(), None);
        assert_eq!(store.get(b"back").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get(b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(store.get(b"z").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn wipe_removes_data_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        let mut store = open(&path);
        let mut b = WriteBatch::new();
        b.put("k", "v");
        b.set_changelog_offset(3);
        store.write(b).unwrap();
        store.wipe().unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!(store.changelog_offset(), None);
        drop(store);
        let store = open(&path);
        assert_eq!(store.changelog_offset(), None);
        assert_eq!(store.get(b"k").unwrap(), None);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let err = RocksDbStore::open("dedup", dir.path(), RocksDbOptions::default()).unwrap_err();
        assert!(matches!(err, StateError::Open { .. }), "{err}");
        assert!(err.to_string().contains("dedup"), "{err}");
    }

    #[test]
    fn for_each_visits_keys_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut b = WriteBatch::new();
        for k in ["c", "a", "b"] {
            b.put(k, k);
        }
        store.write(b).unwrap();
        let mut seen = Vec::new();
        store
            .for_each(&mut |k, _| {
                seen.push(String::from_utf8(k.to_vec()).unwrap());
                true
            })
            .unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
        let mut tail = Vec::new();
        store
            .scan_from(b"b", &mut |k, _| {
                tail.push(k.to_vec());
                true
            })
            .unwrap();
        assert_eq!(tail, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(store.approximate_entries(), 3);
    }
}
