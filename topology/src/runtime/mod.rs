//! Running a topology on Kafka.
//!
//! [`KafkaStreams::start`] checks the configuration and the topics (creating
//! changelog topics), then runs one stream thread: one consumer-group member
//! with one task per assigned input partition. The returned
//! [`StreamsHandle`] reports state and stops it; shutdown is injected, so
//! tests start and stop topologies in-process.

mod commit;
mod context;
mod manager;
mod restore;
mod status;
mod stream_thread;
mod task;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use status::AppState;

use crate::kafka::admin::ensure_topics;
use crate::kafka::client::{config, Client};
use crate::kafka::producer::{DeliveryTracker, WeirProducer};
use crate::{StreamsConfig, Topology, TopologyError};
use manager::TaskManager;
use restore::Restorer;
use status::Status;

/// Entry point of the runtime.
pub struct KafkaStreams;

impl KafkaStreams {
    /// Validates `config`, checks topics (creating missing changelog topics),
    /// creates the producer and starts the stream thread. Errors here are
    /// configuration or connectivity problems, reported before any record
    /// is touched.
    pub fn start(
        topology: Topology,
        config: StreamsConfig,
    ) -> Result<StreamsHandle, TopologyError> {
        config.validate()?;
        let instance = instance_id();
        let partitions = ensure_topics(&config, &topology, &instance)?;
        crate::metrics::register_series(&topology, &config.application_id);
        tracing::info!(
            application_id = %config.application_id,
            source = %topology.source_topic(),
            partitions,
            state_dir = %config.state_dir.display(),
            "starting"
        );
        let producer: WeirProducer = self::config(&config, Client::Producer, &instance)
            .create_with_context(DeliveryTracker::default())
            .map_err(|source| TopologyError::Kafka {
                op: "create producer".into(),
                source,
            })?;
        let restorer = Restorer::new(&config, &instance)?;
        let status = Arc::new(Status::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let manager = TaskManager::new(config, topology, producer, restorer, status.clone());
        let thread = {
            let status = status.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("weir-stream-{instance}"))
                .spawn(move || {
                    let result = stream_thread::run(manager, &instance, &shutdown);
                    match &result {
                        Ok(()) => {
                            tracing::info!("stopped cleanly");
                            status.stopped(None);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "stream thread stopped on error");
                            status.stopped(Some(e.to_string()));
                        }
                    }
                    result
                })
                .map_err(|e| TopologyError::Panicked(format!("cannot spawn stream thread: {e}")))?
        };
        Ok(StreamsHandle {
            thread: Some(thread),
            shutdown,
            status,
        })
    }
}

fn instance_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cloneable, read-only view of a running topology's state (for
/// readiness probes and metrics, which outlive no one).
#[derive(Clone)]
pub struct StreamsStatus(Arc<Status>);

impl StreamsStatus {
    /// The current lifecycle state.
    pub fn state(&self) -> AppState {
        self.0.state()
    }

    /// Input partitions assigned now.
    pub fn assigned_partitions(&self) -> usize {
        self.0.assigned()
    }

    /// Tasks still restoring.
    pub fn restoring_tasks(&self) -> usize {
        self.0.restoring()
    }

    /// The error the stream thread stopped on, if it did.
    pub fn error(&self) -> Option<String> {
        self.0.error()
    }
}

/// A running topology.
pub struct StreamsHandle {
    thread: Option<JoinHandle<Result<(), TopologyError>>>,
    shutdown: Arc<AtomicBool>,
    status: Arc<Status>,
}

impl StreamsHandle {
    /// A cloneable view of the state.
    pub fn status(&self) -> StreamsStatus {
        StreamsStatus(self.status.clone())
    }

    /// The current lifecycle state.
    pub fn state(&self) -> AppState {
        self.status.state()
    }

    /// Ready = every assigned task restored and processing.
    pub fn is_ready(&self) -> bool {
        self.state() == AppState::Running
    }

    /// Input partitions assigned now.
    pub fn assigned_partitions(&self) -> usize {
        self.status.assigned()
    }

    /// Tasks still restoring.
    pub fn restoring_tasks(&self) -> usize {
        self.status.restoring()
    }

    /// The error the thread stopped on, if it did.
    pub fn error(&self) -> Option<String> {
        self.status.error()
    }

    /// True once the stream thread has exited.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the stream thread to stop (commit, flush state, leave the group).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Waits until the stream thread exits and returns how it ended.
    pub fn join(mut self) -> Result<(), TopologyError> {
        self.join_inner()
    }

    /// Stops and waits.
    pub fn close(self) -> Result<(), TopologyError> {
        self.shutdown();
        self.join()
    }

    /// Waits until `state()` is `Running` with at least one partition, or
    /// the deadline passes. Returns whether it got there.
    pub fn wait_until_running(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.state() == AppState::Running && self.assigned_partitions() > 0 {
                return true;
            }
            if self.is_finished() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn join_inner(&mut self) -> Result<(), TopologyError> {
        match self.thread.take() {
            None => Ok(()),
            Some(t) => t.join().unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(TopologyError::Panicked(msg))
            }),
        }
    }
}

impl Drop for StreamsHandle {
    fn drop(&mut self) {
        self.shutdown();
        let _ = self.join_inner();
    }
}
