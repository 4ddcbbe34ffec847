//! The memory step of `weir bench`: the resident memory of a process that
//! holds one dedup store partition with 1,000,000 and with 10,000,000
//! distinct orderIds, under the runtime's bounded RocksDB options (block
//! cache and write buffers).
//!
//! Each size runs in a child process of its own (`weir bench-store-memory`,
//! hidden from `--help`), so one size's peak cannot hide in another's and
//! the benchmark's broker and clients are not counted. The child is the
//! `weir` binary itself, so it runs with the job's allocator and its
//! settings (`src/allocator.rs`). It writes every key as the dedup operator
//! does (a seen entry and its expiry-index entry, in batches of one commit
//! interval's size, each with its changelog offset), then looks up random
//! stored keys, as duplicate checks do, so the block cache is warm when the
//! memory is read.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore, StateError, WriteBatch};
use weir_topology::dedup::{index_key, SeenEntry};

use super::{BenchConfig, BenchError};

/// Seen keys written per store batch (the job writes one batch a commit).
const BATCH_KEYS: u64 = 10_000;

/// One store size's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    /// Distinct orderIds in the store.
    pub keys: u64,
    /// Seconds to write them.
    pub fill_s: f64,
    /// Random lookups of stored keys after the fill.
    pub lookups: u64,
    /// Resident memory right after the fill and the lookups (VmRSS), MiB:
    /// it still holds pages freed in the last seconds, which the allocator
    /// returns to the OS within 3 s (`src/allocator.rs`), so it depends on
    /// how long the lookups took.
    pub rss_mib: f64,
    /// Resident memory once the allocator returned every freed page, MiB:
    /// what the store holds, as the process settles to it. The target's
    /// figure.
    pub settled_rss_mib: f64,
    /// Peak resident memory of the process (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Resident memory with the store open and empty, MiB.
    pub rss_before_mib: f64,
    /// The store's files on disk, MiB.
    pub disk_mib: f64,
    /// RocksDB's own account after the lookups, MiB: block cache, memtables
    /// and table readers outside the cache.
    pub rocksdb_mib: Vec<(String, f64)>,
}

/// The orderId of the `i`-th key, shaped as the load generator's.
fn order_id(i: u64) -> String {
    format!("o-1-{i}")
}

/// Fills a fresh store under `dir` with `keys` orderIds, looks `lookups`
/// of them up and reads the process's memory. Runs in the child process.
pub fn fill_and_measure(keys: u64, lookups: u64, dir: &Path) -> Result<MemoryRow, StateError> {
    let mut store = RocksDbStore::open("dedup", dir, RocksDbOptions::default())?;
    let rss_before = proc_status_mib("self", "VmRSS:");
    let started = Instant::now();
    let first_seen_ms = 1_790_000_000_000i64;
    // An index entry's value: `()` encodes to nothing.
    let unit = weir_state::typed::encode("dedup", &())?;
    let mut batch = WriteBatch::default();
    for i in 0..keys {
        let key = order_id(i).into_bytes();
        let seen = SeenEntry {
            first_seen_ms: first_seen_ms + i as i64,
            first_offset: i as i64,
        };
        // The index entry is local (not logged): one changelog record a key.
        batch.put(index_key(seen.first_seen_ms, &key), &unit);
        batch.put(key, weir_state::typed::encode("dedup", &seen)?);
        if (i + 1) % BATCH_KEYS == 0 {
            batch.set_changelog_offset(i as i64);
            store.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        batch.set_changelog_offset(keys as i64 - 1);
        store.write(batch)?;
    }
    let fill_s = started.elapsed().as_secs_f64();
    // xorshift: random stored keys, the same on every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = order_id(x % keys.max(1));
        if store.get(key.as_bytes())?.is_none() {
            return Err(StateError::CorruptMetadata {
                store: "dedup".into(),
                message: format!("{key} was written but is not found"),
            });
        }
    }
    let rss_mib = proc_status_mib("self", "VmRSS:");
    return_freed_pages();
    let rocksdb_mib = store
        .memory_usage()
        .iter()
        .map(|(name, bytes)| (name.to_string(), *bytes as f64 / 1048576.0))
        .collect();
    Ok(MemoryRow {
        keys,
        fill_s,
        lookups,
        rss_mib,
        settled_rss_mib: proc_status_mib("self", "VmRSS:"),
        // The kernel syncs a thread's RSS counters into VmHWM lazily: it can
        // read below a VmRSS read just before.
        peak_rss_mib: proc_status_mib("self", "VmHWM:").max(rss_mib),
        rss_before_mib: rss_before,
        disk_mib: dir_bytes(dir) as f64 / 1048576.0,
        rocksdb_mib,
    })
}

