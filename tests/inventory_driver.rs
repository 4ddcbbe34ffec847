//! The Inventory topology through the test driver: every validity rule,
//! duplicates by redelivery and by resend, rejected-then-fixed orders, and
//! the exact shape of confirmations and dead letters. No broker.

use base64::Engine as _;
use serde_json::{json, Value};
use weir::inventory::dead_letter::MAX_DEAD_LETTER_BYTES;
use weir::inventory::events::derived_event_id;
use weir::inventory::{inventory_topology, InventoryTopics};
use weir_topology::{OutputRecord, TestRecord, TopologyTestDriver};

fn driver() -> TopologyTestDriver {
    let t = inventory_topology(&InventoryTopics::default(), "inventory").unwrap();
    TopologyTestDriver::new(&t)
}

fn event(event_id: &str, order_id: &str) -> Value {
    json!({
        "eventId": event_id,
        "eventType": "OrderReceived",
        "version": 1,
        "timestamp": "2026-11-22T10:00:00.000Z",
        "correlationId": "corr-1",
        "data": {
            "orderId": order_id,
            "customerId": "c-1",
            "items": [{"productId": "p-1", "quantity": 2, "price": 9.99}],
            "currency": "USD"
        }
    })
}

fn pipe(d: &mut TopologyTestDriver, key: &str, v: &Value) -> bool {
    d.pipe_kv(key, serde_json::to_vec(v).unwrap()).unwrap()
}

fn confirmed(d: &mut TopologyTestDriver) -> Vec<OutputRecord> {
    d.read_output("OrderConfirmed")
}

fn dead(d: &mut TopologyTestDriver) -> Vec<Value> {
    d.read_output("DeadLetterQueue")
        .iter()
        .map(|r| r.value_json().expect("dead letters are JSON"))
        .collect()
}

#[test]
fn a_valid_new_order_is_confirmed_with_a_derived_event_id() {
    let mut d = driver();
    let e = event("e-1", "o-1");
    assert!(pipe(&mut d, "o-1", &e));
    let out = confirmed(&mut d);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key_str(), Some("o-1"));
    let v = out[0].value_json().unwrap();
    assert_eq!(v["eventType"], "OrderConfirmed");
    assert_eq!(v["version"], 1);
    assert_eq!(v["eventId"], derived_event_id("e-1"));
    assert_eq!(v["causationId"], "e-1");
    assert_eq!(v["correlationId"], "corr-1");
    assert_eq!(v["data"], e["data"]);
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    // The same source event always confirms with the same id.
    assert_eq!(derived_event_id("e-1"), derived_event_id("e-1"));
    assert_ne!(derived_event_id("e-1"), derived_event_id("e-2"));
}

#[test]
fn without_a_correlation_id_the_source_event_id_correlates() {
    let mut d = driver();
    let mut e = event("e-9", "o-9");
    e.as_object_mut().unwrap().remove("correlationId");
    pipe(&mut d, "o-9", &e);
    assert_eq!(
        confirmed(&mut d)[0].value_json().unwrap()["correlationId"],
        "e-9"
    );
}

#[test]
fn redelivery_and_resend_are_duplicates_with_no_output() {
    let mut d = driver();
    let first = event("e-1", "o-1");
    pipe(&mut d, "o-1", &first);
    pipe(&mut d, "o-1", &first); // redelivery: same eventId
    let mut resend = event("e-2", "o-1"); // resend: new eventId, same orderId
    resend["data"]["items"][0]["quantity"] = json!(5);
    pipe(&mut d, "o-1", &resend);
    assert_eq!(confirmed(&mut d).len(), 1);
    assert!(dead(&mut d).is_empty());
    assert_eq!(
        d.store_len("dedup"),
        2,
        "the entry and its expiry index entry"
    );
    assert!(d.store_get("dedup", b"o-1").is_some());
}

#[test]
fn an_order_rejected_then_sent_correctly_is_confirmed() {
    let mut d = driver();
    let mut bad = event("e-1", "o-7");
    bad["data"]["items"][0]["quantity"] = json!(0);
    pipe(&mut d, "o-7", &bad);
    assert_eq!(dead(&mut d).len(), 1);
    assert!(
        d.store_get("dedup", b"o-7").is_none(),
        "rejected orders never enter the store"
    );
    pipe(&mut d, "o-7", &event("e-2", "o-7"));
    assert_eq!(confirmed(&mut d).len(), 1);
}

