//! The system around the job: the Order service over HTTP, the load
//! generator's manifest against the job's outputs, dead-letter tools and
//! their replay loop guard, and the one-command demo.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use common::process::*;
use common::*;
use rdkafka::Message;
use serde_json::{json, Value};
use weir::load::Manifest;
use weir::orders::{router, OrderService, OrdersConfig};

/// The Order service in-process on a free port, publishing to `brokers`.
fn order_service(rt: &tokio::runtime::Runtime, brokers: &str, publish_timeout: Duration) -> u16 {
    let mut cfg = OrdersConfig::new(brokers);
    cfg.publish_timeout = publish_timeout;
    let service = OrderService::new(cfg).unwrap();
    let metrics = weir::observability::prometheus().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, router(service, metrics)).await });
    port
}

fn body(order_id: Option<&str>, qty: i64) -> Vec<u8> {
    let mut v = json!({"customerId": "c-1", "items": [{"productId": "p-1", "quantity": qty, "price": 3.5}], "currency": "USD"});
    if let Some(id) = order_id {
        v["orderId"] = json!(id);
    }
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn an_accepted_order_lands_once_with_its_envelope_and_bad_requests_publish_nothing() {
    let broker = cluster(4);
    let b = broker.bootstrap_servers().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = order_service(&rt, &b, Duration::from_secs(5));

    let (code, resp) = http_post(
        port,
        "/orders",
        &body(Some("h-1"), 2),
        &[("X-Correlation-Id", "corr-9")],
    );
    assert_eq!(code, 202, "{resp}");
    let resp: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(resp["orderId"], "h-1");
    let (code, generated) = http_post(port, "/orders", &body(None, 1), &[]);
    assert_eq!(code, 202, "{generated}");
    let generated: Value = serde_json::from_str(&generated).unwrap();

    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), ""),
        (b"[1,2]".to_vec(), ""),
        (body(Some("h-2"), 0), "items[0].quantity"),
        (body(Some(""), 1), "orderId"),
        (serde_json::to_vec(&json!({"orderId": "h-3", "items": [{"productId": "p", "quantity": 1, "price": 1}]})).unwrap(), "customerId"),
        (serde_json::to_vec(&json!({"orderId": "h-4", "customerId": "c", "items": []})).unwrap(), "items"),
        (serde_json::to_vec(&json!({"orderId": "h-5", "customerId": "c", "items": [{"productId": "p", "quantity": 1, "price": -2}]})).unwrap(), "items[0].price"),
    ];
    for (b_, field) in &bad {
        let (code, resp) = http_post(port, "/orders", b_, &[]);
        assert_eq!(code, 400, "{resp}");
        let v: Value = serde_json::from_str(&resp).unwrap();
        assert_eq!(v["field"], *field, "{resp}");
        assert!(v["message"].as_str().unwrap().starts_with(field), "{resp}");
    }
    let mut huge = body(Some("h-6"), 1);
    huge.splice(
        1..1,
        format!("\"pad\":\"{}\",", "x".repeat(1_100_000)).into_bytes(),
    );
    let (code, _) = http_post(port, "/orders", &huge, &[]);
    assert_eq!(code, 413);

    // Exactly the two accepted orders are on the topic.
    let records = read_all(&b, INPUT);
    assert_eq!(records.len(), 2, "only accepted orders are published");
    let m = records
        .iter()
        .find(|m| key_of(m) == "h-1")
        .expect("h-1 published keyed by orderId");
    let e = json_of(m);
    assert_eq!(e["eventId"], resp["eventId"]);
    assert_eq!(e["eventType"], "OrderReceived");
    assert_eq!(e["version"], 1);
    assert_eq!(e["correlationId"], "corr-9");
    assert_eq!(e["data"]["orderId"], "h-1");
    assert_eq!(e["data"]["items"][0]["quantity"], 2);
    assert!(chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).is_ok());
    let g = records
        .iter()
        .find(|m| key_of(m) == generated["orderId"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        json_of(g)["data"]["orderId"],
        generated["orderId"],
        "a generated orderId is the key and in the data"
    );
    assert!(
        !json_of(g)["correlationId"].as_str().unwrap().is_empty(),
        "a correlationId is made when none is given"
    );

    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, "weir_orders_http_requests_total{status=\"202\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "weir_orders_http_requests_total{status=\"400\"}"),
        Some(bad.len() as f64),
        "{metrics}"
    );
    assert!(metric(&metrics, "weir_orders_publish_latency_seconds_count").unwrap() >= 2.0);
    assert_eq!(http_get(port, "/health").unwrap().0, 200);
}

