//! Metrics, readiness, dashboards and the deployment files: checked against
//! a real run, a real Prometheus and `promtool`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use serde_json::Value;
use weir::job::Job;
use weir::observability::MetricsServer;
use weir_topology::dedup::SeenEntry;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A tool the test command installs (Debian's `prometheus` package).
fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is missing: run scripts/test.sh (it installs Debian's prometheus package)"
    );
    Command::new(name)
}

/// Changelog records as another instance would have written them.
fn changelog_records(n: usize, prefix: &str) -> Vec<Input> {
    // Seen now: restore derives their expiry index, and entries seen long
    // ago would expire at once.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (0..n)
        .map(|i| Input {
            key: Some(format!("{prefix}-{i}")),
            value: Some(
                weir_state::typed::encode(
                    "dedup",
                    &SeenEntry {
                        first_seen_ms: now_ms,
                        first_offset: i as i64,
                    },
                )
                .unwrap(),
            ),
        })
        .collect()
}

#[test]
fn ready_is_503_while_restoring_and_200_once_restored() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    produce(
        &b,
        "inventory-dedup-changelog",
        &changelog_records(60_000, "pre"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = job_config(&b, dir.path());
    // Small restore fetches: many round trips, so the restore takes a while.
    cfg.kafka.push((
        "restore.consumer.max.partition.fetch.bytes".into(),
        "4096".into(),
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(MetricsServer::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let port = server.local_addr().port();
    let job = Job::start(&cfg).unwrap();
    let handle = weir::observability::prometheus().unwrap();
    rt.spawn(server.serve(handle, job.readiness(), std::future::pending()));

    let mut saw_restoring = false;
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        let (code, body) = http_get(port, "/ready").expect("server answers");
        let v: Value = serde_json::from_str(&body).unwrap();
        if code == 200 {
            break v;
        }
        assert_eq!(code, 503, "{body}");
        if v["state"] == "Restoring" {
            assert!(v["restoringTasks"].as_u64().unwrap() >= 1, "{body}");
            saw_restoring = true;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        saw_restoring,
        "/ready said 503 with state Restoring during the restore"
    );
    assert_eq!(body["state"], "Running");
    assert_eq!(body["restoringTasks"], 0);
    assert_eq!(http_get(port, "/health").unwrap().0, 200);
    // The restored store answers: a restored key is a duplicate.
    produce(
        &b,
        INPUT,
        &[
            Input::json("pre-7", &order("e", "pre-7")),
            Input::json("new", &order("e2", "new")),
        ],
    );
    wait_committed(&b, "inventory");
    job.stop().unwrap();
    assert_eq!(confirmations(&b).keys().collect::<Vec<_>>(), ["new"]);
}

#[test]
fn deployment_files_parse_and_pass_promtool() {
    for (what, file) in [
        ("config", "prometheus.yml"),
        ("rules", "prometheus-alerts.yml"),
    ] {
        run_ok(tool("promtool").arg("check").arg(what).arg(repo(file)));
    }

    let yaml = |p: &str| -> Value {
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo(p)).unwrap())
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for s in ["kafka", "topics", "weir", "orders", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "compose has {s}");
    }
    assert!(compose["services"]["kafka"]["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert_eq!(
        compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft mode"
    );
    assert_eq!(compose["services"]["weir"]["build"], ".");
    assert!(repo("Dockerfile").is_file());
    // Every file or folder a service mounts from the repo exists.
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if let Some(rel) = src.strip_prefix("./") {
                assert!(repo(rel).exists(), "{name} mounts {src}, which is missing");
            }
        }
    }
    let prom = yaml("prometheus.yml");
    let jobs: Vec<&str> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_name"].as_str().unwrap())
        .collect();
    assert!(jobs.contains(&"weir-inventory"), "{jobs:?}");
    let ds = yaml("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["uid"], "prometheus");
    let dash = yaml("grafana/provisioning/dashboards/weir.yml");
    assert_eq!(
        dash["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );

    for (title, exprs) in dashboard_panels() {
        assert!(!exprs.is_empty(), "panel {title:?} has no query");
    }
}

/// (panel title, its PromQL expressions) of every dashboard in grafana/dashboards.
fn dashboard_panels() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            d["panels"][0]["datasource"]["uid"],
            "prometheus",
            "{}",
            path.display()
        );
        for p in d["panels"].as_array().unwrap() {
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string())
                .collect();
            out.push((p["title"].as_str().unwrap().to_string(), exprs));
        }
    }
    out
}