/// Each rule: (what to break, the field the message must name).
#[test]
fn every_validity_rule_routes_to_the_dead_letter_topic_naming_the_field() {
    type Breaker = fn(&mut Value);
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "wrong eventType",
            |e| e["eventType"] = json!("OrderShipped"),
            "eventType",
        ),
        (
            "missing eventType",
            |e| {
                e.as_object_mut().unwrap().remove("eventType");
            },
            "eventType",
        ),
        ("version 2", |e| e["version"] = json!(2), "version"),
        (
            "version as string",
            |e| e["version"] = json!("1"),
            "version",
        ),
        ("empty eventId", |e| e["eventId"] = json!(""), "eventId"),
        (
            "missing eventId",
            |e| {
                e.as_object_mut().unwrap().remove("eventId");
            },
            "eventId",
        ),
        (
            "missing data",
            |e| {
                e.as_object_mut().unwrap().remove("data");
            },
            "data",
        ),
        ("data not an object", |e| e["data"] = json!([1]), "data"),
        (
            "empty orderId",
            |e| e["data"]["orderId"] = json!(""),
            "data.orderId",
        ),
        (
            "orderId a number",
            |e| e["data"]["orderId"] = json!(7),
            "data.orderId",
        ),
        (
            "missing customerId",
            |e| {
                e["data"].as_object_mut().unwrap().remove("customerId");
            },
            "data.customerId",
        ),
        (
            "empty customerId",
            |e| e["data"]["customerId"] = json!("  "),
            "data.customerId",
        ),
        ("no items", |e| e["data"]["items"] = json!([]), "data.items"),
        (
            "items not an array",
            |e| e["data"]["items"] = json!({}),
            "data.items",
        ),
        (
            "quantity 0",
            |e| e["data"]["items"][0]["quantity"] = json!(0),
            "data.items[0].quantity",
        ),
        (
            "quantity negative",
            |e| e["data"]["items"][0]["quantity"] = json!(-1),
            "data.items[0].quantity",
        ),
        (
            "quantity fractional",
            |e| e["data"]["items"][0]["quantity"] = json!(1.5),
            "data.items[0].quantity",
        ),
        (
            "quantity a string",
            |e| e["data"]["items"][0]["quantity"] = json!("2"),
            "data.items[0].quantity",
        ),
        (
            "price negative",
            |e| e["data"]["items"][0]["price"] = json!(-0.01),
            "data.items[0].price",
        ),
        (
            "price a string",
            |e| e["data"]["items"][0]["price"] = json!("9.99"),
            "data.items[0].price",
        ),
        (
            "missing price",
            |e| {
                e["data"]["items"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("price");
            },
            "data.items[0].price",
        ),
        (
            "item not an object",
            |e| e["data"]["items"] = json!([3]),
            "data.items[0]",
        ),
    ];
    for (what, brk, field) in cases {
        let mut d = driver();
        let mut e = event("e-1", "o-1");
        brk(&mut e);
        assert!(!pipe(&mut d, "o-1", &e), "{what}: should fail");
        assert!(confirmed(&mut d).is_empty(), "{what}: nothing confirmed");
        let dl = dead(&mut d);
        assert_eq!(dl.len(), 1, "{what}");
        assert_eq!(dl[0]["error"]["kind"], "validation", "{what}");
        let msg = dl[0]["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(field),
            "{what}: message {msg:?} should name {field}"
        );
        assert_eq!(
            dl[0]["originalEvent"], e,
            "{what}: the parsed original is kept"
        );
    }
}

#[test]
fn second_item_errors_name_its_index_and_price_zero_is_valid() {
    let mut d = driver();
    let mut e = event("e-1", "o-1");
    e["data"]["items"] = json!([
        {"productId": "p", "quantity": 1, "price": 0},
        {"productId": "q", "quantity": 0, "price": 1}
    ]);
    pipe(&mut d, "o-1", &e);
    let dl = dead(&mut d);
    assert!(dl[0]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("data.items[1].quantity"));
    e["data"]["items"][1]["quantity"] = json!(3);
    assert!(pipe(&mut d, "o-1", &e));
}

