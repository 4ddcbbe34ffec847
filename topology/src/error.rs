//! Errors of the topology crate: one enum for everything that stops a
//! topology ([`TopologyError`]) and one for what a processor says about a
//! single record ([`ProcessError`]).

use weir_state::StateError;

/// Why a record could not be processed. `Record` failures are the record's
/// fault and are routed (dead-letter topic, or stop when none is configured);
/// `State` failures are the machine's fault and stop the task.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The record itself is bad; it goes to the dead-letter route.
    #[error("{kind}: {message}")]
    Record {
        /// Which class of failure.
        kind: FailureKind,
        /// What is wrong, naming the field where there is one.
        message: String,
    },
    /// A state store failed; retrying the record elsewhere may succeed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The topology is wired wrong (e.g. a processor asked for a store it was
    /// not given). Fix the code.
    #[error("topology misuse: {0}")]
    Misuse(String),
}

impl ProcessError {
    /// The bytes do not decode.
    pub fn deserialization(message: impl Into<String>) -> Self {
        Self::Record {
            kind: FailureKind::Deserialization,
            message: message.into(),
        }
    }

    /// The record decodes but breaks a rule.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Record {
            kind: FailureKind::Validation,
            message: message.into(),
        }
    }

    /// The record is valid but could not be processed.
    pub fn processing(message: impl Into<String>) -> Self {
        Self::Record {
            kind: FailureKind::Processing,
            message: message.into(),
        }
    }
}

/// The classes of per-record failure; each has its own dead-letter counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Undecodable bytes (bad UTF-8, bad JSON, not an object, null value…).
    Deserialization,
    /// Decoded but invalid (a rule on a field is broken).
    Validation,
    /// Valid, but processing it failed.
    Processing,
}

impl FailureKind {
    /// The label used in metrics and dead-letter payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deserialization => "deserialization",
            Self::Validation => "validation",
            Self::Processing => "processing",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that stops a topology from being built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The graph is not valid (names, stores, sources).
    #[error("invalid topology: {0}")]
    Invalid(String),
    /// A configuration value is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Kafka client operation failed.
    #[error("kafka: {op}: {source}")]
    Kafka {
        /// What was being done.
        op: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic the topology needs does not exist and is not ours to create.
    #[error("topic {topic:?} does not exist: create it first (Weir creates only its internal changelog topics)")]
    MissingTopic {
        /// The topic.
        topic: String,
    },
    /// An internal topic exists with the wrong shape.
    #[error(
        "topic {topic:?} has {actual} partitions, expected {expected} (same as the input topic)"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions it has.
        actual: usize,
        /// Partitions it must have.
        expected: usize,
    },
    /// A state store failed.
    #[error("task {task}: {source}")]
    State {
        /// `topic-partition` of the task.
        task: String,
        /// The store's error.
        #[source]
        source: StateError,
    },
    /// A record failed and the topology has no dead-letter route for it.
    #[error("record {topic}/{partition}@{offset} failed and no dead-letter topic is configured: {error}")]
    Unrouted {
        /// Input topic.
        topic: String,
        /// Input partition.
        partition: i32,
        /// Input offset.
        offset: i64,
        /// What went wrong.
        error: String,
    },
    /// Producing or flushing records did not succeed in time.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The transactional producer was fenced (another instance took over its
    /// `transactional.id`) or failed fatally: it must be re-created.
    #[error("producer fenced or failed fatally: {0}")]
    ProducerFenced(String),
    /// The runtime's thread died.
    #[error("stream thread panicked: {0}")]
    Panicked(String),
    /// The operating system refused a thread (resource limits).
    #[error("cannot start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}
