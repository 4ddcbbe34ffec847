//! Memory of a dedup store partition as its keys grow, with the runtime's
//! bounded RocksDB options (block cache and write buffers): RSS at
//! 1,000,000 and 10,000,000 orderIds.
//!
//! `cargo bench --workspace --bench memory` (under `cargo test`: a smoke pass
//! at 10,000 and 100,000 keys). Each size runs in a child process of its own,
//! so one size's peak cannot hide in another's. Each key is written as the
//! Inventory job writes it (an entry and a time-index entry, committed in
//! batches), then 1,000,000 lookups of random keys warm the block cache, as
//! duplicate checks would (10,000 in the smoke pass). The allocator is the
//! one the `weir` binary uses (jemalloc).

use std::process::Command;
use std::time::Instant;

use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore, WriteBatch};

// The allocator and settings the `weir` binary uses, from the same file.
include!("../../src/allocator.rs");

const INDEX_PREFIX: &[u8] = b"\x00weir.expiry\x00";
const BATCH: usize = 10_000;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
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

/// Fills a store with `n` keys, looks `lookups` up; prints one
/// tab-separated result line.
fn child(n: u64, lookups: usize) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut store = RocksDbStore::open("dedup", dir.path(), RocksDbOptions::default())
        .expect("the store opens");
    let base_kib = status_kib("VmRSS:");
    let started = Instant::now();
    let mut batch = WriteBatch::default();
    for i in 0..n {
        let key = format!("o-{i:010}").into_bytes();
        let ts = 1_790_000_000_000u64 + i;
        let mut value = Vec::with_capacity(16);
        value.extend_from_slice(&ts.to_le_bytes());
        value.extend_from_slice(&i.to_le_bytes());
        let mut index = INDEX_PREFIX.to_vec();
        index.extend_from_slice(&ts.to_be_bytes());
        index.extend_from_slice(&key);
        batch.put(key, value);
        batch.put(index, Vec::new());
        if batch.len() >= 2 * BATCH {
            batch.set_changelog_offset(2 * i as i64);
            store.write(std::mem::take(&mut batch)).expect("a batch");
        }
    }
    store.write(batch).expect("the last batch");
    let fill = started.elapsed().as_secs_f64();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut found = 0;
    for _ in 0..lookups {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("o-{:010}", x % n);
        found += usize::from(store.get(key.as_bytes()).expect("a get").is_some());
    }
    assert_eq!(found, lookups, "every key is there");
    let rocks: Vec<String> = store
        .memory_usage()
        .iter()
        .map(|(name, bytes)| format!("{name} {:.1}", *bytes as f64 / 1048576.0))
        .collect();
    eprintln!("{n} keys, RocksDB MiB: {}", rocks.join(", "));
    println!(
        "{n}\t{fill:.1}\t{}\t{}\t{}\t{}",
        status_kib("VmRSS:"),
        status_kib("VmHWM:"),
        base_kib,
        dir_bytes(dir.path())
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            args[i + 1].parse().expect("a key count"),
            args[i + 2].parse().expect("a lookup count"),
        );
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let lookups: usize = if full { 1_000_000 } else { 10_000 };
    let sizes: &[u64] = if full {
        &[1_000_000, 10_000_000]
    } else {
        &[10_000, 100_000]
    };
    let exe = std::env::current_exe().expect("own path");
    let mut rss = Vec::new();
    println!(
        "# dedup store memory (RocksDB, default bounded options: {:?})\n",
        RocksDbOptions::default()
    );
    println!(
        "| keys | fill s | RSS after fill + {lookups} lookups | peak RSS | RSS before | on disk |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let out = Command::new(&exe)
            .args(["--child", &n.to_string(), &lookups.to_string()])
            .output()
            .expect("the child runs");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.trim().split('\t').collect();
        let mib = |kib: &str| kib.parse::<f64>().unwrap_or(0.0) / 1024.0;
        rss.push(mib(f[2]));
        println!(
            "| {} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB |",
            f[0],
            f[1],
            mib(f[2]),
            mib(f[3]),
            mib(f[4]),
            f[5].parse::<f64>().unwrap_or(0.0) / 1048576.0
        );
    }
    println!(
        "\nRSS at {} keys / RSS at {} keys: {:.2}×",
        sizes[1],
        sizes[0],
        rss[1] / rss[0].max(1e-9)
    );
}
