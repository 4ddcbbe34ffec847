//! The DSL and the processing core, run through the test driver (no broker).

use weir_topology::dead_letter::{HEADER_EXCEPTION, HEADER_MESSAGE, HEADER_OFFSET, HEADER_TOPIC};
use weir_topology::{
    Headers, JsonObjectSerde, ProcessError, Processor, ProcessorContext, RawDeadLetters, Record,
    StoreSpec, StringSerde, TestRecord, TopologyBuilder, TopologyError, TopologyTestDriver,
};

fn words() -> TopologyBuilder {
    TopologyBuilder::new()
}

#[test]
fn split_routes_each_record_to_the_first_matching_branch() {
    let b = words();
    let branches = b
        .source("in", StringSerde, StringSerde)
        .split("route")
        .branch("short", |r: &Record<String, String>| {
            r.value.as_ref().is_some_and(|v| v.len() < 4)
        })
        .branch("long", |r: &Record<String, String>| {
            r.value.as_ref().is_some_and(|v| v.len() >= 8)
        })
        .default_branch("other");
    branches
        .get("short")
        .unwrap()
        .to("short", StringSerde, StringSerde);
    branches
        .get("long")
        .unwrap()
        .map_values("upper", |v: String| v.to_uppercase())
        .to("long", StringSerde, StringSerde);
    branches
        .get("other")
        .unwrap()
        .to("other", StringSerde, StringSerde);
    assert!(branches.get("nope").is_none());
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    for w in ["a", "abcdefghij", "medium", "xyz"] {
        d.pipe_kv("k", w).unwrap();
    }
    let vals = |rs: Vec<weir_topology::OutputRecord>| {
        rs.into_iter()
            .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(vals(d.read_output("short")), ["a", "xyz"]);
    assert_eq!(vals(d.read_output("long")), ["ABCDEFGHIJ"]);
    assert_eq!(vals(d.read_output("other")), ["medium"]);
}

#[test]
fn filter_map_and_fan_out_keep_headers_and_order() {
    let b = words();
    let s = b
        .source("in", StringSerde, StringSerde)
        .filter("non-empty", |r: &Record<String, String>| {
            r.value.as_deref() != Some("")
        });
    s.to("copy-a", StringSerde, StringSerde);
    s.map("rekey", |r: Record<String, String>| {
        let v = r.value.clone();
        r.with_key(v)
    })
    .to("copy-b", StringSerde, StringSerde);
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    let mut rec = TestRecord::new("k1", "v1");
    rec.headers = Headers::new().with("trace", "t-1");
    d.pipe(rec).unwrap();
    d.pipe_kv("k2", "").unwrap();
    let a = d.read_output("copy-a");
    let bb = d.read_output("copy-b");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].key_str(), Some("k1"));
    assert_eq!(a[0].headers.last_str("trace"), Some("t-1"));
    assert_eq!(bb.len(), 1);
    assert_eq!(bb[0].key_str(), Some("v1"));
}

/// Counts values per key in a store: the Processor API with state.
struct Counter;

impl Processor<String, String, String, String> for Counter {
    fn process(
        &mut self,
        record: Record<String, String>,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
    ) -> Result<(), ProcessError> {
        let key = record.key.clone().unwrap_or_default();
        let mut store = ctx.store("counts")?;
        let n: u64 = store.get(key.as_bytes())?.unwrap_or(0) + 1;
        store.put(key.as_bytes(), &n)?;
        ctx.forward(record.with_value(Some(n.to_string())));
        Ok(())
    }
}

