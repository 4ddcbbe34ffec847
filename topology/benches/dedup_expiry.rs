//! What dedup retention costs, on RocksDB (the runtime's store).
//!
//! `cargo bench -p weir-topology --bench dedup_expiry` (1,000,000 keys;
//! `WEIR_BENCH_KEYS=n` to change). Under `cargo test` it runs a 2,000-key
//! smoke pass so the harness keeps working. Prints:
//! - the cost of a new key with and without retention (the time index
//!   doubles the writes of a new key);
//! - one expiry pass when nothing has expired — what every commit pays;
//! - expiring every key, per key, in passes of at most `EXPIRY_BUDGET`;
//! - for scale: one full scan of the store, what an index-less expiry would
//!   pay on every commit;
//! - rebuilding the index after a restore (which applies entries only), per
//!   entry, in steps of at most `REBUILD_BUDGET`.

use std::time::{Duration, Instant};

use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore};
use weir_topology::dedup::{EXPIRY_BUDGET, EXPIRY_INDEX_PREFIX, REBUILD_BUDGET, REBUILD_KEY};
use weir_topology::{
    Record, StoreSpec, StringSerde, TestRecord, Topology, TopologyBuilder, TopologyTestDriver,
};

const T0: i64 = 1_790_000_000_000;
const RETENTION: Duration = Duration::from_secs(3600);

fn topology(retention: Option<Duration>) -> Topology {
    let b = TopologyBuilder::new();
    b.add_store(StoreSpec::key_value("seen"));
    b.source("in", StringSerde, StringSerde)
        .dedup_with_retention("dedup", "seen", retention, |r: &Record<String, String>| {
            r.key.clone().map(String::into_bytes)
        })
        .to("out", StringSerde, StringSerde);
    b.build().expect("the bench topology builds")
}

fn driver(t: &Topology, dir: &std::path::Path) -> TopologyTestDriver {
    TopologyTestDriver::with_stores(t, |spec| {
        Box::new(
            RocksDbStore::open(&spec.name, dir.join(&spec.name), RocksDbOptions::default())
                .expect("the store opens"),
        )
    })
}

/// Pipes `n` new keys, one millisecond apart; returns seconds taken.
fn fill(d: &mut TopologyTestDriver, n: usize) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let mut r = TestRecord::new(&format!("order-{i:09}"), "{}");
        r.timestamp = T0 + i as i64;
        d.pipe(r).expect("a new key passes");
        if i % 100_000 == 0 {
            let _ = d.read_output("out"); // keep the driver's buffer small
        }
    }
    started.elapsed().as_secs_f64()
}