#[test]
fn with_the_broker_down_the_service_answers_503_and_never_publishes_that_order_later() {
    let broker = cluster(1);
    let b = broker.bootstrap_servers().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = order_service(&rt, &b, Duration::from_millis(1500));
    assert_eq!(
        http_post(port, "/orders", &body(Some("warm-up"), 1), &[]).0,
        202
    );

    broker.broker_down(1).unwrap();
    let (code, resp) = http_post(port, "/orders", &body(Some("d-1"), 1), &[]);
    assert_eq!(code, 503, "{resp}");
    assert!(resp.contains("not published"), "{resp}");
    broker.broker_up(1).unwrap();

    // Same key, same producer, same partition: had the 503 order been sent
    // after all, it would sit before this one. The producer reconnects with
    // a backoff, so the client retries 503s, as any client should.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (code, resp) = http_post(port, "/orders", &body(Some("d-1"), 7), &[]);
        if code == 202 {
            break;
        }
        assert_eq!(code, 503, "{resp}");
        assert!(
            std::time::Instant::now() < deadline,
            "the service never recovered"
        );
    }
    let on_topic: Vec<Value> = read_all(&b, INPUT)
        .iter()
        .map(json_of)
        .filter(|e| e["data"]["orderId"] == "d-1")
        .collect();
    assert_eq!(
        on_topic.len(),
        1,
        "one accepted order, none of the {attempts} refused ones: {on_topic:?}"
    );
    assert_eq!(on_topic[0]["data"]["items"][0]["quantity"], 7);
}