fn alert_exprs() -> Vec<(String, String)> {
    let rules: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo("prometheus-alerts.yml")).unwrap())
            .unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns the result vector.
fn query(port: u16, promql: &str) -> Vec<Value> {
    let (code, body) = http_get(port, &format!("/api/v1/query?query={}", urlencode(promql)))
        .expect("prometheus answers");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{promql}: {body}"));
    assert_eq!(code, 200, "{promql}: {body}");
    assert_eq!(v["status"], "success", "{promql}: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Sum of a metric's lag over partitions 0..4, once all four are exported.
fn total_lag(body: &str) -> Option<f64> {
    let lags: Vec<f64> = (0..4)
        .filter_map(|p| {
            metric(
                body,
                &format!("weir_consumer_lag{{topic=\"OrderReceived\",partition=\"{p}\"}}"),
            )
        })
        .collect();
    (lags.len() == 4).then(|| lags.iter().sum())
}

/// Starts Prometheus scraping the job on `port`, with our alert rules.
fn start_prometheus(dir: &Path, port: u16) -> (Proc, u16) {
    let prom_port = free_port();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: weir-inventory\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n",
        repo("prometheus-alerts.yml").display()
    );
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let proc = Proc(
        tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (proc, prom_port)
}

/// Polls an instant query until it returns a series.
fn wait_query(port: u16, promql: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !matches!(http_get(port, "/-/ready"), Some((200, _))) || query(port, promql).is_empty() {
        assert!(
            Instant::now() < deadline,
            "prometheus never answered {promql}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_real_run_exports_every_metric_and_a_real_prometheus_answers_every_panel_and_alert() {
    let (_broker, b) = broker(&[]);
    // State another instance left in the changelog: the job restores it.
    let restored = changelog_records(400, "old");
    produce(&b, "inventory-dedup-changelog", &restored);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _job = job_process(&b, dir.path(), port);
    // Prometheus scrapes from before the traffic, as in production.
    let prom_dir = tempfile::tempdir().unwrap();
    let (_prom, prom) = start_prometheus(prom_dir.path(), port);
    wait_query(prom, "weir_assigned_partitions == 4");

    let mut inputs: Vec<Input> = numbered_orders("p", "e", 60);
    for i in 0..9 {
        inputs.push(Input::json(
            &format!("p-{i}"),
            &order(&format!("e-{i}"), &format!("p-{i}")),
        ));
    }
    inputs.push(Input::json("old-3", &order("e-old", "old-3"))); // restored: a duplicate
    inputs.push(Input {
        key: Some("junk".into()),
        value: Some(b"\x00\x01".to_vec()),
    });
    inputs.push(Input::json("p-1000", &order("e-x", "other")));
    inputs.push(Input::json("p-1001", &order("e-y", "other-2")));
    produce(&b, INPUT, &inputs);
    wait_committed(&b, "inventory");

    // Gauges refresh every second: wait for lag 0 and the committed store size.
    let deadline = Instant::now() + TIMEOUT;
    let body = loop {
        if let Some((200, body)) = http_get(port, "/metrics") {
            let entries: f64 = body
                .lines()
                .filter(|l| l.starts_with("weir_store_entries{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            // Each order has its entry and its expiry index entry (derived
            // by restore for the restored ones).
            if total_lag(&body) == Some(0.0) && entries == (2 * restored.len() + 120) as f64 {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "lag never reached 0 or the store never held every order"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let m = |name: &str| {
        metric(&body, name).unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
    };
    let sum = |prefix: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        m("weir_records_consumed_total{topic=\"OrderReceived\"}"),
        inputs.len() as f64
    );
    assert_eq!(
        m("weir_records_produced_total{topic=\"OrderConfirmed\"}"),
        60.0
    );
    assert_eq!(
        m("weir_records_produced_total{topic=\"DeadLetterQueue\"}"),
        3.0
    );
    assert_eq!(
        m("weir_records_produced_total{topic=\"inventory-dedup-changelog\"}"),
        60.0,
        "each confirmation logs its entry (the expiry index is local)"
    );
    assert_eq!(m("weir_dedup_expired_total{store=\"dedup\"}"), 0.0);
    assert_eq!(m("weir_duplicates_total{store=\"dedup\"}"), 10.0);
    assert_eq!(m("weir_dlq_records_total{kind=\"deserialization\"}"), 1.0);
    assert_eq!(m("weir_dlq_records_total{kind=\"validation\"}"), 2.0);
    assert_eq!(m("weir_dlq_records_total{kind=\"processing\"}"), 0.0);
    assert_eq!(
        m("weir_end_to_end_latency_seconds_count{topic=\"OrderConfirmed\"}"),
        60.0
    );
    assert!(m("weir_process_latency_seconds_count") >= 1.0);
    assert!(m("weir_commit_latency_seconds_count") >= 1.0);
    assert!(m("weir_commits_total") >= 1.0);
    assert_eq!(
        m("weir_transactions_total{result=\"committed\"}"),
        0.0,
        "at-least-once runs no transactions"
    );
    assert_eq!(m("weir_transactions_total{result=\"aborted\"}"), 0.0);
    assert_eq!(m("weir_retries_total{operation=\"commit\"}"), 0.0);
    assert_eq!(
        m("weir_restore_records_total{store=\"dedup\"}"),
        restored.len() as f64
    );
    assert_eq!(sum("weir_restore_remaining_records{"), 0.0);
    assert!(m("weir_restore_duration_seconds_count{store=\"dedup\"}") >= 1.0);
    assert!(
        body.contains("weir_restore_rate_records_per_second{"),
        "{body}"
    );
    assert_eq!(
        sum("weir_store_entries{"),
        (2 * restored.len() + 120) as f64
    );
    assert!(m("weir_rebalances_total") >= 1.0);
    assert_eq!(m("weir_assigned_partitions"), 4.0);
    for l in body.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !l.contains("orderId") && !l.contains("p-1"),
            "labels stay bounded: {l}"
        );
    }

    // promtool lints the exposition.
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus has the final values, with enough samples for rate() over 1m.
    wait_query(
        prom,
        &format!("weir_records_consumed_total == {}", inputs.len()),
    );
    wait_query(
        prom,
        "count_over_time(weir_records_consumed_total[1m]) >= 5",
    );
    let mut empty = BTreeMap::new();
    for (title, exprs) in dashboard_panels() {
        let series: usize = exprs.iter().map(|e| query(prom, e).len()).sum();
        if series == 0 {
            empty.insert(title, exprs);
        }
    }
    assert!(empty.is_empty(), "panels with no series: {empty:#?}");
    let alerts = alert_exprs();
    for (_, expr) in &alerts {
        query(prom, expr); // evaluates without error
    }
    let dlq = &alerts
        .iter()
        .find(|(a, _)| a == "WeirDeadLetters")
        .unwrap()
        .1;
    assert!(
        !query(prom, dlq).is_empty(),
        "WeirDeadLetters fires after dead letters"
    );
    let down = &alerts.iter().find(|(a, _)| a == "WeirJobDown").unwrap().1;
    assert!(query(prom, down).is_empty(), "the job is up");
}