fn per(secs: f64, n: usize) -> String {
    let us = secs * 1e6 / n.max(1) as f64;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} µs")
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("WEIR_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let work = tempfile::tempdir().expect("a temp dir");

    let plain = topology(None);
    let mut d = driver(&plain, &work.path().join("plain"));
    let no_retention = fill(&mut d, n);
    drop(d);

    // A restored store: entries without index entries, and the mark restore
    // writes with them. The retaining operator rebuilds the index.
    let restored = work.path().join("plain").join("seen");
    let mut store = RocksDbStore::open("seen", &restored, RocksDbOptions::default())
        .expect("the store reopens");
    let mut mark = weir_state::WriteBatch::default();
    mark.put(REBUILD_KEY, b"");
    store.write(mark).expect("the mark is written");
    drop(store);
    let mut d = driver(&topology(Some(RETENTION)), &work.path().join("plain"));
    let started = Instant::now();
    let mut steps = 0;
    while d.store_get("seen", REBUILD_KEY).is_some() {
        d.punctuate(T0).expect("a rebuild step");
        steps += 1;
        assert!(
            steps <= n / REBUILD_BUDGET + 2,
            "the rebuild makes progress"
        );
    }
    let rebuild = started.elapsed().as_secs_f64();
    drop(d);
    let store = RocksDbStore::open("seen", &restored, RocksDbOptions::default())
        .expect("the store reopens");
    let mut indexed = 0;
    store
        .scan_from(EXPIRY_INDEX_PREFIX, &mut |k, _| {
            let index = k.starts_with(EXPIRY_INDEX_PREFIX);
            indexed += usize::from(index);
            index
        })
        .expect("an index scan");
    assert_eq!(indexed, n, "every entry indexed");
    drop(store);

    let dir = work.path().join("retained");
    let t = topology(Some(RETENTION));
    let mut d = driver(&t, &dir);
    let with_retention = fill(&mut d, n);
    assert_eq!(
        d.store_len("seen"),
        2 * n as u64,
        "a key and its index entry"
    );

    // Nothing has expired yet: the pass reads one index entry and stops.
    // The first passes run while RocksDB still flushes and compacts what
    // the fill wrote (its background threads share the cores, and an
    // iterator spans more files): timed apart from the passes after them.
    let early_passes = 1000;
    let later_passes = if full { 200_000 } else { 1000 };
    let passes = |count: usize, d: &mut TopologyTestDriver| {
        let started = Instant::now();
        for _ in 0..count {
            d.punctuate(T0 + n as i64).expect("an idle pass");
        }
        started.elapsed().as_secs_f64()
    };
    let idle_early = passes(early_passes, &mut d);
    let idle_later = passes(later_passes, &mut d);
    assert_eq!(d.store_len("seen"), 2 * n as u64);
    drop(d);

    // What a scan-based expiry would pay on every commit.
    let store = RocksDbStore::open("seen", dir.join("seen"), RocksDbOptions::default())
        .expect("the store reopens");
    let started = Instant::now();
    let mut scanned = 0u64;
    store
        .scan_from(b"", &mut |_, _| {
            scanned += 1;
            true
        })
        .expect("a full scan");
    let scan = started.elapsed().as_secs_f64();
    drop(store);

    // Everything expires.
    let mut d = driver(&t, &dir);
    let now = T0 + RETENTION.as_millis() as i64 + n as i64 + 1;
    let started = Instant::now();
    let mut passes = 0;
    while d.store_len("seen") > 0 {
        d.punctuate(now).expect("an expiry pass");
        passes += 1;
        assert!(passes <= n / EXPIRY_BUDGET + 2, "expiry makes progress");
    }
    let expiry = started.elapsed().as_secs_f64();
    let tombstones = d.changelog("seen").iter().filter(|c| c.1.is_none()).count();
    assert_eq!(
        tombstones, n,
        "a tombstone for each key (the index is local)"
    );

    println!("# dedup retention cost (RocksDB, {n} keys, commit after every record)\n");
    println!("| measurement | total | per unit |");
    println!("|---|---:|---:|");
    println!(
        "| new key, no retention | {no_retention:.2} s | {} per key |",
        per(no_retention, n)
    );
    println!(
        "| new key, with retention (data + time index) | {with_retention:.2} s | {} per key |",
        per(with_retention, n)
    );
    println!(
        "| expiry pass, nothing expired (every commit), the first {early_passes} after the fill | {idle_early:.3} s | {} per pass |",
        per(idle_early, early_passes)
    );
    println!(
        "| expiry pass, nothing expired, the next {later_passes} | {idle_later:.3} s | {} per pass |",
        per(idle_later, later_passes)
    );
    println!(
        "| expiring all keys ({passes} passes of ≤ {EXPIRY_BUDGET}) | {expiry:.2} s | {} per key |",
        per(expiry, n)
    );
    println!(
        "| full scan of the store (index-less expiry, per commit) | {scan:.3} s | {} entries |",
        scanned
    );
    println!(
        "| index rebuild after a restore ({steps} steps of ≤ {REBUILD_BUDGET}) | {rebuild:.2} s | {} per entry |",
        per(rebuild, n)
    );
}
