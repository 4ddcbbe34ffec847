//! `weir bench`: throughput and restore speed, side by side with the limit,
//! in one run on one broker.
//!
//! 1. *The limit*: a raw rdkafka consume → produce pipe, no state, no parsing,
//!    the same producer settings as Weir (idempotent, lz4, linger 5 ms).
//! 2. *Weir*, at-least-once and exactly-once: the Inventory job on the same
//!    input, timed from start until every input record is processed and
//!    committed (the group's lag is 0, outputs delivered), as the raw pipe.
//! 3. *Restore*: the at-least-once run's state directory is deleted and the
//!    job started again; timed until it is ready, against a raw read of the
//!    same changelog. The same for the exactly-once run, whose restore also
//!    reads each record's source offset, on brokers that store
//!    transactional offset commits.
//!
//! 4. *Memory under many keys*: RSS of a process holding a dedup store of
//!    1,000,000 and of 10,000,000 orderIds ([`memory`]; no broker).
//!
//! Every figure names the broker it came from. On the embedded broker the
//! input is spread over enough partitions to stay under its ~5 MiB a
//! partition (it silently drops older records beyond that).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;
use weir_topology::kafka::batch::BatchReader;
use weir_topology::{AppState, Guarantee};

use crate::inventory::InventoryTopics;
use crate::job::{Job, JobConfig};
use crate::load::{self, LoadConfig};

pub mod memory;

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
    /// Restore of the at-least-once run's store vs a raw read of its
    /// changelog (needs `alo`); the same for the exactly-once run's store
    /// when `eos` ran and the broker kept its transactional offset commits
    /// (the embedded broker does not).
    Restore,
    /// End-to-end latency (p50/p99) at a fixed offered rate, and the peak
    /// RSS of the job (run as a child process), for both guarantees.
    Latency,
    /// Resident memory of a process holding one dedup store partition at
    /// each of `--memory-keys` distinct orderIds (no broker involved).
    Memory,
}

impl Step {
    /// Whether the step runs against the broker (all but `memory`).
    pub fn needs_broker(self) -> bool {
        self != Step::Memory
    }
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
    /// Whether the broker runs inside this process (the embedded default):
    /// then the CPU figures include the broker's.
    pub broker_in_process: bool,
    /// Unique orders (the input adds 20% duplicates and 1% poison).
    pub orders: usize,
    /// Input partitions.
    pub partitions: i32,
    /// Where state directories go.
    pub work_dir: std::path::PathBuf,
    /// Longest any step may take.
    pub timeout: Duration,
    /// The `weir` executable (the latency step runs the job as a child
    /// process, to measure its memory alone).
    pub weir_exe: std::path::PathBuf,
    /// Offered rate for the latency step when no throughput was measured
    /// in the same run (otherwise half of each guarantee's measured rate).
    pub latency_rate: f64,
    /// How long the latency step offers load, per guarantee.
    pub latency_seconds: f64,
    /// Client settings for the jobs (`-X` style), e.g. for a broker that
    /// needs them; reported with the results.
    pub job_kafka: Vec<(String, String)>,
    /// Stream threads of the benchmarked jobs.
    pub stream_threads: usize,
    /// Commit interval of the jobs; `None`: `weir run`'s defaults (100 ms
    /// exactly-once, 1 s at-least-once).
    pub commit_interval: Option<Duration>,
    /// Store sizes of the memory step, in distinct keys.
    pub memory_keys: Vec<u64>,
    /// Random lookups after each fill of the memory step.
    pub memory_lookups: u64,
}

/// End-to-end latency at a fixed offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// Which guarantee.
    pub guarantee: String,
    /// Offered input records per second.
    pub offered_rate: f64,
    /// Confirmations measured.
    pub records: u64,
    /// Median input timestamp → confirmation readable by a consumer, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
    /// Peak resident memory of the job process (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Seconds of load at the start whose records are left out.
    pub warmup_s: f64,
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
    /// Throughput runs: seconds from start to the first output on the
    /// broker (clients, group join, store opening).
    pub first_output_s: Option<f64>,
    /// Throughput runs: input records/s while the outputs on the broker went
    /// from 10% to 90% of their number, without start-up and the end.
    pub steady_rate: Option<f64>,
    /// `steady_rate` against the reference's.
    pub steady_ratio: Option<f64>,
    /// Throughput runs: CPU time (user + system) of this process over the
    /// run, per input record, µs. All of its threads: the job's or the
    /// pipe's clients, the output watch, and the broker when it runs
    /// in-process.
    pub cpu_us_per_record: Option<f64>,
}

