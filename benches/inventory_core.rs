//! CPU per record of the Inventory topology, with no broker: the work a
//! stream thread does for each input record between the consumer and the
//! producer (decode, validate, dedup against the store, build the
//! confirmation or the dead letter, serialize), on the RocksDB store the
//! runtime uses and on the in-memory store (the difference is the store).
//!
//!   cargo bench --bench inventory_core [-- ORDERS [rocksdb|memory]]
//!
//! (default: 200,000 orders, both stores). Under `cargo test` it runs a
//! 2,000-order smoke pass, one run per store, so the harness keeps working.
//!
//! The input is the benchmark's: the load generator's orders with 10%
//! redeliveries, 10% resends and 1% poison, piped in intervals of 10,000
//! records with a commit after each (the runtime commits once per
//! interval). Each store kind runs three times on a fresh store (once in
//! the smoke pass); the table shows every run. On one core the job's
//! end-to-end rate cannot exceed 1e9 / (this figure + the Kafka clients'
//! cost per record).

use std::time::Instant;

use weir::inventory::{inventory_topology, InventoryTopics};
use weir::load::{self, LoadConfig};
use weir::state::{KeyValueStore, RocksDbOptions, RocksDbStore};
use weir::topology::{TestRecord, TopologyTestDriver};

include!("../src/allocator.rs");

const INTERVAL: usize = 10_000;

fn main() {
    // `cargo bench` passes `--bench`: only the other arguments are ours.
    let full = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let orders: usize = args
        .first()
        .map(|a| a.parse().expect("ORDERS is a number"))
        .unwrap_or(if full { 200_000 } else { 2_000 });
    let runs = if full { 3 } else { 1 };
    let kinds: Vec<&str> = match args.get(1).map(String::as_str) {
        None => vec!["rocksdb", "memory"],
        Some(k @ ("rocksdb" | "memory")) => vec![k],
        Some(other) => panic!("unknown store {other:?}: rocksdb or memory"),
    };
    let plan = load::plan(&LoadConfig {
        orders,
        duplicate_ratio: 0.1,
        resend_ratio: 0.1,
        poison_ratio: 0.01,
        rate: 0.0,
        seed: 1,
    });
    let inputs: Vec<TestRecord> = plan
        .into_iter()
        .map(|p| TestRecord {
            key: Some(p.key.into_bytes()),
            value: p.value,
            ..TestRecord::default()
        })
        .collect();
    let topology = inventory_topology(&InventoryTopics::default(), "inventory")
        .expect("the inventory topology builds");
    println!(
        "Inventory topology, no broker: {} input records, commit every {INTERVAL}. Machine: {}.",
        inputs.len(),
        weir::bench::machine()
    );
    println!("| store | run | seconds | ns/record | records/s | confirmed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for kind in kinds {
        for run in 1..=runs {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut driver = match kind {
                "rocksdb" => TopologyTestDriver::with_stores(&topology, |spec| {
                    let store = RocksDbStore::open(
                        &spec.name,
                        dir.path().join(&spec.name),
                        RocksDbOptions::default(),
                    )
                    .expect("open the store");
                    Box::new(store) as Box<dyn KeyValueStore>
                }),
                _ => TopologyTestDriver::new(&topology),
            };
            let mut confirmed = 0;
            let started = Instant::now();
            for chunk in inputs.chunks(INTERVAL) {
                driver
                    .pipe_all(chunk.iter().cloned())
                    .expect("the topology processes its input");
                confirmed += driver.read_output("OrderConfirmed").len();
                driver.read_output("DeadLetterQueue");
            }
            let secs = started.elapsed().as_secs_f64();
            // Each unique order is confirmed once: a figure for a topology
            // that dropped or doubled work would mean nothing.
            assert_eq!(confirmed, orders, "one confirmation per unique order");
            let n = inputs.len() as f64;
            println!(
                "| {kind} | {run} | {secs:.2} | {:.0} | {:.0} | {confirmed} |",
                secs * 1e9 / n,
                n / secs
            );
        }
    }
}
