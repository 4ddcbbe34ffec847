//! Running a topology on Kafka.
//!
//! [`KafkaStreams::start`] checks the configuration and the topics (creating
//! changelog topics), then runs `num_stream_threads` stream threads, each one
//! consumer-group member with one task per assigned input partition. The returned
//! [`StreamsHandle`] reports state and stops it; shutdown is injected, so
//! tests start and stop topologies in-process.

mod commit;
mod context;
mod manager;
mod restore;
mod sender;
mod status;
mod stream_thread;
mod task;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

pub use status::AppState;

use crate::kafka::admin::ensure_topics;
use crate::kafka::client::{config, Client};
use crate::kafka::producer::{DeliveryTracker, WeirProducer};
use crate::{Guarantee, StreamsConfig, Topology, TopologyError};
use manager::TaskManager;
use restore::Restorer;
use status::{Status, ThreadStatus};

/// Entry point of the runtime.
pub struct KafkaStreams;

impl KafkaStreams {
    /// Validates `config`, checks topics (creating missing changelog topics),
    /// creates the producer (initialising transactions under exactly-once)
    /// and starts the stream threads. Errors here are configuration or
    /// connectivity problems, reported before any record is touched.
    pub fn start(
        topology: Topology,
        config: StreamsConfig,
    ) -> Result<StreamsHandle, TopologyError> {
        config.validate()?;
        let instance = stable_instance_id(&config)?;
        let partitions = ensure_topics(&config, &topology, &instance)?;
        crate::metrics::register_series(&topology, &config.application_id);
        tracing::info!(
            application_id = %config.application_id,
            instance = %instance,
            guarantee = %config.guarantee,
            source = %topology.source_topic(),
            partitions,
            state_dir = %config.state_dir.display(),
            "starting"
        );
        let threads = config.num_stream_threads;
        let status = Status::new(threads);
        let shutdown = Arc::new(AtomicBool::new(false));
        // Every thread's first manager is built here, so configuration and
        // connection errors reach the caller; after a fencing a thread
        // builds anew. All at once: under exactly-once each initialises its
        // producer's transactions, a round of broker requests. One after
        // another, the second of two threads' producers was ready 0.50 s
        // after the first (embedded broker); together both are ready ~55 ms
        // after start.
        let built: Vec<Result<TaskManager, TopologyError>> = std::thread::scope(|s| {
            let builders: Vec<_> = (0..threads)
                .map(|index| {
                    let (config, topology, status) = (&config, &topology, &status);
                    let name = thread_instance(&instance, index);
                    std::thread::Builder::new()
                        .name(format!("weir-init-{index}"))
                        .spawn_scoped(s, move || {
                            build_manager(config, topology, &name, &status.thread(index))
                        })
                })
                .collect();
            builders
                .into_iter()
                .map(|b| match b {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|p| Err(TopologyError::Panicked(panic_message(&*p)))),
                    Err(source) => Err(TopologyError::Spawn {
                        what: "stream",
                        source,
                    }),
                })
                .collect()
        });
        let mut firsts = Vec::with_capacity(threads);
        for (index, manager) in built.into_iter().enumerate() {
            firsts.push((manager?, thread_instance(&instance, index), index));
        }
        let mut handles = Vec::with_capacity(threads);
        for (first, name, index) in firsts {
            let status = status.thread(index);
            let stop = shutdown.clone();
            let (config, topology) = (config.clone(), topology.clone());
            let thread = std::thread::Builder::new()
                .name(format!("weir-stream-{name}"))
                .spawn(move || {
                    // A panic is this thread's error too: the others stop
                    // and the handle reports it.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_with_restarts(first, &config, &topology, &name, &status, &stop)
                    }))
                    .unwrap_or_else(|p| Err(TopologyError::Panicked(panic_message(&*p))));
                    match &result {
                        Ok(()) => {
                            tracing::info!(thread = %name, "stopped cleanly");
                            status.stopped(None);
                        }
                        Err(e) => {
                            tracing::error!(thread = %name, error = %e, "stream thread stopped on error");
                            status.stopped(Some(e.to_string()));
                            // One thread's error stops the instance, as it
                            // would with one thread: its partitions move to
                            // healthy instances instead of stalling here.
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    result
                });
            match thread {
                Ok(t) => handles.push(t),
                Err(e) => {
                    shutdown.store(true, Ordering::SeqCst);
                    for t in handles {
                        let _ = t.join();
                    }
                    return Err(TopologyError::Spawn {
                        what: "stream",
                        source: e,
                    });
                }
            }
        }
        Ok(StreamsHandle {
            threads: handles,
            shutdown,
            status,
        })
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Thread `index`'s instance name: the instance's own for the first thread
/// (so a one-thread instance keeps its `transactional.id`), `-<index>` after.
fn thread_instance(instance: &str, index: usize) -> String {
    if index == 0 {
        instance.to_string()
    } else {
        format!("{instance}-{index}")
    }
}

