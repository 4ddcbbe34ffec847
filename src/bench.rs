//! `weir bench`: throughput and restore speed, side by side with the limit,
//! in one run on one broker.
//!
//! 1. *The limit*: a raw rdkafka consume → produce pipe, no state, no parsing,
//!    the same producer settings as Weir (idempotent, lz4, linger 5 ms).
//! 2. *Weir*, at-least-once and exactly-once: the Inventory job on the same
//!    input, timed from start until every input record is processed.
//! 3. *Restore*: the at-least-once run's state directory is deleted and the
//!    job started again; timed until it is ready, against a raw read of the
//!    same changelog.
//!
//! Every figure names the broker it came from. On the embedded broker the
//! input is spread over enough partitions to stay under its ~5 MiB a
//! partition (it silently drops older records beyond that).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use weir_topology::{AppState, Guarantee};

use crate::inventory::InventoryTopics;
use crate::job::{Job, JobConfig};
use crate::load::{self, LoadConfig};

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A Kafka client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The load generator failed.
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// The job failed.
    #[error("the job failed: {0}")]
    Job(String),
    /// A step took longer than allowed.
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
    /// Creating a topic failed.
    #[error("creating topic {0}: {1}")]
    Topic(String, String),
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    /// The raw consume → produce pipe (the reference for throughput ratios).
    Raw,
    /// The Inventory job, at-least-once.
    Alo,
    /// The Inventory job, exactly-once.
    Eos,
    /// Restore of the at-least-once run's store vs a raw changelog read
    /// (needs `alo`).
    Restore,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Which measurements to take.
    pub steps: Vec<Step>,
    /// Bootstrap servers.
    pub brokers: String,
    /// Which broker that is, for the report.
    pub broker_name: String,
    /// Unique orders (the input adds 20% duplicates and 1% poison).
    pub orders: usize,
    /// Input partitions.
    pub partitions: i32,
    /// Where state directories go.
    pub work_dir: std::path::PathBuf,
    /// Longest any step may take.
    pub timeout: Duration,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Records handled.
    pub records: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Records per second.
    pub rate: f64,
    /// Ratio against the reference figure of its group (raw pipe, raw read).
    pub ratio: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Broker the figures came from.
    pub broker: String,
    /// Cores and memory of the machine.
    pub machine: String,
    /// Input records (orders, duplicates, poison).
    pub input_records: u64,
    /// Input partitions.
    pub partitions: i32,
    /// The figures.
    pub rows: Vec<Row>,
}

/// Topics the benchmark needs, for the caller to create: (name, partitions).
pub fn topics(cfg: &BenchConfig) -> Vec<(String, i32)> {
    let p = cfg.partitions;
    let mut t = vec![
        ("bench-in".to_string(), p),
        ("bench-raw-out".to_string(), p),
    ];
    for m in ["alo", "eos"] {
        t.push((format!("bench-{m}-confirmed"), p));
        t.push((format!("bench-{m}-dlq"), 1));
        t.push((format!("bench-{m}-dedup-changelog"), p));
    }
    t
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores, {mem}")
}

/// Runs every measurement; `progress` hears what is going on.
pub fn run(cfg: &BenchConfig, progress: &dyn Fn(&str)) -> Result<Report, BenchError> {
    progress("filling the input");
    let manifest = load::run(
        &LoadConfig {
            orders: cfg.orders,
            duplicate_ratio: 0.1,
            resend_ratio: 0.1,
            poison_ratio: 0.01,
            rate: 0.0,
            seed: 1,
        },
        &cfg.brokers,
        "bench-in",
        |_| {},
    )?;
    let total = manifest.sent as u64;
    let mut rows = Vec::new();
    let on = |step| cfg.steps.contains(&step);

    let mut raw = None;
    if on(Step::Raw) {
        progress("raw pipe");
        let secs = raw_pipe(cfg, total)?;
        rows.push(row(
            "raw consume → produce pipe (the limit)",
            total,
            secs,
            None,
        ));
        raw = Some(secs);
    }

    for (step, m, g) in [
        (Step::Alo, "alo", Guarantee::AtLeastOnce),
        (Step::Eos, "eos", Guarantee::ExactlyOnce),
    ] {
        if on(step) {
            progress(&format!("weir {g}"));
            let secs = weir_run(cfg, m, g, total, true)?;
            rows.push(row(&format!("weir inventory, {g}"), total, secs, raw));
        }
    }

    if on(Step::Restore) {
        if !on(Step::Alo) {
            return Err(BenchError::Job(
                "the restore step rebuilds the at-least-once run's store: add the alo step".into(),
            ));
        }
        progress("raw changelog read");
        let (changelog, read) = raw_read(cfg, "bench-alo-dedup-changelog")?;
        rows.push(row("raw read of the changelog", changelog, read, None));
        progress("restore");
        let _ = std::fs::remove_dir_all(cfg.work_dir.join("alo"));
        let times = restore_run(cfg)?;
        rows.push(row(
            "weir restore from the changelog (empty state; assignment → running)",
            changelog,
            times.restore,
            Some(read),
        ));
        // The embedded broker delays a group's rejoin after a member left
        // by the session timeout (45 s); a Kafka broker does not.
        rows.push(row(
            "weir start → running, restore included (start-up, group join)",
            changelog,
            times.to_ready,
            Some(read),
        ));
    }

    Ok(Report {
        broker: cfg.broker_name.clone(),
        machine: machine(),
        input_records: total,
        partitions: cfg.partitions,
        rows,
    })
}