#[test]
fn a_processor_keeps_state_in_a_logged_store() {
    let b = words();
    b.add_store(StoreSpec::key_value("counts"));
    b.source("in", StringSerde, StringSerde)
        .process("count", || Counter, &["counts"])
        .to("out", StringSerde, StringSerde);
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    for k in ["a", "b", "a", "a"] {
        d.pipe_kv(k, "x").unwrap();
    }
    let out: Vec<_> = d
        .read_output("out")
        .into_iter()
        .map(|r| {
            format!(
                "{}={}",
                r.key_str().unwrap(),
                String::from_utf8(r.value.clone().unwrap()).unwrap()
            )
        })
        .collect();
    assert_eq!(out, ["a=1", "b=1", "a=2", "a=3"]);
    // One changelog record per write, tagged with the input offset.
    let log = d.changelog("counts");
    assert_eq!(log.len(), 4);
    assert_eq!(log[3].0, b"a".to_vec());
    assert_eq!(log[3].2, 3);
    assert_eq!(d.store_len("counts"), 2);
}

struct Sneaky;

impl Processor<String, String, String, String> for Sneaky {
    fn process(
        &mut self,
        _: Record<String, String>,
        ctx: &mut ProcessorContext<'_, '_, String, String>,
    ) -> Result<(), ProcessError> {
        ctx.store("undeclared")?;
        Ok(())
    }
}

#[test]
fn using_an_undeclared_store_stops_with_a_clear_error() {
    let b = words();
    b.add_store(StoreSpec::key_value("undeclared"));
    b.source("in", StringSerde, StringSerde)
        .process("sneaky", || Sneaky, &[])
        .to("out", StringSerde, StringSerde);
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    let err = d.pipe_kv("k", "v").unwrap_err();
    assert!(err.to_string().contains("without declaring it"), "{err}");
}

/// in → dedup by key (store "seen") → out.
fn dedup_by_key() -> weir_topology::Topology {
    let b = words();
    b.add_store(StoreSpec::key_value("seen"));
    b.source("in", StringSerde, StringSerde)
        .dedup("dedup", "seen", |r: &Record<String, String>| {
            r.key.clone().map(String::into_bytes)
        })
        .to("out", StringSerde, StringSerde);
    b.build().unwrap()
}

