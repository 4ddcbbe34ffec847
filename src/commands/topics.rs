//! `weir topics`: create topics through the Admin API on any cluster.

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use weir::broker::TopicSpec;

use crate::cli::TopicsArgs;

pub async fn create(args: TopicsArgs) -> anyhow::Result<()> {
    let topics: Vec<TopicSpec> = if args.topics.is_empty() {
        ["OrderReceived:4", "OrderConfirmed:4", "DeadLetterQueue:1"]
            .iter()
            .map(|s| s.parse().expect("default topic specs parse"))
            .collect()
    } else {
        args.topics.clone()
    };
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .context("creating the admin client")?;
    // Existing topics are looked up first, not left to CreateTopics to
    // refuse: a broker without the Admin API (the embedded one) can then
    // still be "created" against when its topics exist.
    let md = admin
        .inner()
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .context("reading metadata")?;
    let existing: Vec<&str> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let (present, missing): (Vec<&TopicSpec>, Vec<&TopicSpec>) = topics
        .iter()
        .partition(|t| existing.contains(&t.name.as_str()));
    for t in present {
        println!("exists  {}", t.name);
    }
    if missing.is_empty() {
        return Ok(());
    }
    let retention = args.retention_ms.map(|r| r.to_string());
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let n = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(args.replication),
            );
            match &retention {
                Some(r) => n.set("retention.ms", r),
                None => n,
            }
        })
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .context("CreateTopics")?;
    for r in results {
        match r {
            Ok(name) => println!("created {name}"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => println!("exists  {name}"),
            Err((name, code)) => anyhow::bail!("creating {name}: {code}"),
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` unless it exists (then its partition
/// count is left as it is, and a different one is reported).
pub fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let md = probe
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .context("reading metadata")?;
    if let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    {
        if t.partitions().len() as i32 != partitions {
            tracing::warn!(
                topic,
                existing = t.partitions().len(),
                asked = partitions,
                "the topic exists with another partition count; left as it is"
            );
        }
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics([&new], &AdminOptions::new()))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating {name}: {code}"),
        }
    }
    Ok(())
}
