//! Command-line interface: every flag, its default and its environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use weir::broker::TopicSpec;

/// Weir: Kafka Streams-style stateful stream processing in Rust.
///
/// The Inventory job reads OrderReceived, drops duplicate orders (RocksDB
/// store + compacted changelog), confirms new valid orders to OrderConfirmed
/// and routes everything else to DeadLetterQueue.
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `info,weir_topology=debug`.
    #[arg(
        long,
        global = true,
        env = "WEIR_LOG",
        default_value = "info,rdkafka=warn"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Inventory job. Without --brokers, starts an embedded broker
    /// in-process (nothing is kept after exit).
    Run(RunArgs),
    /// Run the embedded broker as a standalone dev broker for other
    /// processes (Weir instances, kcat, Python clients). Prints
    /// `bootstrap.servers=<list>` as its first stdout line.
    Broker(BrokerArgs),
    /// Print the Inventory topology as text and as a Mermaid diagram.
    Describe(DescribeArgs),
    /// The Order service: HTTP `POST /orders` → OrderReceived.
    #[command(subcommand)]
    Orders(OrdersCommand),
    /// Generate a deterministic stream of orders with duplicates and poison
    /// records, and write a manifest of what the job must produce.
    Load(LoadArgs),
    /// Inspect and replay the dead-letter topic.
    Dlq(DlqArgs),
    /// Benchmark: raw pipe vs the Inventory job (at-least-once and
    /// exactly-once), restore vs a raw changelog read, latency, and a dedup
    /// store's memory at 1 M and 10 M keys, in one run.
    Bench(BenchArgs),
    /// One size of `weir bench`'s memory step, in a process of its own:
    /// fills a dedup store, looks keys up, prints the figures as JSON.
    #[command(hide = true)]
    BenchStoreMemory(BenchStoreMemoryArgs),
    /// Topic administration on any cluster, through the Admin API.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Everything on an embedded broker: the job, the Order service, a few
    /// orders posted over HTTP, and a summary of what landed where.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Serve `POST /orders`, `GET /health` and `GET /metrics`.
    Serve(OrdersServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct OrdersServeArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BROKERS")]
    pub brokers: String,
    /// HTTP address.
    #[arg(long, env = "WEIR_ORDERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Topic to publish OrderReceived events to.
    #[arg(long, default_value = "OrderReceived")]
    pub topic: String,
    /// How long a publish may wait for the broker before answering 503.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_timeout_ms: u64,
    /// librdkafka producer setting, repeatable.
    #[arg(short = 'X', value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub kafka: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BROKERS")]
    pub brokers: String,
    /// Topic to write.
    #[arg(long, default_value = "OrderReceived")]
    pub topic: String,
    /// Unique valid orders.
    #[arg(long, default_value_t = 10_000)]
    pub orders: usize,
    /// Redeliveries (same bytes again) per order.
    #[arg(long, default_value_t = 0.1)]
    pub duplicate_ratio: f64,
    /// Resends (same orderId, new eventId) per order.
    #[arg(long, default_value_t = 0.1)]
    pub resend_ratio: f64,
    /// Poison records (undecodable, invalid, unprocessable) per order.
    #[arg(long, default_value_t = 0.01)]
    pub poison_ratio: f64,
    /// Records per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Create the topic with this many partitions when it does not exist
    /// (Admin API). Records go to partitions by key, as with any producer.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Generator seed: the same seed sends the same records.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the manifest (JSON).
    #[arg(long, default_value = "load-manifest.json")]
    pub manifest: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BROKERS", global = true)]
    pub brokers: Option<String>,
    /// The dead-letter topic.
    #[arg(long, default_value = "DeadLetterQueue", global = true)]
    pub topic: String,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List every dead letter: kind, message, source coordinates.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this failure kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show one dead letter in full, with the original event.
    Show {
        /// Offset in the dead-letter topic.
        offset: i64,
        /// Partition of the dead-letter topic.
        #[arg(long, default_value_t = 0)]
        partition: i32,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow new dead letters as they arrive (Ctrl-C to stop).
    Tail {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Start with the existing records.
        #[arg(long)]
        from_beginning: bool,
    },
    /// Publish the originals (exact bytes, key, headers) back to their source
    /// topic, with a `weir.replay.count` header.
    Replay {
        /// Only this failure kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only dead letters written at or after T (RFC 3339, or an age like 30m, 2h, 1d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only dead letters written before T (RFC 3339, or an age like 30m, 2h, 1d).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Start at this offset of the dead-letter topic.
        #[arg(long)]
        from_offset: Option<i64>,
        /// Show what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse records already replayed this many times (loop guard).
        #[arg(long, default_value_t = 3)]
        max_replays: u32,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers. Omit to use an embedded broker.
    #[arg(long, env = "WEIR_BROKERS")]
    pub brokers: Option<String>,
    /// Unique orders; the input adds 20% duplicates and 1% poison.
    #[arg(long, default_value_t = 1_000_000)]
    pub orders: usize,
    /// Input partitions (default: 8, or more on the embedded broker to stay
    /// under its ~5 MiB a partition).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Where to write results.md and results.json.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Longest any step may take, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Which measurements to take (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "raw,alo,eos,restore,latency,memory"
    )]
    pub steps: Vec<weir::bench::Step>,
    /// Offered records/s for the latency step when the same run measured no
    /// throughput (otherwise half of each guarantee's measured rate).
    #[arg(long, default_value_t = 5000.0)]
    pub latency_rate: f64,
    /// Seconds of load per guarantee in the latency step.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// librdkafka setting for the benchmarked jobs, repeatable, as in
    /// `weir run -X` (e.g. `-X producer.linger.ms=20`); listed with the results.
    #[arg(short = 'X', value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub kafka: Vec<(String, String)>,
    /// Stream threads of the benchmarked jobs (`weir run --stream-threads`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub stream_threads: u16,
    /// Commit interval of the benchmarked jobs in milliseconds, both
    /// guarantees (`weir run --commit-interval-ms`). Default: `weir run`'s
    /// (100 exactly-once, 1000 at-least-once). A broker whose transactions
    /// are slow bounds exactly-once at short intervals.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_interval_ms: Option<u64>,
    /// Store sizes of the memory step, in distinct orderIds (comma-separated;
    /// the report compares the last with the first).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000000,10000000",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub memory_keys: Vec<u64>,
    /// Random lookups of stored keys after each fill of the memory step (they
    /// warm the block cache, as duplicate checks do).
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_lookups: u64,
}