/// The values of output records, as text.
fn values(records: Vec<weir_topology::OutputRecord>) -> Vec<String> {
    records
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn dedup_passes_the_first_record_of_a_key_only() {
    let mut d = TopologyTestDriver::new(&dedup_by_key());
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("c", "5")] {
        d.pipe_kv(k, v).unwrap();
    }
    let vals = values(d.read_output("out"));
    assert_eq!(vals, ["1", "2", "5"]);
    assert_eq!(d.store_len("seen"), 3);
    // A record without a dedup key is not subject to dedup.
    d.pipe(TestRecord {
        key: None,
        value: Some(b"n".to_vec()),
        ..Default::default()
    })
    .unwrap();
    d.pipe(TestRecord {
        key: None,
        value: Some(b"n".to_vec()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(d.read_output("out").len(), 2);
}

#[test]
fn a_batch_piped_at_once_dedups_within_itself_and_commits_once_at_its_end() {
    let mut d = TopologyTestDriver::new(&dedup_by_key());
    let batch = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")]
        .map(|(k, v)| TestRecord::new(k, v));
    assert_eq!(
        d.pipe_all(batch).unwrap(),
        5,
        "a dropped duplicate is processed"
    );
    let vals = values(d.read_output("out"));
    assert_eq!(vals, ["1", "2", "4"]);
    assert_eq!(d.store_len("seen"), 3);
    // One commit: the changelog has one record per key (in no set order),
    // each attributed to the input offset that first saw it.
    let mut logged: Vec<_> = d
        .changelog("seen")
        .iter()
        .map(|(key, _, offset)| (key.clone(), *offset))
        .collect();
    logged.sort();
    assert_eq!(
        logged,
        [(b"a".to_vec(), 0), (b"b".to_vec(), 1), (b"c".to_vec(), 3)]
    );
}

#[test]
fn failures_go_to_the_dead_letter_topic_with_original_bytes_and_kip1034_headers() {
    let b = words();
    b.dead_letter_topic("dlq", RawDeadLetters);
    b.source("in", StringSerde, JsonObjectSerde)
        .try_map("check", |r: Record<String, serde_json::Value>| {
            if r.value.as_ref().and_then(|v| v.get("ok")).is_some() {
                Ok(r)
            } else {
                Err(ProcessError::validation("ok is missing"))
            }
        })
        .to("out", StringSerde, JsonObjectSerde);
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    assert!(d.pipe_kv("good", r#"{"ok":1}"#).unwrap());
    assert!(!d.pipe_kv("bad-json", "{nope").unwrap());
    let mut r = TestRecord::new("no-ok", r#"{"x":1}"#);
    r.headers = Headers::new().with("origin", "test");
    assert!(!d.pipe(r).unwrap());
    assert_eq!(d.read_output("out").len(), 1);
    let dlq = d.read_output("dlq");
    assert_eq!(dlq.len(), 2);
    assert_eq!(dlq[0].value.as_deref(), Some(&b"{nope"[..]));
    assert_eq!(
        dlq[0].headers.last_str(HEADER_EXCEPTION),
        Some("weir.DeserializationError")
    );
    assert_eq!(dlq[0].headers.last_str(HEADER_OFFSET), Some("1"));
    assert_eq!(dlq[0].headers.last_str(HEADER_TOPIC), Some("in"));
    assert_eq!(
        dlq[1].headers.last_str(HEADER_EXCEPTION),
        Some("weir.ValidationError")
    );
    assert_eq!(
        dlq[1].headers.last_str(HEADER_MESSAGE),
        Some("ok is missing")
    );
    assert_eq!(dlq[1].headers.last_str("origin"), Some("test"));
    assert_eq!(dlq[1].key_str(), Some("no-ok"));
}

#[test]
fn without_a_dead_letter_topic_a_failure_stops_and_says_where() {
    let b = words();
    b.source("in", StringSerde, JsonObjectSerde)
        .to("out", StringSerde, JsonObjectSerde);
    let t = b.build().unwrap();
    let mut d = TopologyTestDriver::new(&t);
    let err = d.pipe_kv("k", "[]").unwrap_err();
    assert!(
        matches!(err, TopologyError::Unrouted { offset: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no dead-letter topic"), "{err}");
}

#[test]
fn build_rejects_broken_graphs_naming_the_problem() {
    let b = words();
    b.source("in", StringSerde, StringSerde)
        .process("p", || Counter, &["missing"])
        .to("out", StringSerde, StringSerde);
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("\"missing\", which is not declared"), "{e}");

    let b = words();
    b.source("in", StringSerde, StringSerde)
        .map_values("dangling", |v: String| v);
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("has no children"), "{e}");

    let e = words().build().unwrap_err().to_string();
    assert!(e.contains("no source"), "{e}");

    let b = words();
    let s = b.source("in", StringSerde, StringSerde);
    s.map_values("same", |v: String| v)
        .to("a", StringSerde, StringSerde);
    s.map_values("same", |v: String| v)
        .to("b", StringSerde, StringSerde);
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn describe_shows_nodes_stores_and_changelogs() {
    let b = words();
    b.add_store(StoreSpec::key_value("seen"));
    b.dead_letter_topic("dlq", RawDeadLetters);
    b.source("in", StringSerde, StringSerde)
        .dedup("dedup", "seen", |r: &Record<String, String>| {
            r.key.clone().map(String::into_bytes)
        })
        .to("out", StringSerde, StringSerde);
    let d = b.build().unwrap().describe().with_application_id("app");
    let text = d.text();
    assert!(text.contains("Source: source-in (topics: [in])"), "{text}");
    assert!(text.contains("Processor: dedup (stores: [seen])"), "{text}");
    assert!(text.contains("Sink: sink-out (topic: out)"), "{text}");
    assert!(text.contains("changelog: app-seen-changelog"), "{text}");
    let m = d.mermaid();
    assert!(m.starts_with("flowchart LR"), "{m}");
    assert!(m.contains("t_in[(in)] --> n0[source-in]"), "{m}");
    assert!(m.contains("app-seen-changelog"), "{m}");
    assert!(m.contains("dlq"), "{m}");
}
