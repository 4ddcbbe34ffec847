//! The embedded broker: librdkafka's in-process mock cluster.
//!
//! It speaks the Kafka protocol (consumer groups, commits, idempotent
//! produce), so Weir runs against it exactly as against a real cluster.
//! Its limits, measured: no CreateTopics (topics are created here through
//! the mock API), about 5 MiB kept per partition (older records silently
//! dropped), no compaction, nothing kept across restarts, shallow
//! transactions; and after a member leaves a group cleanly, the next member
//! to join waits for the leaver's session timeout (45 s by default; a Kafka
//! broker rebalances at once). Good for demos, tests and a shared dev
//! broker; not for data you care about.
//!
//! `MockCluster` is not `Send`, so it lives on its own thread and is driven
//! through a channel.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::producer::{BaseProducer, Producer};
pub use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// How long a new group's first rebalance waits for more members (Kafka's
/// `group.initial.rebalance.delay.ms`: 3 s there and in the mock by
/// default). Not 0: the stream threads of one instance join within a
/// millisecond of each other, and with 0 the first one got every partition
/// and lost them to a rebalance a moment later, its first interval's work
/// redone (two threads on two cores, `weir bench`: 105k -> 160k records/s).
/// 250 ms keeps test and dev starts quick. A thread whose join waits
/// longer (librdkafka holds a JoinGroup until the consumer has metadata;
/// stream threads now fetch it before subscribing) still misses the first
/// generation, which costs time, never records.
const INITIAL_REBALANCE_DELAY_MS: i32 = 250;

/// librdkafka settings for jobs on the embedded broker, to go ahead of the
/// user's own (`-X`, which come later and win). Each works around a way of
/// the mock that a Kafka broker does not have:
/// - `consumer.fetch.wait.max.ms=10`: the mock holds every fetch for
///   `fetch.wait.max.ms` (500 ms by default) even when records arrive
///   meanwhile; a Kafka broker answers as soon as it has them.
/// - `consumer.session.timeout.ms=6000`: whenever the mock rebalances a
///   group that was up it waits the session timeout less 1 s for members
///   to rejoin — after a member leaves, and after refusing a follower whose
///   SyncGroup reached it after the leader's (`rdkafka_mock_cgrp.c` clears
///   every assignment once the leader's arrives; the follower must rejoin).
///   With two stream threads that race was lost in about 1 start in 8: a
///   7 s stall with 6 s, 44 s with librdkafka's default of 45 s.
pub fn job_client_defaults() -> Vec<(String, String)> {
    [
        ("consumer.fetch.wait.max.ms", "10"),
        ("consumer.session.timeout.ms", "6000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

/// Errors of the embedded broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// librdkafka could not create the mock cluster.
    #[error("cannot start the embedded broker: {0}")]
    Start(String),
    /// A mock-cluster operation failed.
    #[error("embedded broker: {op}: {message}")]
    Op {
        /// What was asked.
        op: String,
        /// What librdkafka said.
        message: String,
    },
    /// The broker thread is gone.
    #[error("the embedded broker has stopped")]
    Stopped,
    /// A topic spec is not `NAME:PARTITIONS`.
    #[error("topic spec {0:?} must be NAME:PARTITIONS with PARTITIONS >= 1")]
    BadTopicSpec(String),
}

/// A topic to create at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
}

impl std::str::FromStr for TopicSpec {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BrokerError::BadTopicSpec(s.to_string());
        let (name, parts) = s.rsplit_once(':').ok_or_else(bad)?;
        let partitions: i32 = parts.parse().map_err(|_| bad())?;
        if name.is_empty() || partitions < 1 {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_string(),
            partitions,
        })
    }
}