/// Producer (transactions initialised under exactly-once, which fences any
/// zombie with the same `transactional.id` and aborts its open
/// transaction), restore consumer and task manager.
fn build_manager(
    config: &StreamsConfig,
    topology: &Topology,
    instance: &str,
    status: &ThreadStatus,
) -> Result<TaskManager, TopologyError> {
    let producer: WeirProducer = self::config(config, Client::Producer, instance)
        .create_with_context(DeliveryTracker::default())
        .map_err(|source| TopologyError::Kafka {
            op: "create producer".into(),
            source,
        })?;
    if config.guarantee == Guarantee::ExactlyOnce {
        producer
            .init_transactions(config.request_timeout)
            .map_err(|source| TopologyError::Kafka {
                op: format!("init transactions for {}-{instance}", config.application_id),
                source,
            })?;
    }
    let restorer = Restorer::new(config, instance)?;
    let run = run_id();
    // Records this run writes carry it in their weir.run header when they
    // are stamped (`StreamsConfig::provenance_headers`); logs name it always.
    tracing::info!(%run, "producer ready");
    TaskManager::new(
        config.clone(),
        topology.clone(),
        producer,
        restorer,
        status.clone(),
        run,
        instance,
    )
}

/// Runs the stream thread; after a fencing or a fatal producer error,
/// closes everything and starts again with a new producer and consumer
/// (rejoining the group), backing off between attempts.
fn run_with_restarts(
    first: TaskManager,
    config: &StreamsConfig,
    topology: &Topology,
    instance: &str,
    status: &ThreadStatus,
    shutdown: &AtomicBool,
) -> Result<(), TopologyError> {
    let mut manager = first;
    let mut backoff = Duration::from_millis(100);
    let mut fencings: Vec<Instant> = Vec::new();
    loop {
        match stream_thread::run(manager, instance, shutdown) {
            Err(TopologyError::ProducerFenced(why)) if !shutdown.load(Ordering::SeqCst) => {
                // Fenced again and again: another *live* process uses this
                // transactional.id, and the two would fence each other forever.
                fencings.retain(|t| t.elapsed() < Duration::from_secs(60));
                fencings.push(Instant::now());
                if fencings.len() > 3 {
                    return Err(TopologyError::Config(format!(
                        "producer fenced {} times in a minute: another live instance uses transactional.id {}-{instance}; give each instance its own --instance-id or state directory (last error: {why})",
                        fencings.len(),
                        config.application_id
                    )));
                }
                tracing::warn!(%why, backoff_ms = backoff.as_millis() as u64, "producer fenced or failed: re-creating it and rejoining the group");
                ::metrics::counter!(crate::metrics::RETRIES, crate::metrics::LABEL_OPERATION => "producer").increment(1);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                manager = build_manager(config, topology, instance, status)?;
            }
            other => return other,
        }
    }
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// Names this process run in its logs and in the `weir.run` header of the
/// records it produces, when they are stamped.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{}",
        nanos,
        std::process::id(),
        NEXT_RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// The instance id: configured, or derived from the host name and the
/// state directory's absolute path. Stable across restarts *and* across the
/// loss of the state directory's contents, so a restarted instance always
/// fences its predecessor's zombie producer and aborts its unfinished
/// transaction at once (otherwise the broker waits for the transaction
/// timeout). Two instances on one host have different state directories
/// (RocksDB's lock enforces it), hence different ids.
fn stable_instance_id(config: &StreamsConfig) -> Result<String, TopologyError> {
    if let Some(id) = &config.instance_id {
        return Ok(id.clone());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "local".into());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    std::fs::create_dir_all(&config.state_dir).map_err(|source| TopologyError::State {
        task: "instance".into(),
        source: weir_state::StateError::Io {
            store: "state directory".into(),
            op: "create",
            path: config.state_dir.clone(),
            source,
        },
    })?;
    let dir = std::fs::canonicalize(&config.state_dir).unwrap_or_else(|_| config.state_dir.clone());
    // FNV-1a: a short, stable name for the path (not a security boundary).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.to_string_lossy().bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{host}-{:08x}", h as u32))
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

    /// Input records processed by this instance since it started (including
    /// ones whose interval was later aborted and reprocessed).
    pub fn records_processed(&self) -> u64 {
        self.0.processed()
    }

    /// Input records whose processing has committed — offsets, outputs and
    /// state — since the instance started: how far its consumer lag has
    /// come down. Lags `records_processed` by up to one commit interval.
    pub fn records_committed(&self) -> u64 {
        self.0.committed()
    }

    /// Partition assignments the instance's stream threads received since
    /// it started: one per thread when they joined the group together and
    /// nothing moved since; each rebalance adds one per thread.
    pub fn assignments(&self) -> u64 {
        self.0.assignments()
    }

    /// Commits that failed in a row and are being retried (broker
    /// trouble, an output that cannot be delivered); 0 when the last one
    /// succeeded. Input does not move past uncommitted work meanwhile.
    pub fn failed_commits(&self) -> u64 {
        self.0.failed_commits()
    }

    /// The error the first failed stream thread stopped on, if one did.
    pub fn error(&self) -> Option<String> {
        self.0.error()
    }
}

/// A running topology.
pub struct StreamsHandle {
    threads: Vec<JoinHandle<Result<(), TopologyError>>>,
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

    /// True once every stream thread has exited.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Asks the stream threads to stop (commit, flush state, leave the group).
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }

    /// Waits until every stream thread exits and returns how they ended
    /// (the first error, if any).
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

    /// Joins every thread; the first error wins.
    fn join_inner(&mut self) -> Result<(), TopologyError> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|p| Err(TopologyError::Panicked(panic_message(&*p))));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for StreamsHandle {
    fn drop(&mut self) {
        self.shutdown();
        let _ = self.join_inner();
    }
}