#[derive(Debug, Clone, Args)]
pub struct BenchStoreMemoryArgs {
    /// Distinct orderIds to write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Random lookups after the fill.
    #[arg(long)]
    pub lookups: u64,
    /// The store's directory (created; must not hold another store).
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create topics (existing ones are left as they are).
    Create(TopicsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TopicsArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "WEIR_BROKERS")]
    pub brokers: String,
    /// Topic to create, repeatable, NAME:PARTITIONS. Default: the Inventory
    /// job's topics (OrderReceived:4, OrderConfirmed:4, DeadLetterQueue:1).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<TopicSpec>,
    /// Replication factor (-1: the broker's default).
    #[arg(long, default_value_t = -1)]
    pub replication: i32,
    /// `retention.ms` to set explicitly (some clients read it back).
    #[arg(long)]
    pub retention_ms: Option<i64>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address of the Order service.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the job's /metrics, /health, /ready.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Root of the local state.
    #[arg(long, default_value = "./state")]
    pub state_dir: PathBuf,
    /// Exit once the summary is printed instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit_after_summary: bool,
}

/// Parses `key=value` for `-X`.
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// Parses `500ms`, `10s`, `30m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 30m, 12h or 7d"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("{s:?}: the unit is ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Topic names of the Inventory job.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Input topic.
    #[arg(long, env = "WEIR_INPUT_TOPIC", default_value = "OrderReceived")]
    pub input_topic: String,
    /// Topic of confirmed orders.
    #[arg(long, env = "WEIR_OUTPUT_TOPIC", default_value = "OrderConfirmed")]
    pub output_topic: String,
    /// Dead-letter topic.
    #[arg(long, env = "WEIR_DLQ_TOPIC", default_value = "DeadLetterQueue")]
    pub dlq_topic: String,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kafka bootstrap servers. Omit to start an embedded broker.
    #[arg(long, env = "WEIR_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id and prefix of internal topics
    /// (`<id>-dedup-changelog`). Instances with the same id share the partitions.
    #[arg(long, env = "WEIR_APPLICATION_ID", default_value = "inventory")]
    pub application_id: String,
    /// Root of the local state: `<dir>/<application-id>/<store>/<partition>`.
    /// Losing it is safe: state is rebuilt from the changelog.
    #[arg(long, env = "WEIR_STATE_DIR", default_value = "./state")]
    pub state_dir: PathBuf,
    /// Address of /metrics, /health and /ready.
    #[arg(long, env = "WEIR_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Partitions of OrderReceived and OrderConfirmed on the embedded broker.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,
    /// Processing guarantee: exactly-once (one Kafka transaction per commit
    /// interval for outputs, changelog and offsets) or at-least-once.
    /// Default: exactly-once with --brokers; at-least-once on the embedded
    /// broker, which cannot store transactional offset commits.
    #[arg(long, env = "WEIR_GUARANTEE")]
    pub guarantee: Option<weir_topology::Guarantee>,
    /// Commit interval in milliseconds. Default: 100 under exactly-once
    /// (outputs become visible at commit), 1000 under at-least-once
    /// (outputs are sent at once; the interval bounds what a crash repeats).
    /// A stream thread also commits as soon as its input runs dry (a 100 ms
    /// poll finds nothing after records were processed).
    #[arg(long, env = "WEIR_COMMIT_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_interval_ms: Option<u64>,
    /// How long a confirmed orderId is remembered (e.g. 7d, 12h, 30m, 10s;
    /// 0 = forever). A resend after that is confirmed again.
    #[arg(long, env = "WEIR_DEDUP_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub dedup_retention: std::time::Duration,
    /// Names this instance in its transactional.id. Default: an id kept in
    /// the state directory, so a restart fences the previous incarnation.
    #[arg(long, env = "WEIR_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Stream threads in this process (Kafka Streams' num.stream.threads):
    /// each is a consumer-group member with its own tasks, so partitions
    /// are processed in parallel on spare cores. Thread i > 0 uses
    /// transactional.id <application-id>-<instance-id>-<i>.
    #[arg(long, env = "WEIR_STREAM_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub stream_threads: u16,
    /// Whether every output, dead letter and changelog record carries the
    /// `weir.run` and `weir.txn` headers (the run and the transaction that
    /// produced it): `never` or `always`. A diagnostic: with the job's log,
    /// which names each aborted transaction, they tell records of aborted
    /// or unfinished transactions apart on a broker that still shows them.
    #[arg(long, env = "WEIR_PROVENANCE_HEADERS", default_value_t = weir_topology::ProvenanceHeaders::Never)]
    pub provenance_headers: weir_topology::ProvenanceHeaders,
    /// librdkafka setting, repeatable: `-X session.timeout.ms=6000`.
    /// Prefix with `consumer.`, `producer.`, `restore.consumer.` or `admin.`
    /// to target one client.
    #[arg(short = 'X', value_parser = parse_kv, value_name = "KEY=VALUE")]
    pub kafka: Vec<(String, String)>,
    /// Publish a few sample orders (new, duplicate, resend, invalid,
    /// undecodable) once the job runs, and print what became of each.
    #[arg(long)]
    pub sample_orders: bool,
    /// With --sample-orders: exit once the samples' outcome is printed.
    #[arg(long, requires = "sample_orders")]
    pub exit_after_samples: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Topic to create, repeatable, NAME:PARTITIONS. Default: OrderReceived:4,
    /// OrderConfirmed:4, DeadLetterQueue:1 and inventory-dedup-changelog:4.
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<TopicSpec>,
    /// Also write the bootstrap list to this file (for scripts).
    #[arg(long)]
    pub bootstrap_file: Option<PathBuf>,
    /// Number of mock brokers in the cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub broker_count: i32,
}

#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// Print only the Mermaid diagram.
    #[arg(long, conflicts_with = "text")]
    pub mermaid: bool,
    /// Print only the text form.
    #[arg(long)]
    pub text: bool,
    /// Application id used to name changelog topics.
    #[arg(long, default_value = "inventory")]
    pub application_id: String,
    #[command(flatten)]
    pub topics: TopicArgs,
}

impl TopicArgs {
    /// As the library's topic set.
    pub fn to_topics(&self) -> weir::inventory::InventoryTopics {
        weir::inventory::InventoryTopics {
            input: self.input_topic.clone(),
            confirmed: self.output_topic.clone(),
            dead_letters: self.dlq_topic.clone(),
        }
    }
}