fn row(name: &str, records: u64, seconds: f64, reference: Option<f64>) -> Row {
    let rate = records as f64 / seconds.max(1e-9);
    // Same records on both sides: the ratio of rates is the ratio of times.
    Row {
        name: name.into(),
        records,
        seconds,
        rate,
        ratio: reference.map(|ref_secs| ref_secs / seconds.max(1e-9)),
    }
}

fn raw_pipe(cfg: &BenchConfig, total: u64) -> Result<f64, BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", format!("bench-raw-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let started = Instant::now();
    consumer.subscribe(&["bench-in"])?;
    let mut n = 0u64;
    while n < total {
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout("the raw pipe".into(), cfg.timeout));
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let mut rec: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to("bench-raw-out").partition(m.partition());
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    std::thread::sleep(Duration::from_millis(1));
                    rec = back;
                }
            }
        }
        n += 1;
    }
    producer.flush(cfg.timeout)?;
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
    Ok(started.elapsed().as_secs_f64())
}

fn job_config(cfg: &BenchConfig, mode: &str, g: Guarantee) -> JobConfig {
    let mut j = JobConfig::new(&cfg.brokers);
    j.application_id = format!("bench-{mode}");
    j.state_dir = cfg.work_dir.join(mode);
    j.guarantee = g;
    j.commit_interval = match g {
        Guarantee::ExactlyOnce => Duration::from_millis(100),
        Guarantee::AtLeastOnce => Duration::from_secs(1),
    };
    j.topics = InventoryTopics {
        input: "bench-in".into(),
        confirmed: format!("bench-{mode}-confirmed"),
        dead_letters: format!("bench-{mode}-dlq"),
    };
    j
}

/// Starts the job and waits until it processed `total` records.
fn weir_run(
    cfg: &BenchConfig,
    mode: &str,
    g: Guarantee,
    total: u64,
    stop: bool,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    let job = Job::start(&job_config(cfg, mode, g)).map_err(|e| BenchError::Job(e.to_string()))?;
    let status = job.handle().status();
    while status.records_processed() < total {
        if let Some(e) = status.error() {
            return Err(BenchError::Job(e));
        }
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout(format!("weir {g}"), cfg.timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    if stop {
        job.stop().map_err(|e| BenchError::Job(e.to_string()))?;
    }
    Ok(secs)
}

/// How long a restore took.
struct RestoreTimes {
    /// From the partitions' assignment until every task runs: the restore.
    restore: f64,
    /// From start until every task runs (start-up and group join too).
    to_ready: f64,
}

/// Starts the at-least-once job on an empty state directory and waits until
/// it has restored and is ready.
fn restore_run(cfg: &BenchConfig) -> Result<RestoreTimes, BenchError> {
    let started = Instant::now();
    let job = Job::start(&job_config(cfg, "alo", Guarantee::AtLeastOnce))
        .map_err(|e| BenchError::Job(e.to_string()))?;
    let status = job.handle().status();
    let mut assigned_at = None;
    while !(status.state() == AppState::Running && status.assigned_partitions() > 0) {
        if let Some(e) = status.error() {
            return Err(BenchError::Job(e));
        }
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout("restore".into(), cfg.timeout));
        }
        if assigned_at.is_none() && status.assigned_partitions() > 0 {
            assigned_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = Instant::now();
    let times = RestoreTimes {
        restore: (ready - assigned_at.unwrap_or(ready)).as_secs_f64(),
        to_ready: (ready - started).as_secs_f64(),
    };
    job.stop().map_err(|e| BenchError::Job(e.to_string()))?;
    Ok(times)
}

/// Reads a whole topic as fast as a bare consumer can: (records, seconds).
fn raw_read(cfg: &BenchConfig, topic: &str) -> Result<(u64, f64), BenchError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "bench-raw-read")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?;
    let started = Instant::now();
    let md = c.fetch_metadata(Some(topic), cfg.timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut expected = 0;
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), cfg.timeout)?;
        expected += (high - low) as u64;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
    }
    c.assign(&tpl)?;
    let mut n = 0;
    while n < expected {
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout(format!("reading {topic}"), cfg.timeout));
        }
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// The report as a markdown table.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Weir benchmark\n\nBroker: {}. Machine: {}. Input: {} records ({} partitions; 20% duplicates, 1% poison).\n\n| measurement | records | seconds | records/s | ratio |\n|---|---:|---:|---:|---:|\n",
        r.broker, r.machine, r.input_records, r.partitions
    );
    for row in &r.rows {
        let ratio = row
            .ratio
            .map(|x| format!("{x:.2}×"))
            .unwrap_or_else(|| "—".into());
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {ratio} |\n",
            row.name, row.records, row.seconds, row.rate
        ));
    }
    s
}