/// A throughput run: how long it took, when its outputs landed, and the
/// CPU this process spent on it.
#[derive(Debug, Clone, Copy)]
struct Run {
    seconds: f64,
    timeline: Timeline,
    cpu_seconds: f64,
}

/// CPU time (user + system) of this process so far, every thread, in
/// seconds: `getrusage`, which counts in microseconds (`/proc/self/stat`
/// counts in 10 ms ticks, too coarse for a run of a second or two).
fn process_cpu_seconds() -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given and reads
    // nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// When a throughput run's first output, 10% and 90% of its outputs were on
/// the broker: its start-up and its steady rate apart from the whole run's.
/// The first output is as first seen by a sample (up to one sampling period
/// late); the 10% and 90% marks are interpolated between the two samples
/// around them, so the watch can sample sparsely (every ListOffsets costs
/// the embedded broker a scan of each partition's log) and still time a
/// window of under a second closely.
#[derive(Debug, Default, Clone, Copy)]
struct Timeline {
    first: Option<f64>,
    tenth: Option<f64>,
    ninetieth: Option<f64>,
    /// The previous sample: (outputs, seconds).
    last: Option<(u64, f64)>,
}

impl Timeline {
    /// Notes `done` of `total` outputs at `at` seconds.
    fn note(&mut self, done: u64, total: u64, at: f64) {
        let last = self.last.replace((done, at));
        if self.first.is_none() && done > 0 {
            self.first = Some(at);
        }
        let mark = |slot: &mut Option<f64>, share: u64| {
            let target = (total * share) as f64 / 10.0;
            if slot.is_some() || (done as f64) < target {
                return;
            }
            *slot = Some(match last {
                Some((before, then)) if (before as f64) < target && done > before => {
                    then + (at - then) * (target - before as f64) / (done - before) as f64
                }
                _ => at,
            });
        };
        mark(&mut self.tenth, 1);
        mark(&mut self.ninetieth, 9);
    }

    /// Records/s between 10% and 90% of `total` (in units of `total`: the
    /// caller scales outputs to input records).
    fn steady_rate(&self, total: u64) -> Option<f64> {
        let (a, b) = (self.tenth?, self.ninetieth?);
        (b > a).then(|| 0.8 * total as f64 / (b - a))
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Broker the figures came from.
    pub broker: String,
    /// Cores, their model and memory of the machine.
    pub machine: String,
    /// The Kafka client library of every Weir-side client.
    pub librdkafka: String,
    /// Whether the CPU figures include the broker's (it ran in-process).
    pub cpu_includes_broker: bool,
    /// Input records (orders, duplicates, poison).
    pub input_records: u64,
    /// Input partitions.
    pub partitions: i32,
    /// The figures.
    pub rows: Vec<Row>,
    /// What was left out, and why.
    pub notes: Vec<String>,
    /// Latency at a fixed rate, per guarantee.
    pub latency: Vec<LatencyRow>,
    /// Client settings the jobs ran with.
    pub job_kafka: Vec<String>,
    /// Stream threads of the jobs.
    pub stream_threads: usize,
    /// Commit interval of the jobs, ms, when not `weir run`'s default.
    pub commit_interval_ms: Option<u64>,
    /// Memory under many keys, per store size.
    pub memory: Vec<memory::MemoryRow>,
    /// RSS at the largest size over RSS at the smallest.
    pub memory_growth: Option<f64>,
}

/// Topics the benchmark needs, for the caller to create: (name, partitions).
pub fn topics(cfg: &BenchConfig) -> Vec<(String, i32)> {
    let p = cfg.partitions;
    let mut t = vec![
        ("bench-in".to_string(), p),
        ("bench-raw-out".to_string(), p),
    ];
    for m in ["alo", "eos", "lat-alo", "lat-eos"] {
        t.push((format!("bench-{m}-confirmed"), p));
        t.push((format!("bench-{m}-dlq"), 1));
        t.push((format!("bench-{m}-dedup-changelog"), p));
    }
    for m in ["lat-alo", "lat-eos"] {
        t.push((format!("bench-{m}-in"), p));
    }
    t
}

/// The machine a result was measured on: cores and memory.
pub fn machine() -> String {
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
    // The cores' model: figures from machines of one size differ by up
    // to 2× between CPU models (Quix Streams' rate from 25k to 51k
    // records/s between two sessions' machines).
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| format!(" ({})", m.trim()))
        })
        .unwrap_or_default();
    format!("{cores} cores{model}, {mem}")
}

