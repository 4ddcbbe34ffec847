//! Topic checks and creation at start-up.
//!
//! The source, sink and dead-letter topics are the user's: they must exist.
//! Changelog topics are ours: created when missing, compacted, with the
//! source topic's partition count (task N's store logs to changelog
//! partition N). Creation goes through the Admin API, as on any cluster.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use crate::kafka::client::{config, Client};
use crate::{StreamsConfig, Topology, TopologyError};

fn partitions(md: &Metadata, topic: &str) -> Option<usize> {
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len())
}

/// Checks every topic the topology uses and creates missing changelog
/// topics. Returns the source topic's partition count.
pub(crate) fn ensure_topics(
    cfg: &StreamsConfig,
    topology: &Topology,
    instance: &str,
) -> Result<usize, TopologyError> {
    let admin: AdminClient<DefaultClientContext> = config(cfg, Client::Admin, instance)
        .create()
        .map_err(|source| TopologyError::Kafka {
            op: "create admin client".into(),
            source,
        })?;
    let metadata = |admin: &AdminClient<DefaultClientContext>| {
        admin
            .inner()
            .fetch_metadata(None, cfg.request_timeout)
            .map_err(|source| TopologyError::Kafka {
                op: format!("fetch metadata from {}", cfg.bootstrap_servers),
                source,
            })
    };
    let md = metadata(&admin)?;
    let source = topology.source_topic();
    let n = partitions(&md, source).ok_or_else(|| TopologyError::MissingTopic {
        topic: source.to_string(),
    })?;
    for t in topology
        .sink_topics()
        .iter()
        .map(String::as_str)
        .chain(topology.dead_letter_topic())
    {
        if partitions(&md, t).is_none() {
            return Err(TopologyError::MissingTopic {
                topic: t.to_string(),
            });
        }
    }
    let mut missing = Vec::new();
    for s in topology.stores().iter().filter(|s| s.changelog) {
        let name = Topology::changelog_topic(&cfg.application_id, &s.name);
        match partitions(&md, &name) {
            Some(p) if p == n => {}
            Some(actual) => {
                return Err(TopologyError::PartitionMismatch {
                    topic: name,
                    actual,
                    expected: n,
                })
            }
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        return Ok(n);
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                n as i32,
                TopicReplication::Fixed(cfg.changelog_replication),
            )
            .set("cleanup.policy", "compact")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(cfg.request_timeout));
    let results =
        futures_executor::block_on(admin.create_topics(&new, &opts)).map_err(|source| {
            TopologyError::Kafka {
                op: format!("create changelog topics {missing:?}"),
                source,
            }
        })?;
    for r in results {
        match r {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = n, "created changelog topic (compacted)")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(TopologyError::Kafka {
                    op: format!("create changelog topic {name}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    // Creation is asynchronous on the brokers: wait until metadata shows it.
    let deadline = Instant::now() + cfg.request_timeout;
    loop {
        let md = metadata(&admin)?;
        if missing.iter().all(|t| partitions(&md, t) == Some(n)) {
            return Ok(n);
        }
        if Instant::now() > deadline {
            return Err(TopologyError::Commit(format!(
                "changelog topics {missing:?} did not appear in metadata within {:?}",
                cfg.request_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