type Reply = mpsc::Sender<Result<(), BrokerError>>;
type Cluster<'c> = rdkafka::mocking::MockCluster<'c, rdkafka::producer::DefaultProducerContext>;
/// An operation run on the broker thread, where the cluster lives.
type Op = Box<dyn FnOnce(&Cluster<'_>) -> Result<(), BrokerError> + Send>;

enum Command {
    Run(Op, Reply),
    /// Starts recording the requests the cluster receives.
    TrackRequests(Reply),
    /// How many recorded requests have this API key.
    CountRequests(RDKafkaApiKey, mpsc::Sender<Result<usize, BrokerError>>),
    Stop,
}

/// A running mock cluster.
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers and creates `topics`. A new
    /// consumer group's first rebalance waits 250 ms for more members
    /// (`INITIAL_REBALANCE_DELAY_MS`; 3 s on the mock by default).
    pub fn start(brokers: i32, topics: &[TopicSpec]) -> Result<Self, BrokerError> {
        let (boot_tx, boot_rx) = mpsc::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("weir-embedded-broker".into())
            .spawn(move || serve(brokers, boot_tx, cmd_rx))
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        let bootstrap = boot_rx
            .recv()
            .map_err(|_| BrokerError::Start("broker thread exited".into()))??;
        let broker = Self {
            bootstrap,
            commands: cmd_tx,
            thread: Some(thread),
        };
        for t in topics {
            broker.create_topic(&t.name, t.partitions)?;
        }
        Ok(broker)
    }

    /// `host:port,…` for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Runs `op` on the cluster (it lives on the broker thread); `what`
    /// names it in errors.
    fn run(
        &self,
        what: String,
        op: impl FnOnce(&Cluster<'_>) -> rdkafka::error::KafkaResult<()> + Send + 'static,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        let op: Op = Box::new(move |c| op(c).map_err(op_err(what)));
        self.commands
            .send(Command::Run(op, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Creates a topic (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        let name = name.to_string();
        self.run(format!("create topic {name}"), move |c| {
            c.create_topic(&name, partitions, 1)
        })
    }

    /// Makes the next requests of one API fail with these errors, one per
    /// request, for any client (fault injection).
    pub fn request_errors(
        &self,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> Result<(), BrokerError> {
        let errors = errors.to_vec();
        self.run("inject request errors".into(), move |c| {
            c.request_errors(api, &errors);
            Ok(())
        })
    }

    /// Delays every response of a broker (fault injection; zero removes it).
    pub fn round_trip_time(
        &self,
        broker_id: i32,
        delay: std::time::Duration,
    ) -> Result<(), BrokerError> {
        self.run(format!("delay broker {broker_id}"), move |c| {
            c.broker_round_trip_time(broker_id, delay)
        })
    }

    /// Takes a broker down (fault injection): its connections are closed and
    /// new ones refused until [`Self::broker_up`].
    pub fn broker_down(&self, broker_id: i32) -> Result<(), BrokerError> {
        self.run(format!("take broker {broker_id} down"), move |c| {
            c.broker_down(broker_id)
        })
    }

    /// Brings a broker back up.
    pub fn broker_up(&self, broker_id: i32) -> Result<(), BrokerError> {
        self.run(format!("bring broker {broker_id} up"), move |c| {
            c.broker_up(broker_id)
        })
    }

    /// Moves a partition's leadership to a broker (fault injection: with
    /// [`Self::broker_down`], one topic can fail while others work).
    pub fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        broker_id: i32,
    ) -> Result<(), BrokerError> {
        let topic = topic.to_string();
        self.run(
            format!("move {topic}[{partition}] to broker {broker_id}"),
            move |c| c.partition_leader(&topic, partition, Some(broker_id)),
        )
    }

    /// Starts recording every request the cluster receives, so a test can
    /// see which protocol exchanges a scenario caused ([`Self::requests`]).
    /// Recorded until the broker stops: not for long-running brokers.
    pub fn track_requests(&self) -> Result<(), BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::TrackRequests(tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// How many requests of one API the cluster received since
    /// [`Self::track_requests`].
    pub fn requests(&self, api: RDKafkaApiKey) -> Result<usize, BrokerError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::CountRequests(api, tx))
            .map_err(|_| BrokerError::Stopped)?;
        rx.recv().map_err(|_| BrokerError::Stopped)?
    }

    /// Pins a consumer group's coordinator to a broker.
    pub fn group_coordinator(&self, group: &str, broker_id: i32) -> Result<(), BrokerError> {
        let group = group.to_string();
        self.run(
            format!("pin group {group} to broker {broker_id}"),
            move |c| c.coordinator(rdkafka::mocking::MockCoordinator::Group(group), broker_id),
        )
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How many of the requests `raw` recorded have the API key `api`.
fn count_requests(
    raw: *mut rdkafka::bindings::rd_kafka_mock_cluster_t,
    api: RDKafkaApiKey,
) -> usize {
    let mut n = 0usize;
    // SAFETY: `raw` is the live cluster (the caller's). librdkafka returns a
    // copy of its records: `n` pointers, each valid until the array is
    // destroyed below, once.
    unsafe {
        let reqs = rdkafka::bindings::rd_kafka_mock_get_requests(raw, &mut n);
        if reqs.is_null() {
            return 0;
        }
        let count = (0..n)
            .filter(|i| {
                rdkafka::bindings::rd_kafka_mock_request_api_key(*reqs.add(*i)) == api as i16
            })
            .count();
        rdkafka::bindings::rd_kafka_mock_request_destroy_array(reqs, n);
        count
    }
}

fn op_err(op: String) -> impl FnOnce(rdkafka::error::KafkaError) -> BrokerError {
    move |e| BrokerError::Op {
        op,
        message: e.to_string(),
    }
}

fn serve(
    brokers: i32,
    boot: mpsc::Sender<Result<String, BrokerError>>,
    commands: mpsc::Receiver<Command>,
) {
    // The cluster lives inside this client: `test.mock.num.brokers` makes
    // librdkafka start it, and gives us the handle to tune it.
    let host: BaseProducer = match ClientConfig::new()
        .set("test.mock.num.brokers", brokers.to_string())
        .set("log_level", "3")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            let _ = boot.send(Err(BrokerError::Start(e.to_string())));
            return;
        }
    };
    let Some(cluster) = host.client().mock_cluster() else {
        let _ = boot.send(Err(BrokerError::Start(
            "librdkafka did not create a mock cluster".into(),
        )));
        return;
    };
    // SAFETY: the pointer comes from the live client that owns the cluster
    // (`host`, alive until the end of this function, on this thread).
    let raw =
        unsafe { rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr()) };
    if !raw.is_null() {
        // SAFETY: `raw` is the live cluster; the call only sets a number on it.
        unsafe {
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
                raw,
                INITIAL_REBALANCE_DELAY_MS,
            );
        }
    }
    let no_raw = || BrokerError::Op {
        op: "track requests".into(),
        message: "librdkafka gave no mock cluster handle".into(),
    };
    let _ = boot.send(Ok(cluster.bootstrap_servers()));
    for cmd in commands {
        match cmd {
            Command::Run(op, reply) => {
                let _ = reply.send(op(&cluster));
            }
            Command::TrackRequests(reply) => {
                let r = if raw.is_null() {
                    Err(no_raw())
                } else {
                    // SAFETY: `raw` is the live cluster, used on its own thread.
                    unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(raw) };
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Command::CountRequests(api, reply) => {
                let r = if raw.is_null() {
                    Err(no_raw())
                } else {
                    Ok(count_requests(raw, api))
                };
                let _ = reply.send(r);
            }
            Command::Stop => break,
        }
    }
    drop(cluster);
    drop(host);
}