/// Runs every measurement; `progress` hears what is going on.
pub fn run(cfg: &BenchConfig, progress: &dyn Fn(&str)) -> Result<Report, BenchError> {
    let on = |step| cfg.steps.contains(&step);
    let (total, outputs) = if cfg.steps.iter().any(|s| s.needs_broker()) {
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
        // A job's outputs: one confirmation per unique order, one dead letter
        // per poison record.
        let outputs = (manifest.unique_orders + manifest.poison.len()) as u64;
        (total, outputs)
    } else {
        (0, 0)
    };
    let mut rows = Vec::new();

    let mut raw = None;
    if on(Step::Raw) {
        progress("raw pipe (best of 3)");
        // The reference: the best of three, as the raw read. On the embedded
        // broker the first pass after filling the input ran ~30% slower than
        // the next two, in its steady state (not its start), on a fresh
        // output topic too; the jobs, which run after it, never paid that.
        let mut best = raw_pipe(cfg, total, 0)?;
        for attempt in 1..3 {
            let run = raw_pipe(cfg, total, attempt)?;
            if run.seconds < best.seconds {
                best = run;
            }
        }
        let reference = timed_row(
            "raw consume → produce pipe, best of 3 (the limit)",
            total,
            best,
            None,
        );
        rows.push(reference.clone());
        raw = Some(reference);
    }

    let mut max_rate = std::collections::HashMap::new();
    for (step, m, g) in [
        (Step::Alo, "alo", Guarantee::AtLeastOnce),
        (Step::Eos, "eos", Guarantee::ExactlyOnce),
    ] {
        if on(step) {
            progress(&format!("weir {g}"));
            let run = weir_run(cfg, m, g, total, outputs, true)?;
            rows.push(timed_row(
                &format!("weir inventory, {g}"),
                total,
                run,
                raw.as_ref(),
            ));
            max_rate.insert(m, total as f64 / run.seconds);
        }
    }

    let mut notes = Vec::new();
    if on(Step::Restore) {
        if !on(Step::Alo) {
            return Err(BenchError::Job(
                "the restore step rebuilds the at-least-once run's store: add the alo step".into(),
            ));
        }
        restore_rows(cfg, "alo", Guarantee::AtLeastOnce, progress, &mut rows)?;
        if on(Step::Eos) {
            // Exactly-once restore trusts a changelog record only below the
            // input's committed offset; on a broker that did not store the
            // run's transactional offset commits (the embedded broker) it
            // would skip every record, which is no restore to time.
            if committed_any(cfg, "bench-eos")? {
                restore_rows(cfg, "eos", Guarantee::ExactlyOnce, progress, &mut rows)?;
            } else {
                notes.push("The exactly-once store's restore is not measured: this broker kept none of the exactly-once run's transactional offset commits, so restore would trust (and apply) no changelog record.".to_string());
            }
        }
    }

    let mut latency = Vec::new();
    if on(Step::Latency) {
        for (m, g) in [
            ("alo", Guarantee::AtLeastOnce),
            ("eos", Guarantee::ExactlyOnce),
        ] {
            let rate = max_rate.get(m).map(|r| r / 2.0).unwrap_or(cfg.latency_rate);
            progress(&format!("latency, {g}, {rate:.0} records/s"));
            latency.push(latency_run(cfg, m, g, rate)?);
        }
    }

    let memory = if on(Step::Memory) {
        memory::measure(cfg, progress)?
    } else {
        Vec::new()
    };

    Ok(Report {
        broker: cfg.broker_name.clone(),
        machine: machine(),
        librdkafka: rdkafka::util::get_rdkafka_version().1,
        cpu_includes_broker: cfg.broker_in_process,
        input_records: total,
        partitions: cfg.partitions,
        rows,
        notes,
        latency,
        job_kafka: cfg
            .job_kafka
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        stream_threads: cfg.stream_threads,
        commit_interval_ms: cfg.commit_interval.map(|d| d.as_millis() as u64),
        memory_growth: memory::growth(&memory),
        memory,
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
        first_output_s: None,
        steady_rate: None,
        steady_ratio: None,
        cpu_us_per_record: None,
    }
}

/// A throughput row, with its start-up and steady rate (and their ratios
/// against the reference row's).
fn timed_row(name: &str, records: u64, run: Run, reference: Option<&Row>) -> Row {
    let Run {
        seconds,
        timeline,
        cpu_seconds,
    } = run;
    // The window is a share of the outputs, which are spread evenly over
    // the input: the same share of the input went through in it.
    let steady_rate = timeline.steady_rate(records);
    Row {
        first_output_s: timeline.first,
        steady_rate,
        steady_ratio: steady_rate
            .zip(reference.and_then(|r| r.steady_rate))
            .map(|(a, b)| a / b),
        cpu_us_per_record: (cpu_seconds.is_finite() && records > 0)
            .then(|| cpu_seconds * 1e6 / records as f64),
        ..row(name, records, seconds, reference.map(|r| r.seconds))
    }
}

fn raw_pipe(cfg: &BenchConfig, total: u64, attempt: u32) -> Result<Run, BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        // A group of its own per attempt: each reads the input from the start.
        .set(
            "group.id",
            format!("bench-raw-{}-{attempt}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // As Weir's consumers: refetch 10 ms (not 1 s) after a full queue.
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let watch = OutputWatch::start(cfg, &["bench-raw-out".to_string()], total)?;
    let started = watch.started;
    let cpu = process_cpu_seconds();
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
    // Not `producer.flush`: with a threaded producer it waits in 100 ms
    // slices, which would charge the limit for up to 0.1 s it did not use.
    while producer.in_flight_count() > 0 {
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout("the raw pipe".into(), cfg.timeout));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds() - cpu;
    Ok(Run {
        seconds,
        timeline: watch.finish()?,
        cpu_seconds,
    })
}

/// Watches a throughput run's output topics on a thread of its own: every
/// 50 ms, one ListOffsets request for all their partitions tells how many
/// records landed since the watch began. The Quix Streams peer is timed the
/// same way (bench/peers/quix_inventory.py): records on the broker, not
/// records handed to a producer, which a broker slower than the job
/// (nisshi) would otherwise hide in the producer's queue.
struct OutputWatch {
    /// When the watch was ready: the run's clock starts here, so the watch's
    /// own set-up (metadata, a first ListOffsets) is not timed.
    started: Instant,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Timeline, BenchError>>,
}

impl OutputWatch {
    /// Every request costs the embedded broker a scan of each partition's
    /// log (for the leader epoch of the end offset): at 20 ms that was ~2%
    /// of the CPU of a two-thread run (perf), taken from the run it watched.
    const EVERY: Duration = Duration::from_millis(50);

    /// Starts watching `topics` for `expect` new records; times are
    /// seconds since [`Self::started`].
    fn start(cfg: &BenchConfig, topics: &[String], expect: u64) -> Result<Self, BenchError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cfg.brokers)
            .create()?;
        let mut latest = TopicPartitionList::new();
        for t in topics {
            let md = consumer.fetch_metadata(Some(t), cfg.timeout)?;
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                // For a ListOffsets request the "offset" is a timestamp;
                // -1 asks for the end.
                latest.add_partition_offset(t, p.id(), Offset::End)?;
            }
        }
        let timeout = cfg.timeout;
        let landed = move |c: &BaseConsumer| -> Result<u64, BenchError> {
            let ends = c.offsets_for_times(latest.clone(), timeout)?;
            Ok(ends
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o.max(0) as u64,
                    _ => 0,
                })
                .sum())
        };
        let base = landed(&consumer)?;
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let thread = std::thread::Builder::new()
            .name("bench-watch".into())
            .spawn(move || {
                let mut timeline = Timeline::default();
                loop {
                    let n = landed(&consumer)?.saturating_sub(base);
                    timeline.note(n, expect, started.elapsed().as_secs_f64());
                    if n >= expect || stop.load(Ordering::Relaxed) {
                        return Ok(timeline);
                    }
                    std::thread::sleep(Self::EVERY);
                }
            })
            .map_err(|e| BenchError::Job(format!("cannot start the output watch: {e}")))?;
        Ok(Self {
            started,
            done,
            thread,
        })
    }

    /// Stops watching (every output is in by now) and returns the timeline.
    fn finish(self) -> Result<Timeline, BenchError> {
        self.done.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| BenchError::Job("the output watch panicked".into()))?
    }
}

