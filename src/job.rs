//! Starting the inventory job: what `weir run` does after parsing flags,
//! and what integration tests call directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weir_topology::{
    AppState, Guarantee, KafkaStreams, ProvenanceHeaders, StreamsConfig, StreamsHandle,
    TopologyError,
};

use crate::inventory::{inventory_topology_with, InventoryTopics, DEFAULT_DEDUP_RETENTION};
use crate::observability::{Readiness, ReadinessProbe};

/// Everything needed to run the inventory job on a cluster.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Group id and internal topic prefix.
    pub application_id: String,
    /// Root of the state directories.
    pub state_dir: PathBuf,
    /// Topic names.
    pub topics: InventoryTopics,
    /// How often to commit.
    pub commit_interval: Duration,
    /// Also commit once the input is caught up (`StreamsConfig::commit_when_caught_up`).
    pub commit_when_caught_up: bool,
    /// Exactly-once (the job's default) or at-least-once.
    pub guarantee: Guarantee,
    /// Instance id for the `transactional.id` (default: kept in the state dir).
    pub instance_id: Option<String>,
    /// How long a confirmed orderId is remembered (`None`: forever).
    pub dedup_retention: Option<Duration>,
    /// librdkafka settings passed through.
    pub kafka: Vec<(String, String)>,
    /// Stream threads (consumer-group members) in this process.
    pub stream_threads: usize,
    /// Whether records carry `weir.run`/`weir.txn` (default: never).
    pub provenance_headers: ProvenanceHeaders,
}

impl JobConfig {
    /// Defaults for everything but the brokers: exactly-once, commits every 100 ms.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            application_id: "inventory".into(),
            state_dir: PathBuf::from("./state"),
            topics: InventoryTopics::default(),
            commit_interval: Duration::from_millis(100),
            commit_when_caught_up: true,
            guarantee: Guarantee::ExactlyOnce,
            instance_id: None,
            dedup_retention: Some(DEFAULT_DEDUP_RETENTION),
            kafka: Vec::new(),
            stream_threads: 1,
            provenance_headers: ProvenanceHeaders::Never,
        }
    }

    /// The runtime configuration this job runs with.
    pub fn streams_config(&self) -> StreamsConfig {
        let mut c = StreamsConfig::new(&self.application_id, &self.brokers);
        c.state_dir = self.state_dir.clone();
        c.commit_interval = self.commit_interval;
        c.commit_when_caught_up = self.commit_when_caught_up;
        c.guarantee = self.guarantee;
        c.instance_id = self.instance_id.clone();
        c.client_overrides = self.kafka.clone();
        c.num_stream_threads = self.stream_threads;
        c.provenance_headers = self.provenance_headers;
        c
    }
}

/// A running inventory job.
pub struct Job {
    handle: StreamsHandle,
}

impl Job {
    /// Builds the topology and starts it.
    pub fn start(cfg: &JobConfig) -> Result<Self, TopologyError> {
        let topology =
            inventory_topology_with(&cfg.topics, &cfg.application_id, cfg.dedup_retention)?;
        let handle = KafkaStreams::start(topology, cfg.streams_config())?;
        Ok(Self { handle })
    }

    /// The runtime handle.
    pub fn handle(&self) -> &StreamsHandle {
        &self.handle
    }

    /// What `/ready` reports for this job.
    pub fn readiness(&self) -> ReadinessProbe {
        let status = self.handle.status();
        Arc::new(move || {
            let state = status.state();
            // Failing commits (an output or the broker unreachable): the job
            // is retrying, not making progress.
            let failed_commits = status.failed_commits();
            Readiness {
                ready: state == AppState::Running && failed_commits == 0,
                detail: serde_json::json!({
                    "state": format!("{state:?}"),
                    "assignedPartitions": status.assigned_partitions(),
                    "restoringTasks": status.restoring_tasks(),
                    "failedCommitsInARow": failed_commits,
                    "error": status.error(),
                }),
            }
        })
    }

    /// Stops the job (commit, flush state, leave the group) and waits.
    pub fn stop(self) -> Result<(), TopologyError> {
        self.handle.close()
    }
}