#[test]
fn a_key_that_differs_from_the_order_id_is_invalid_and_no_key_is_fine() {
    let mut d = driver();
    pipe(&mut d, "o-2", &event("e-1", "o-1"));
    let dl = dead(&mut d);
    assert_eq!(dl[0]["error"]["kind"], "validation");
    assert!(dl[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not match data.orderId"));
    let ok = TestRecord {
        key: None,
        value: Some(serde_json::to_vec(&event("e-2", "o-1")).unwrap()),
        ..Default::default()
    };
    assert!(d.pipe(ok).unwrap());
}

#[test]
fn an_infinite_total_is_a_processing_failure() {
    let mut d = driver();
    let mut e = event("e-1", "o-1");
    e["data"]["items"] = json!([{"productId": "p", "quantity": 10, "price": 1.7e308}]);
    pipe(&mut d, "o-1", &e);
    let dl = dead(&mut d);
    assert_eq!(dl[0]["error"]["kind"], "processing");
    assert!(d.store_get("dedup", b"o-1").is_none());
}

#[test]
fn undecodable_values_are_deserialization_failures_with_exact_bytes() {
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("null value", None, "null"),
        ("empty bytes", Some(vec![]), "empty"),
        ("non-UTF-8", Some(vec![0xff, 0xfe, b'{']), "UTF-8"),
        (
            "broken JSON",
            Some(b"{\"eventId\":".to_vec()),
            "invalid JSON",
        ),
        ("JSON array", Some(b"[1,2,3]".to_vec()), "an array"),
        ("JSON string", Some(b"\"hello\"".to_vec()), "a string"),
    ];
    for (what, value, needle) in cases {
        let mut d = driver();
        let rec = TestRecord {
            key: Some(b"o-1".to_vec()),
            value: value.clone(),
            ..Default::default()
        };
        assert!(!d.pipe(rec).unwrap(), "{what}");
        let out = d.read_output("DeadLetterQueue");
        assert_eq!(out.len(), 1, "{what}");
        assert_eq!(out[0].key_str(), Some("o-1"), "{what}: original key");
        let v = out[0].value_json().unwrap();
        assert_eq!(v["eventType"], "OrderProcessingFailed");
        assert_eq!(v["error"]["kind"], "deserialization", "{what}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{what}: {}",
            v["error"]["message"]
        );
        let expected_payload = value
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        assert_eq!(
            v["originalPayload"].as_str().map(str::to_string),
            expected_payload,
            "{what}"
        );
        if what.starts_with("JSON") {
            assert!(
                !v["originalEvent"].is_null(),
                "{what}: JSON that parsed is kept parsed"
            );
        } else {
            assert!(v["originalEvent"].is_null(), "{what}");
        }
        assert_eq!(v["source"]["topic"], "OrderReceived");
        assert_eq!(v["source"]["partition"], 0);
        assert_eq!(v["source"]["offset"], 0);
        assert_eq!(v["source"]["key"], "o-1");
        assert_eq!(v["service"]["name"], "weir");
        assert_eq!(v["service"]["applicationId"], "inventory");
        assert_eq!(
            out[0].headers.last_str("__streams.errors.exception"),
            Some("weir.DeserializationError")
        );
        assert_eq!(
            out[0].headers.last_str("__streams.errors.partition"),
            Some("0")
        );
    }
}

#[test]
fn a_non_utf8_key_is_kept_as_base64() {
    let mut d = driver();
    let rec = TestRecord {
        key: Some(vec![0xc3, 0x28]),
        value: Some(b"{}".to_vec()),
        ..Default::default()
    };
    assert!(!d.pipe(rec).unwrap());
    let out = d.read_output("DeadLetterQueue");
    assert_eq!(out[0].key.as_deref(), Some(&[0xc3, 0x28][..]));
    let v = out[0].value_json().unwrap();
    assert_eq!(v["error"]["kind"], "deserialization");
    assert!(v["source"]["key"].is_null());
    assert_eq!(v["source"]["keyBase64"], "wyg=");
}

#[test]
fn a_payload_of_several_hundred_kb_is_routed_whole() {
    let mut d = driver();
    let mut e = event("e-1", "o-1");
    e["data"]["notes"] = json!("n".repeat(300_000));
    e["data"]["items"][0]["quantity"] = json!(0);
    let bytes = serde_json::to_vec(&e).unwrap();
    d.pipe_kv("o-1", bytes.clone()).unwrap();
    let out = d.read_output("DeadLetterQueue");
    let raw = out[0].value.as_ref().unwrap();
    assert!(raw.len() <= MAX_DEAD_LETTER_BYTES, "{} bytes", raw.len());
    let v: Value = serde_json::from_slice(raw).unwrap();
    // 300 kB parsed + 400 kB of base64 fits: both forms are kept.
    assert_eq!(v["originalEvent"], e);
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(v["originalPayload"].as_str().unwrap())
            .unwrap(),
        bytes
    );
}