fn job_config(cfg: &BenchConfig, mode: &str, g: Guarantee) -> JobConfig {
    let mut j = JobConfig::new(&cfg.brokers);
    j.application_id = format!("bench-{mode}");
    j.state_dir = cfg.work_dir.join(mode);
    j.guarantee = g;
    j.commit_interval = cfg.commit_interval.unwrap_or(match g {
        Guarantee::ExactlyOnce => Duration::from_millis(100),
        Guarantee::AtLeastOnce => Duration::from_secs(1),
    });
    j.kafka = cfg.job_kafka.clone();
    j.stream_threads = cfg.stream_threads;
    j.topics = InventoryTopics {
        input: "bench-in".into(),
        confirmed: format!("bench-{mode}-confirmed"),
        dead_letters: format!("bench-{mode}-dlq"),
    };
    j
}

/// Starts the job and waits until it has processed and committed `total`
/// records: the group's lag is 0, every output is delivered (and, under
/// exactly-once, committed), as the raw pipe's final commit.
fn weir_run(
    cfg: &BenchConfig,
    mode: &str,
    g: Guarantee,
    total: u64,
    outputs: u64,
    stop: bool,
) -> Result<Run, BenchError> {
    let watch = OutputWatch::start(
        cfg,
        &[
            format!("bench-{mode}-confirmed"),
            format!("bench-{mode}-dlq"),
        ],
        outputs,
    )?;
    let started = watch.started;
    let cpu = process_cpu_seconds();
    let job = Job::start(&job_config(cfg, mode, g)).map_err(|e| BenchError::Job(e.to_string()))?;
    let status = job.handle().status();
    while status.records_committed() < total {
        if let Some(e) = status.error() {
            return Err(BenchError::Job(e));
        }
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout(format!("weir {g}"), cfg.timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    // Before the stop: its flush of every store is not the run's work.
    let cpu_seconds = process_cpu_seconds() - cpu;
    let timeline = watch.finish()?;
    if stop {
        job.stop().map_err(|e| BenchError::Job(e.to_string()))?;
    }
    Ok(Run {
        seconds,
        timeline,
        cpu_seconds,
    })
}

/// The restore step of one guarantee's run: the best of three raw reads of
/// its changelog, the best of three restores of its store (each from an
/// empty state directory), and start → running for that best restore.
/// At-least-once rows keep their names from before exactly-once had its own.
fn restore_rows(
    cfg: &BenchConfig,
    mode: &str,
    g: Guarantee,
    progress: &dyn Fn(&str),
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let which = match g {
        Guarantee::AtLeastOnce => String::new(),
        Guarantee::ExactlyOnce => format!("{g} "),
    };
    let changelog_topic = format!("bench-{mode}-dedup-changelog");
    progress(&format!("raw read of the {which}changelog (best of 3)"));
    // The reference: the best of three (single reads varied 440k–790k
    // records/s on the embedded broker from run to run).
    let mut best = raw_read(cfg, &changelog_topic)?;
    for _ in 0..2 {
        let again = raw_read(cfg, &changelog_topic)?;
        if again.1 < best.1 {
            best = again;
        }
    }
    let (changelog, read) = best;
    rows.push(row(
        &format!("raw read of the {which}changelog (best of 3)"),
        changelog,
        read,
        None,
    ));
    progress(&format!("restore of the {which}store (best of 3)"));
    // Best of three as the reference it is compared with: single
    // restores varied ~±10% from run to run, as single raw reads did.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(cfg.work_dir.join(mode));
        runs.push(restore_run(cfg, mode, g)?);
    }
    let listed = runs
        .iter()
        .map(|t| format!("{:.3}", t.restore))
        .collect::<Vec<_>>()
        .join(" / ");
    let times = runs
        .into_iter()
        .min_by(|a, b| a.restore.total_cmp(&b.restore))
        .expect("three runs");
    rows.push(row(
        &format!(
            "weir restore from the {which}changelog, best of 3 (empty state; assignment → running; runs {listed} s)"
        ),
        changelog,
        times.restore,
        Some(read),
    ));
    // The embedded broker delays a group's rejoin after a member left
    // by the session timeout (45 s); a Kafka broker does not.
    rows.push(row(
        &format!("weir start → running, {which}restore included (start-up, group join)"),
        changelog,
        times.to_ready,
        Some(read),
    ));
    Ok(())
}

/// Whether group `group` has committed an offset past 0 on any input
/// partition (it processed something, and the broker kept the commit).
fn committed_any(cfg: &BenchConfig, group: &str) -> Result<bool, BenchError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.partitions {
        tpl.add_partition("bench-in", p);
    }
    let committed = c.committed_offsets(tpl, cfg.timeout)?;
    Ok(committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(o) if o > 0)))
}

