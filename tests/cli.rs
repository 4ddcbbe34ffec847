//! The `weir` binary as a user runs it: separate processes, real signals,
//! `/metrics` read over HTTP.

mod common;

use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use weir_state::{KeyValueStore, RocksDbOptions, RocksDbStore};

#[test]
fn describe_prints_the_topology_as_text_and_mermaid() {
    let out = weir().arg("describe").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(
        s.contains("Source: source-OrderReceived (topics: [OrderReceived])"),
        "{s}"
    );
    assert!(s.contains("Processor: dedup (stores: [dedup])"), "{s}");
    assert!(
        s.contains("Sink: sink-OrderConfirmed (topic: OrderConfirmed)"),
        "{s}"
    );
    assert!(s.contains("changelog: inventory-dedup-changelog"), "{s}");
    assert!(s.contains("```mermaid\nflowchart LR"), "{s}");
    let m = weir()
        .args(["describe", "--mermaid", "--application-id", "shop"])
        .output()
        .unwrap();
    let m = String::from_utf8(m.stdout).unwrap();
    assert!(
        m.contains("shop-dedup-changelog") && !m.contains("Sub-topology"),
        "{m}"
    );
}

#[test]
fn the_readme_run_shows_every_outcome_of_the_sample_orders() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(
        weir()
            .args([
                "run",
                "--sample-orders",
                "--exit-after-samples",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path()),
    );
    assert!(
        stdout.contains("OrderConfirmed: 3 record(s), DeadLetterQueue: 2 record(s)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("no output: dropped as a duplicate").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains("DeadLetterQueue (validation: data.items[0].quantity"),
        "{stdout}"
    );
    assert!(
        stdout.contains("DeadLetterQueue (deserialization:"),
        "{stdout}"
    );
    assert!(
        dir.path().join("state/inventory/dedup").is_dir(),
        "state under ./state by default"
    );
}

#[test]
fn a_job_process_on_a_broker_process_serves_exact_metrics_and_stops_cleanly_on_sigterm() {
    let (_broker, b) = broker(&[]);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut job = job_process(&b, dir.path(), port);
    // /ready turns 200 once the partitions are assigned and restored.
    let deadline = Instant::now() + TIMEOUT;
    while http_get(port, "/ready").map(|(c, _)| c) != Some(200) {
        assert!(Instant::now() < deadline, "job never became ready");
        assert!(job.0.try_wait().unwrap().is_none(), "job exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(port, "/health").unwrap().0, 200);

    let mut inputs: Vec<Input> = numbered_orders("m", "e", 20);
    inputs.push(Input::json("m-1", &order("e-1", "m-1")));
    inputs.push(Input::json("m-2", &order("again", "m-2")));
    inputs.push(Input::json("m-3", &order("e-3", "m-3")));
    inputs.push(Input {
        key: Some("bad".into()),
        value: Some(b"nope".to_vec()),
    });
    inputs.push(Input {
        key: Some("null".into()),
        value: None,
    });
    inputs.push(Input::json("m-x", &order("e-x", "m-y")));
    produce(&b, INPUT, &inputs);
    wait_committed(&b, "inventory");

    // Gauges refresh every second: poll until lag reads 0 everywhere.
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        let (code, body) = http_get(port, "/metrics").unwrap();
        assert_eq!(code, 200);
        let lags: Vec<f64> = (0..4)
            .filter_map(|p| {
                metric(
                    &body,
                    &format!("weir_consumer_lag{{topic=\"OrderReceived\",partition=\"{p}\"}}"),
                )
            })
            .collect();
        if lags.len() == 4 && lags.iter().all(|l| *l == 0.0) {
            break body;
        }
        assert!(Instant::now() < deadline, "lag never reached 0:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        metric(
            &body,
            "weir_records_consumed_total{topic=\"OrderReceived\"}"
        ),
        Some(26.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "weir_duplicates_total{store=\"dedup\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "weir_dlq_records_total{kind=\"deserialization\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "weir_dlq_records_total{kind=\"validation\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "weir_records_produced_total{topic=\"OrderConfirmed\"}"
        ),
        Some(20.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "weir_records_produced_total{topic=\"DeadLetterQueue\"}"
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "weir_records_produced_total{topic=\"inventory-dedup-changelog\"}"
        ),
        Some(20.0),
        "{body}"
    );
    assert!(body.contains("# HELP weir_duplicates_total"), "{body}");

    job.signal("-TERM");
    let status = job.wait_exit(TIMEOUT);
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    // State was flushed with its changelog offset: 20 entries across the partitions.
    let mut entries = 0;
    for p in 0..4 {
        let s = RocksDbStore::open(
            "dedup",
            dir.path().join(format!("inventory/dedup/{p}")),
            RocksDbOptions::default(),
        )
        .unwrap();
        s.for_each(&mut |_, _| {
            entries += 1;
            true
        })
        .unwrap();
    }
    assert_eq!(entries, 40, "20 orders and their expiry index entries");
    assert_eq!(confirmations(&b).len(), 20);
}

#[test]
fn the_broker_writes_its_bootstrap_file_creates_requested_topics_and_exits_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap");
    let (mut broker, b) = broker(&[
        "--topic",
        "Custom:3",
        "--bootstrap-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), b);
    // `weir topics create` of topics that exist needs no Admin API (this
    // broker has none): scripts can run it against any broker.
    let out = run_ok(weir().args(["topics", "create", "--brokers", &b, "--topic", "Custom:3"]));
    assert_eq!(out.trim(), "exists  Custom");
    produce(&b, "Custom", &[Input::json("k", &order("e", "k"))]);
    let got = read_all(&b, "Custom");
    assert_eq!(got.len(), 1);
    broker.signal("-INT");
    assert!(broker.wait_exit(TIMEOUT).success());
}

#[test]
fn bad_configuration_is_refused_with_a_message_not_a_panic() {
    let (_broker, b) = broker(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = weir()
        .args([
            "run",
            "--brokers",
            &b,
            "--metrics-addr",
            "127.0.0.1:0",
            "--state-dir",
            dir.path().to_str().unwrap(),
        ])
        .args(["-X", "partition.assignment.strategy=cooperative-sticky"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("eager rebalance protocol"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = weir()
        .args([
            "run",
            "--brokers",
            &b,
            "--metrics-addr",
            "127.0.0.1:0",
            "--input-topic",
            "Nope",
        ])
        .args(["--state-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("topic \"Nope\" does not exist"), "{err}");

    for (args, says) in [
        (
            &["broker", "--topic", "NoPartitions"][..],
            "NAME:PARTITIONS",
        ),
        // A store of no keys is no memory measurement.
        (
            &["bench", "--steps", "memory", "--memory-keys", "1000,0"],
            "--memory-keys",
        ),
    ] {
        let out = weir().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let out = weir().args(["run", "-X", "novalue"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not key=value"),
        "{err}"
    );
}

#[test]
fn the_benchmark_harness_runs_and_writes_its_results() {
    let (table, json, dir) = bench(&[
        "--orders",
        "3000",
        "--partitions",
        "4",
        "--latency-seconds",
        "1",
        "--latency-rate",
        "2000",
        "--memory-keys",
        "2000,20000",
        "--memory-lookups",
        "1000",
    ]);
    for row in [
        "raw consume → produce pipe, best of 3 (the limit)",
        "weir inventory, at-least-once",
        "weir inventory, exactly-once",
        "raw read of the changelog",
        "weir restore from the changelog, best of 3 (empty state; assignment → running; runs ",
        "weir start → running, restore included",
        "| at-least-once |",
        "| exactly-once |",
        "Memory under many keys",
        "Settled RSS at 20000 keys / at 2000 keys: ",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    assert_eq!(json["input_records"], 3000 + 300 + 300 + 30);
    assert_eq!(json["rows"].as_array().unwrap().len(), 6);
    // The embedded broker keeps no transactional offset commits: the
    // exactly-once store's restore would apply nothing, so it is not timed.
    assert!(
        table.contains("The exactly-once store's restore is not measured"),
        "{table}"
    );
    assert_eq!(json["notes"].as_array().unwrap().len(), 1);
    let latency = json["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 2);
    for l in latency {
        // Confirmations came back with an age; a fifth of a 1 s run is
        // warm-up, left out of the percentiles.
        assert!(l["records"].as_u64().unwrap() > 0, "{l}");
        assert!((l["warmup_s"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{l}");
        assert!(l["p99_ms"].as_f64().unwrap() >= l["p50_ms"].as_f64().unwrap());
        assert!(l["peak_rss_mib"].as_f64().unwrap() > 1.0, "{l}");
    }
    let rows = json["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["rate"].as_f64().unwrap() > 0.0));
    // The throughput rows tell their start-up and steady rate apart; the
    // jobs' steady rate is compared with the raw pipe's. (Outputs are
    // sampled every 50 ms: this small input can pass 10% and 90% before the
    // first look, and then there is no window to rate.)
    for (i, r) in rows[..3].iter().enumerate() {
        // Seen by a sample, up to 50 ms after it landed.
        let first = r["first_output_s"].as_f64().unwrap();
        assert!(
            first > 0.0 && first < r["seconds"].as_f64().unwrap() + 0.1,
            "{r}"
        );
        match r["steady_rate"].as_f64() {
            Some(rate) => {
                assert!(rate > 0.0, "{r}");
                let reference = rows[0]["steady_rate"].as_f64();
                assert_eq!(
                    r["steady_ratio"].is_null(),
                    i == 0 || reference.is_none(),
                    "{r}"
                );
            }
            None => assert!(r["steady_ratio"].is_null(), "{r}"),
        }
    }
    assert!(rows[3..].iter().all(|r| r["steady_rate"].is_null()));
    // Each throughput run's CPU per record; the broker ran in-process, so
    // it is in the figure, and the table says so.
    for r in &rows[..3] {
        let cpu = r["cpu_us_per_record"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu.is_finite(), "{r}");
    }
    assert!(rows[3..].iter().all(|r| r["cpu_us_per_record"].is_null()));
    assert_eq!(json["cpu_includes_broker"].as_bool(), Some(true));
    assert!(table.contains("the broker runs in this process, so its share is included"));
    assert!(json["librdkafka"].as_str().unwrap().starts_with('2'));
    assert!(table
        .contains("| start → first output s | steady records/s | steady ratio | CPU µs/record |"));
    assert!(
        std::fs::read_to_string(dir.path().join("results/results.md"))
            .unwrap()
            .contains("Broker: the embedded broker")
    );
    assert_memory_rows(&json, &[2000, 20000], 1000);
}

/// Runs `weir bench ARGS --out DIR/results` (a directory it must create):
/// its table, its results.json, and DIR (kept while the caller holds it).
fn bench(args: &[&str]) -> (String, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let table = run_ok(weir().arg("bench").args(args).arg("--out").arg(&out));
    let json = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    (table, json, dir)
}

/// The memory step's rows: one per size, in order, each a child process
/// that held the store (its RSS above the empty store's), with the growth
/// from the first size to the last.
fn assert_memory_rows(json: &serde_json::Value, keys: &[u64], lookups: u64) {
    let memory = json["memory"].as_array().unwrap();
    let sizes: Vec<u64> = memory.iter().map(|m| m["keys"].as_u64().unwrap()).collect();
    assert_eq!(sizes, keys);
    for m in memory {
        assert_eq!(m["lookups"].as_u64(), Some(lookups), "{m}");
        let settled = m["settled_rss_mib"].as_f64().unwrap();
        assert!(settled > m["rss_before_mib"].as_f64().unwrap(), "{m}");
        assert!(m["peak_rss_mib"].as_f64().unwrap() >= settled, "{m}");
        assert!(m["disk_mib"].as_f64().unwrap() > 0.0, "{m}");
    }
    let growth = json["memory_growth"].as_f64().unwrap();
    let (first, last) = (&memory[0], &memory[memory.len() - 1]);
    let expected =
        last["settled_rss_mib"].as_f64().unwrap() / first["settled_rss_mib"].as_f64().unwrap();
    assert!((growth - expected).abs() < 1e-9, "{growth} vs {expected}");
}

#[test]
fn the_memory_step_runs_without_a_broker() {
    let (table, json, _out) = bench(&[
        "--steps",
        "memory",
        "--memory-keys",
        "3000,30000",
        "--memory-lookups",
        "500",
    ]);
    assert!(
        table.contains("Settled RSS at 30000 keys / at 3000 keys: "),
        "{table}"
    );
    // No broker step: no broker, no input, no throughput table.
    assert!(!table.contains("Broker:"), "{table}");
    assert!(!table.contains("| measurement |"), "{table}");
    assert_eq!(json["input_records"], 0);
    assert!(json["rows"].as_array().unwrap().is_empty());
    assert_memory_rows(&json, &[3000, 30000], 500);
}
