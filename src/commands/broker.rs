//! `weir broker`: the embedded broker as a standalone dev broker.

use std::io::Write;

use anyhow::Context;
use weir::broker::{EmbeddedBroker, TopicSpec};

use crate::cli::BrokerArgs;

/// The topics a fresh dev broker gets.
pub fn default_topics() -> Vec<TopicSpec> {
    [
        "OrderReceived:4",
        "OrderConfirmed:4",
        "DeadLetterQueue:1",
        "inventory-dedup-changelog:4",
    ]
    .iter()
    .map(|s| s.parse().expect("default topic specs parse"))
    .collect()
}

pub async fn broker(args: BrokerArgs) -> anyhow::Result<()> {
    let signal = super::shutdown_signal();
    let topics = if args.topics.is_empty() {
        default_topics()
    } else {
        args.topics.clone()
    };
    let broker = EmbeddedBroker::start(args.broker_count, &topics)?;
    // The file first: whoever sees the stdout line may read the file at once.
    if let Some(path) = &args.bootstrap_file {
        std::fs::write(path, format!("{}\n", broker.bootstrap_servers()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let line = format!("bootstrap.servers={}", broker.bootstrap_servers());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    for t in &topics {
        tracing::info!(topic = %t.name, partitions = t.partitions, "topic created");
    }
    tracing::info!(
        bootstrap = broker.bootstrap_servers(),
        "embedded broker running (in memory, ~5 MiB kept per partition, nothing kept after exit); Ctrl-C to stop"
    );
    signal.await;
    tracing::info!("stopping the embedded broker");
    drop(broker);
    Ok(())
}