/// How long a restore took.
struct RestoreTimes {
    /// From the partitions' assignment until every task runs: the restore.
    restore: f64,
    /// From start until every task runs (start-up and group join too).
    to_ready: f64,
}

/// Starts the job of `mode` on an empty state directory and waits until it
/// has restored and is ready.
fn restore_run(cfg: &BenchConfig, mode: &str, g: Guarantee) -> Result<RestoreTimes, BenchError> {
    let started = Instant::now();
    let job = Job::start(&job_config(cfg, mode, g)).map_err(|e| BenchError::Job(e.to_string()))?;
    let status = job.handle().status();
    let mut assigned_at = None;
    // Every input partition: with more stream threads, one thread can have
    // restored and run its share before the group gave the other its own
    // (a 2-thread run once reported half a restore, at 1.38× the raw read).
    let all = cfg.partitions as usize;
    while !(status.state() == AppState::Running && status.assigned_partitions() == all) {
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

/// Runs the job as a child process, offers orders at `rate` for the
/// configured time, and measures each confirmation's age (its input's
/// timestamp to the moment a consumer reads it) and the job's peak RSS.
fn latency_run(
    cfg: &BenchConfig,
    mode: &str,
    g: Guarantee,
    rate: f64,
) -> Result<LatencyRow, BenchError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let app = format!("bench-lat-{mode}");
    let confirmed = format!("{app}-confirmed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Job(format!("no free port: {e}")))?;
    let g_arg = match g {
        Guarantee::ExactlyOnce => "exactly-once",
        Guarantee::AtLeastOnce => "at-least-once",
    };
    let mut child = std::process::Command::new(&cfg.weir_exe)
        .args(["run", "--brokers", &cfg.brokers, "--application-id", &app])
        .args(["--input-topic", &format!("{app}-in")])
        .args([
            "--output-topic",
            &confirmed,
            "--dlq-topic",
            &format!("{app}-dlq"),
        ])
        .args(["--guarantee", g_arg, "--log", "warn"])
        .args(["--stream-threads", &cfg.stream_threads.to_string()])
        .args(
            cfg.commit_interval
                .map(|d| {
                    [
                        "--commit-interval-ms".to_string(),
                        d.as_millis().to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .args(
            cfg.job_kafka
                .iter()
                .flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")]),
        )
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(cfg.work_dir.join(&app))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Job(format!("starting {}: {e}", cfg.weir_exe.display())))?;
    let result = (|| {
        let started = Instant::now();
        while !ready(port) {
            if let Ok(Some(s)) = child.try_wait() {
                return Err(BenchError::Job(format!("the job exited: {s}")));
            }
            if started.elapsed() > cfg.timeout {
                return Err(BenchError::Timeout(
                    "the latency job's start".into(),
                    cfg.timeout,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let expected = Arc::new(AtomicUsize::new(usize::MAX));
        let reader = {
            let (brokers, topic, expected) =
                (cfg.brokers.clone(), confirmed.clone(), expected.clone());
            let timeout = cfg.timeout;
            std::thread::spawn(move || read_ages(&brokers, &topic, &expected, timeout))
        };
        let records = (rate * cfg.latency_seconds).max(100.0);
        let load_started_ms = now_ms();
        let manifest = load::run(
            &LoadConfig {
                orders: (records / 1.21) as usize,
                duplicate_ratio: 0.1,
                resend_ratio: 0.1,
                poison_ratio: 0.01,
                rate,
                seed: 2,
            },
            &cfg.brokers,
            &format!("{app}-in"),
            |_| {},
        )?;
        expected.store(manifest.unique_orders, Ordering::SeqCst);
        let read = reader
            .join()
            .map_err(|_| BenchError::Job("the latency reader panicked".into()))??;
        // The first seconds measure start-up (the job's and the reader's
        // first fetches: measured, every age over 300 ms fell in the first
        // tenth of a 10 s run), not the steady state a latency figure means.
        let warmup = latency_warmup(cfg.latency_seconds);
        let steady_from = load_started_ms + warmup * 1000.0;
        let mut ages: Vec<f64> = read
            .iter()
            .filter(|(ts, _)| *ts >= steady_from)
            .map(|(_, age)| *age)
            .collect();
        if ages.is_empty() {
            return Err(BenchError::Job(format!(
                "no confirmation of a record produced after the {warmup:.1} s warm-up"
            )));
        }
        let peak_rss_mib = memory::proc_status_mib(&child.id().to_string(), "VmHWM:");
        ages.sort_by(f64::total_cmp);
        let pct = |p: f64| ages[((ages.len() as f64 * p) as usize).min(ages.len() - 1)];
        Ok(LatencyRow {
            guarantee: g.to_string(),
            offered_rate: rate,
            records: ages.len() as u64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: ages.last().copied().unwrap_or(0.0),
            peak_rss_mib,
            warmup_s: warmup,
        })
    })();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    result
}

/// `GET /ready` answers 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    s.read(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// How much of a latency run is start-up: 2 s, or a fifth of a short run.
fn latency_warmup(seconds: f64) -> f64 {
    (seconds / 5.0).min(2.0)
}

/// Milliseconds since the epoch, as record timestamps count them.
fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Reads `topic` (committed records only) until `expected` records came;
/// returns each one's (input timestamp, age when read), in ms.
fn read_ages(
    brokers: &str,
    topic: &str,
    expected: &std::sync::atomic::AtomicUsize,
    timeout: Duration,
) -> Result<Vec<(f64, f64)>, BenchError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    // Assigned, not subscribed: reading starts now, with no group join
    // that would age the first confirmations.
    let md = c.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let started = Instant::now();
    let mut ages = Vec::new();
    while ages.len() < expected.load(std::sync::atomic::Ordering::SeqCst) {
        if started.elapsed() > timeout {
            return Err(BenchError::Timeout(format!("reading {topic}"), timeout));
        }
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m?;
            if let Some(ts) = m.timestamp().to_millis() {
                ages.push((ts as f64, now_ms() - ts as f64));
            }
        }
    }
    Ok(ages)
}

/// Reads a whole topic as fast as a bare consumer can: (records, seconds).
/// Timed from the assignment: finding the partitions and their ends is left
/// out (a restore's figure includes its planning).
fn raw_read(cfg: &BenchConfig, topic: &str) -> Result<(u64, f64), BenchError> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "bench-raw-read")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // As the restore consumer: it reads data that exists up to a known
        // end, and refetches 10 ms (not 1 s) after a full queue.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let md = c.fetch_metadata(Some(topic), cfg.timeout)?;
    let mut tpl = TopicPartitionList::new();
    // Each partition's end. A transactional changelog's end counts its
    // commit markers, which are never delivered: the read is done when the
    // consumer's position (which moves past them) reaches every end.
    let mut ends = Vec::new();
    let mut expected = 0;
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = c.fetch_watermarks(topic, p.id(), cfg.timeout)?;
        ends.push((p.id(), high));
        expected += (high - low) as u64;
        tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
    }
    let at_end = || -> Result<bool, KafkaError> {
        let positions = c.position()?;
        Ok(ends.iter().all(|(p, high)| {
            positions
                .find_partition(topic, *p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
        }))
    };
    let started = Instant::now();
    c.assign(&tpl)?;
    // As the restore reader reads: many records per call.
    let mut reader = BatchReader::new(&c, 1024)
        .ok_or_else(|| KafkaError::ClientCreation("the raw read's consumer has no queue".into()))?;
    let mut n = 0;
    let mut failed = None;
    loop {
        if started.elapsed() > cfg.timeout {
            return Err(BenchError::Timeout(format!("reading {topic}"), cfg.timeout));
        }
        let before = n;
        reader.read(Duration::from_millis(10), |m| match m {
            Ok(_) => n += 1,
            Err((_, e)) => failed = Some(e),
        });
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        // Every offset a record (no markers). Otherwise only when a read
        // came back short: a position look-up per call would cost the
        // read it times.
        if n >= expected || (n - before < 1024 && at_end()?) {
            break;
        }
    }
    Ok((n, started.elapsed().as_secs_f64()))
}

/// The report as a markdown table.
pub fn markdown(r: &Report) -> String {
    let broker_steps = !r.rows.is_empty() || !r.latency.is_empty();
    if !broker_steps {
        // The memory step alone: no broker, no input.
        return format!(
            "# Weir benchmark\n\nMachine: {}.\n{}",
            r.machine,
            memory::markdown(&r.memory)
        );
    }
    let mut s = format!(
        "# Weir benchmark\n\nBroker: {}. Machine: {}. Input: {} records ({} partitions; 20% duplicates, 1% poison). Stream threads per job: {}. librdkafka {}.\n\n",
        r.broker, r.machine, r.input_records, r.partitions, r.stream_threads, r.librdkafka
    );
    if let Some(ms) = r.commit_interval_ms {
        s.push_str(&format!(
            "Commit interval: {ms} ms in both guarantees (`weir run`'s defaults: 100 ms exactly-once, 1000 ms at-least-once).\n\n"
        ));
    }
    if !r.job_kafka.is_empty() {
        s.push_str(&format!(
            "Job client settings: `{}`.\n\n",
            r.job_kafka.join("`, `")
        ));
    }
    s.push_str("Throughput runs end when their input is committed (lag 0), start-up included. Their steady rate leaves start-up and the end out: the outputs on the broker (sampled every 50 ms, the crossings interpolated) went from 10% to 90% of their number while 80% of the input went through.\n\n");
    s.push_str(&format!(
        "CPU µs/record: user + system time of the benchmark process over the run, every thread, per input record; {}.\n\n",
        if r.cpu_includes_broker {
            "the broker runs in this process, so its share is included"
        } else {
            "the broker's is not included (another process)"
        }
    ));
    s.push_str(
        "| measurement | records | seconds | records/s | ratio | start → first output s | steady records/s | steady ratio | CPU µs/record |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let or_dash = |x: Option<String>| x.unwrap_or_else(|| "—".into());
    for row in r.rows.iter() {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} |\n",
            row.name,
            row.records,
            row.seconds,
            row.rate,
            or_dash(row.ratio.map(|x| format!("{x:.2}×"))),
            or_dash(row.first_output_s.map(|x| format!("{x:.2}"))),
            or_dash(row.steady_rate.map(|x| format!("{x:.0}"))),
            or_dash(row.steady_ratio.map(|x| format!("{x:.2}×"))),
            or_dash(row.cpu_us_per_record.map(|x| format!("{x:.2}"))),
        ));
    }
    for note in &r.notes {
        s.push_str(&format!("\n{note}\n"));
    }
    if !r.latency.is_empty() {
        s.push_str(&format!("\nEnd-to-end latency (input timestamp → confirmation read by a `read_committed` consumer) at a fixed offered rate, after a {:.1} s warm-up whose records are left out; the job runs as a child process:\n\n", r.latency[0].warmup_s));
        s.push_str("| guarantee | offered records/s | confirmations | p50 ms | p99 ms | max ms | job peak RSS |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for l in &r.latency {
            s.push_str(&format!(
                "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.0} MiB |\n",
                l.guarantee,
                l.offered_rate,
                l.records,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.peak_rss_mib
            ));
        }
    }
    s.push_str(&memory::markdown(&r.memory));
    s
}

#[cfg(test)]
mod tests {
    use super::Timeline;

    #[test]
    fn a_timeline_marks_the_first_record_and_the_steady_window() {
        let mut t = Timeline::default();
        t.note(0, 1000, 0.5);
        assert!(t.first.is_none() && t.steady_rate(1000).is_none());
        for (done, at) in [
            (1, 1.0),
            (50, 1.5),
            (100, 2.0),
            (500, 3.0),
            (900, 4.0),
            (1000, 9.0),
        ] {
            t.note(done, 1000, at);
        }
        assert_eq!(
            (t.first, t.tenth, t.ninetieth),
            (Some(1.0), Some(2.0), Some(4.0))
        );
        // 800 records between 10% and 90%, in 2 s.
        assert_eq!(t.steady_rate(1000), Some(400.0));
        // A first poll past both marks leaves no window to rate.
        let mut jump = Timeline::default();
        jump.note(1000, 1000, 1.0);
        assert_eq!(jump.first, Some(1.0));
        assert!(jump.steady_rate(1000).is_none());
        // Marks between samples are interpolated; the first output is not.
        let mut t = Timeline::default();
        for (done, at) in [(0, 0.5), (50, 1.0), (150, 2.0), (850, 3.0), (1000, 3.5)] {
            t.note(done, 1000, at);
        }
        assert_eq!(t.first, Some(1.0));
        assert_eq!(t.tenth, Some(1.5));
        assert_eq!(t.ninetieth, Some(3.0 + 0.5 * 50.0 / 150.0));
    }
}