#[test]
fn an_oversized_original_drops_the_parsed_copy_then_truncates_and_says_so() {
    // ~500 kB: both forms do not fit, the bytes alone do.
    let mut d = driver();
    let mut e = event("e-1", "o-1");
    e["data"]["notes"] = json!("n".repeat(500_000));
    e["version"] = json!(3);
    let bytes = serde_json::to_vec(&e).unwrap();
    d.pipe_kv("o-1", bytes.clone()).unwrap();
    let v = d.read_output("DeadLetterQueue")[0].value_json().unwrap();
    assert!(v["originalEvent"].is_null());
    assert_eq!(v["originalEventDropped"], true);
    assert!(v.get("originalPayloadTruncated").is_none());
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(v["originalPayload"].as_str().unwrap())
            .unwrap(),
        bytes
    );

    // ~2 MB: even the bytes do not fit.
    let big: Vec<u8> = std::iter::repeat_n(b'x', 2_000_000).collect();
    d.pipe_kv("o-2", big.clone()).unwrap();
    let out = d.read_output("DeadLetterQueue");
    let raw = out[0].value.as_ref().unwrap();
    assert!(raw.len() <= MAX_DEAD_LETTER_BYTES, "{} bytes", raw.len());
    let v: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(v["originalPayloadTruncated"], true);
    assert_eq!(v["originalPayloadBytes"], 2_000_000);
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&big)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v["originalPayloadSha256"], sha);
    let kept = base64::engine::general_purpose::STANDARD
        .decode(v["originalPayload"].as_str().unwrap())
        .unwrap();
    assert!(
        kept.len() > 500_000 && big.starts_with(&kept),
        "a prefix of {} bytes is kept",
        kept.len()
    );
}

#[test]
fn the_dedup_changelog_carries_one_record_per_confirmed_order() {
    let mut d = driver();
    pipe(&mut d, "o-1", &event("e-1", "o-1"));
    pipe(&mut d, "o-1", &event("e-2", "o-1"));
    pipe(&mut d, "o-2", &event("e-3", "o-2"));
    // The default retention keeps a time index in the store; it is local,
    // so the changelog has exactly one record per confirmed order.
    assert_eq!(
        d.store_len("dedup"),
        4,
        "two entries and their index entries"
    );
    let keys: Vec<_> = d
        .changelog("dedup")
        .iter()
        .map(|(k, _, off)| (String::from_utf8(k.clone()).unwrap(), *off))
        .collect();
    assert_eq!(keys, [("o-1".to_string(), 0), ("o-2".to_string(), 2)]);
}

#[test]
fn an_expired_order_id_leaves_store_and_changelog_and_is_confirmed_again() {
    use std::time::Duration;
    let day = 86_400_000;
    let t = weir::inventory::inventory_topology_with(
        &InventoryTopics::default(),
        "inventory",
        Some(Duration::from_millis(day as u64)),
    )
    .unwrap();
    let mut d = TopologyTestDriver::new(&t);
    let at = |key: &str, event: &str, ts: i64| TestRecord {
        key: Some(key.as_bytes().to_vec()),
        value: Some(serde_json::to_vec(&event_json(event, key)).unwrap()),
        timestamp: ts,
        ..Default::default()
    };
    d.pipe(at("old", "e-1", 1_000)).unwrap();
    d.pipe(at("new", "e-2", 1_000 + day / 2)).unwrap();
    assert_eq!(confirmed(&mut d).len(), 2);
    assert_eq!(d.store_len("dedup"), 4, "two entries and their time index");

    d.punctuate(1_000 + day - 1).unwrap(); // not yet
    assert!(d.store_get("dedup", b"old").is_some());
    d.punctuate(1_000 + day + 1).unwrap();
    assert!(d.store_get("dedup", b"old").is_none(), "expired");
    assert!(d.store_get("dedup", b"new").is_some(), "not yet expired");
    assert_eq!(d.store_len("dedup"), 2);
    let tombstones: Vec<_> = d
        .changelog("dedup")
        .iter()
        .filter(|(_, v, _)| v.is_none())
        .map(|(k, _, _)| k.clone())
        .collect();
    assert_eq!(
        tombstones,
        [b"old".to_vec()],
        "the entry (its index is local)"
    );

    // Documented behaviour: after its retention an orderId is new again.
    d.pipe(at("old", "e-3", 2 * day)).unwrap();
    let again = confirmed(&mut d);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].value_json().unwrap()["causationId"], "e-3");
    // Its new index entry is not removed by the old one's expiry.
    d.punctuate(2 * day + day / 2).unwrap();
    assert!(d.store_get("dedup", b"old").is_some());
}

#[test]
fn without_retention_nothing_expires() {
    let t =
        weir::inventory::inventory_topology_with(&InventoryTopics::default(), "inventory", None)
            .unwrap();
    let mut d = TopologyTestDriver::new(&t);
    pipe(&mut d, "o-1", &event("e-1", "o-1"));
    d.punctuate(i64::MAX / 2).unwrap();
    assert!(d.store_get("dedup", b"o-1").is_some());
    assert_eq!(d.store_len("dedup"), 1, "no index without retention");
}

fn event_json(event_id: &str, order_id: &str) -> Value {
    event(event_id, order_id)
}