/// Runs one child process per size in `cfg.memory_keys`.
pub(super) fn measure(
    cfg: &BenchConfig,
    progress: &dyn Fn(&str),
) -> Result<Vec<MemoryRow>, BenchError> {
    let mut rows = Vec::new();
    for &keys in &cfg.memory_keys {
        progress(&format!(
            "memory: a store with {keys} keys, {} lookups",
            cfg.memory_lookups
        ));
        let dir = cfg.work_dir.join(format!("memory-{keys}"));
        let out = std::process::Command::new(&cfg.weir_exe)
            .args(["bench-store-memory", "--keys", &keys.to_string()])
            .args(["--lookups", &cfg.memory_lookups.to_string(), "--dir"])
            .arg(&dir)
            .output()
            .map_err(|e| BenchError::Job(format!("starting {}: {e}", cfg.weir_exe.display())))?;
        // The store is not needed after its figures are read; 10,000,000
        // keys are ~370 MiB on disk.
        let _ = std::fs::remove_dir_all(&dir);
        if !out.status.success() {
            return Err(BenchError::Job(format!(
                "the memory step with {keys} keys failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let row = serde_json::from_slice(&out.stdout).map_err(|e| {
            BenchError::Job(format!(
                "the memory step with {keys} keys printed no result ({e}): {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        })?;
        rows.push(row);
    }
    Ok(rows)
}

/// The last size's settled RSS over the first's (issue 6's target: ≤ 1.3× from
/// 1,000,000 to 10,000,000 keys).
pub fn growth(rows: &[MemoryRow]) -> Option<f64> {
    match rows {
        [first, .., last] if first.settled_rss_mib > 0.0 => {
            Some(last.settled_rss_mib / first.settled_rss_mib)
        }
        _ => None,
    }
}

/// The memory section of the report.
pub(super) fn markdown(rows: &[MemoryRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut s = format!(
        "\nMemory under many keys: one dedup store partition filled with distinct orderIds (a seen entry and an expiry-index entry each, {BATCH_KEYS} keys a batch), then {} lookups of random stored keys; the runtime's bounded RocksDB options ({:?}); each size in a child process of its own, with the `weir` binary's allocator:\n\n",
        first.lookups,
        RocksDbOptions::default()
    );
    s.push_str("| keys | fill s | RSS settled | RSS right after the lookups | peak RSS | RSS with the store empty | on disk | RocksDB's account |\n|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        let rocks: Vec<String> = r
            .rocksdb_mib
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.1}"))
            .collect();
        s.push_str(&format!(
            "| {} | {:.2} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} MiB |\n",
            r.keys,
            r.fill_s,
            r.settled_rss_mib,
            r.rss_mib,
            r.peak_rss_mib,
            r.rss_before_mib,
            r.disk_mib,
            rocks.join(", ")
        ));
    }
    if let (Some(g), Some(last)) = (growth(rows), rows.last()) {
        s.push_str(&format!(
            "\nSettled RSS at {} keys / at {} keys: {g:.2}× (target: ≤ 1.3× from 1,000,000 to 10,000,000 keys). \"Settled\" is after jemalloc returned every freed page (its background thread does within 3 s); right after the lookups the ratio is {:.2}×, which depends on how many pages were freed in the last 3 s.\n",
            last.keys,
            first.keys,
            last.rss_mib / first.rss_mib.max(1e-9)
        ));
    }
    s
}

/// Has jemalloc return every freed page to the OS now (what its background
/// thread does within 3 s), so the settled RSS does not depend on timing.
fn return_freed_pages() {
    #[cfg(all(target_os = "linux", not(target_env = "musl")))]
    {
        // MALLCTL_ARENAS_ALL (4096): every arena.
        let name = c"arena.4096.purge";
        // SAFETY: a NUL-terminated name; the purge reads and writes no
        // value, so both pointer pairs are null with length 0.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            tracing::warn!(rc, "jemalloc did not purge; the settled RSS is not settled");
        }
    }
}

/// A memory field (`VmRSS:`, `VmHWM:`) of `/proc/<process>/status` in MiB
/// (0 where there is none); `process` is a pid or `self`.
pub(super) fn proc_status_mib(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_filled_looked_up_and_measured() {
        let dir = tempfile::tempdir().unwrap();
        let row = fill_and_measure(25_000, 2_000, dir.path()).unwrap();
        assert_eq!((row.keys, row.lookups), (25_000, 2_000));
        assert!(row.settled_rss_mib > row.rss_before_mib, "{row:?}");
        assert!(row.peak_rss_mib >= row.rss_mib, "{row:?}");
        assert!(row.disk_mib > 0.0, "{row:?}");
        // Every key is there as the dedup operator reads it, with its index
        // entry, and the store is at the last key's changelog offset.
        let store = RocksDbStore::open("dedup", dir.path(), RocksDbOptions::default()).unwrap();
        assert_eq!(store.changelog_offset(), Some(24_999));
        for i in [0, 9_999, 10_000, 24_999] {
            let key = order_id(i);
            let seen: SeenEntry =
                weir_state::typed::decode("dedup", &store.get(key.as_bytes()).unwrap().unwrap())
                    .unwrap();
            assert_eq!(seen.first_offset, i as i64);
            let index = index_key(seen.first_seen_ms, key.as_bytes());
            assert!(store.get(&index).unwrap().is_some(), "index of {key}");
        }
        assert!(store.get(order_id(25_000).as_bytes()).unwrap().is_none());
    }
}
