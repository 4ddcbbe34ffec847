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
}

/// Parses `key=value` for `-X`.
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
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
    /// Commit interval in milliseconds (bounds the duplicates a crash can
    /// cause under at-least-once).
    #[arg(long, env = "WEIR_COMMIT_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_interval_ms: u64,
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