#[test]
fn the_load_manifest_matches_what_the_job_produces() {
    let (_broker, b) = broker(&[]);
    let dir = tempfile::tempdir().unwrap();
    let _job = job_process(&b, &dir.path().join("state"), 0);
    let manifest_path = dir.path().join("manifest.json");
    let stdout = run_ok(
        weir()
            .args([
                "load",
                "--brokers",
                &b,
                "--orders",
                "1500",
                "--duplicate-ratio",
                "0.15",
                "--resend-ratio",
                "0.1",
            ])
            .args([
                "--poison-ratio",
                "0.03",
                "--seed",
                "7",
                "--manifest",
                manifest_path.to_str().unwrap(),
            ]),
    );
    assert!(
        stdout.contains("unique orders") && stdout.contains("1500"),
        "{stdout}"
    );
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest.sent, 1500 + 225 + 150 + 45);
    wait_committed(&b, "inventory");

    let expected: BTreeSet<String> = manifest.confirmed.iter().cloned().collect();
    let got = confirmations(&b);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(got.values().all(|n| *n == 1));
    let expected_dead: BTreeMap<(i64, i64), String> = manifest
        .poison
        .iter()
        .map(|p| ((i64::from(p.partition), p.offset), p.kind.clone()))
        .collect();
    let got_dead: BTreeMap<(i64, i64), String> = read_all(&b, DLQ)
        .iter()
        .map(|m| {
            let v = json_of(m);
            (
                (
                    v["source"]["partition"].as_i64().unwrap(),
                    v["source"]["offset"].as_i64().unwrap(),
                ),
                v["error"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got_dead, expected_dead);
}

fn dlq_cmd(b: &str, args: &[&str]) -> String {
    run_ok(weir().args(["dlq", "--brokers", b]).args(args))
}

#[test]
fn dlq_tools_list_show_and_replay_with_a_loop_guard() {
    let (_broker, b) = broker(&[]);
    let dir = tempfile::tempdir().unwrap();
    let _job = job_process(&b, dir.path(), 0);
    // A record an earlier job version wrongly rejected (the test hook): its
    // original is a valid order.
    let fixed = serde_json::to_vec(&order("e-fixed", "fixed-1")).unwrap();
    let envelope = json!({
        "eventId": "x", "eventType": "OrderProcessingFailed", "version": 1, "timestamp": "2026-11-22T00:00:00Z",
        "error": {"kind": "processing", "message": "inventory service unavailable"},
        "source": {"topic": INPUT, "partition": 0, "offset": 0, "key": "fixed-1", "timestamp": "2026-11-22T00:00:00Z"},
        "originalEvent": null,
        "originalPayload": base64::engine::general_purpose::STANDARD.encode(&fixed),
        "originalHeaders": [{"key": "trace", "value": base64::engine::general_purpose::STANDARD.encode("t-1")}],
        "service": {"name": "weir", "applicationId": "inventory", "version": "0.0.1"}
    });
    produce(&b, DLQ, &[Input::json("fixed-1", &envelope)]);
    // A record that always fails.
    let mut bad = order("e-bad", "bad-1");
    bad["data"]["items"][0]["quantity"] = json!(0);
    produce(&b, INPUT, &[Input::json("bad-1", &bad)]);
    wait_committed(&b, "inventory");
    let dead_count = |n: usize| {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while read_all(&b, DLQ).len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the job did not dead-letter the replay"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    dead_count(2);

    let list = dlq_cmd(&b, &["list"]);
    assert!(list.contains("2 dead letter(s)"), "{list}");
    assert!(
        list.contains("processing") && list.contains("validation"),
        "{list}"
    );
    let lines: Vec<Value> = dlq_cmd(&b, &["list", "--json", "--kind", "validation"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["source"]["topic"], INPUT);
    let show = dlq_cmd(&b, &["show", "1"]);
    assert!(
        show.contains("data.items[0].quantity must be an integer >= 1")
            && show.contains("\"orderId\": \"bad-1\""),
        "{show}"
    );

    // Replay the fixed record: confirmed once, even when replayed twice.
    let dry = dlq_cmd(&b, &["replay", "--kind", "processing", "--dry-run"]);
    assert!(dry.contains("would replay 1"), "{dry}");
    for _ in 0..2 {
        let out = dlq_cmd(&b, &["replay", "--kind", "processing"]);
        assert!(out.contains("replayed 1"), "{out}");
        wait_committed(&b, "inventory");
    }
    assert_eq!(confirmations(&b).get("fixed-1"), Some(&1));
    let replayed = read_all(&b, INPUT)
        .into_iter()
        .filter(|m| key_of(m) == "fixed-1")
        .collect::<Vec<_>>();
    assert_eq!(replayed.len(), 2);
    assert_eq!(
        replayed[0].payload().unwrap(),
        fixed.as_slice(),
        "exact original bytes"
    );
    assert_eq!(
        header(&replayed[0], "trace").as_deref(),
        Some("t-1"),
        "original headers"
    );
    assert_eq!(
        header(&replayed[0], "weir.replay.count").as_deref(),
        Some("1")
    );

    // The always-failing record: replay it along its chain until the guard stops it.
    let max = 2;
    let mut dlq_offset = 1;
    for round in 1..=max {
        let out = dlq_cmd(
            &b,
            &[
                "replay",
                "--kind",
                "validation",
                "--from-offset",
                &dlq_offset.to_string(),
                "--max-replays",
                &max.to_string(),
            ],
        );
        assert!(out.contains("replayed 1"), "round {round}: {out}");
        wait_committed(&b, "inventory");
        dead_count(2 + round);
        let last = read_all(&b, DLQ).pop().unwrap();
        dlq_offset = last.offset();
        let env = json_of(&last);
        let count = env["originalHeaders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["key"] == "weir.replay.count")
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(count["value"].as_str().unwrap())
                .unwrap(),
            round.to_string().as_bytes()
        );
    }
    let before = read_all(&b, INPUT).len();
    let out = dlq_cmd(
        &b,
        &[
            "replay",
            "--kind",
            "validation",
            "--from-offset",
            &dlq_offset.to_string(),
            "--max-replays",
            &max.to_string(),
        ],
    );
    assert!(
        out.contains("replayed 0") && out.contains("refused by the loop guard 1"),
        "{out}"
    );
    assert_eq!(
        read_all(&b, INPUT).len(),
        before,
        "the guard publishes nothing"
    );

    let err = weir()
        .args(["dlq", "--brokers", &b, "replay", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("RFC 3339"));
}

#[test]
fn the_demo_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_ok(
        weir()
            .args([
                "demo",
                "--exit-after-summary",
                "--listen",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path()),
    );
    assert_eq!(s.matches("\n  202 ").count(), 4, "{s}");
    assert_eq!(s.matches("\n  400 ").count(), 1, "{s}");
    assert!(s.contains("OrderConfirmed (3):"), "{s}");
    assert!(
        s.contains("DeadLetterQueue (1):") && s.contains("legacy-1"),
        "{s}"
    );
}
