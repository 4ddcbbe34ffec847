//! `StreamsConfig`: the one configuration struct of the runtime, passed down
//! by value. Every default is documented here; anything the runtime does not
//! model is passed to librdkafka as-is.

use std::path::PathBuf;
use std::time::Duration;

use weir_state::RocksDbOptions;

use crate::TopologyError;

/// The processing guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Outputs are sent as records are processed and input offsets are
    /// committed after they are delivered: a crash can repeat outputs, never
    /// lose them.
    #[default]
    AtLeastOnce,
    /// Outputs, changelog records and input offsets are committed in one
    /// Kafka transaction per commit interval (EOS v2: one transactional
    /// producer per instance); readers with `read_committed` see each
    /// result once.
    ExactlyOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "at-least-once" | "at_least_once" => Ok(Self::AtLeastOnce),
            "exactly-once" | "exactly_once" | "exactly-once-v2" => Ok(Self::ExactlyOnce),
            _ => Err(format!("{s:?}: expected at-least-once or exactly-once")),
        }
    }
}

impl std::fmt::Display for Guarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AtLeastOnce => "at-least-once",
            Self::ExactlyOnce => "exactly-once",
        })
    }
}

/// Whether records carry Weir's provenance headers: `weir.run` (the
/// process run that produced the record) and `weir.txn` (its commit
/// interval; under exactly-once, its transaction).
///
/// They are a diagnostic, off by default. With the job's log (which names
/// every transaction it aborts) they let a checker tell the records of an
/// aborted or unfinished transaction on a broker whose `read_committed`
/// readers still see them, as Weir's crash tests do on nisshi; a consumer
/// without that log cannot, and on a broker that hides aborted records
/// there is nothing to tell apart. Otherwise they are ~30 bytes on every
/// record and, on a broker that stores headers apart, a write each
/// (nisshi, exactly-once: 6.1–6.3k records/s with them, 10.3k without).
/// Exactly-once changelog records tell their input offset either way
/// (restore reads it): the dedup store's in their values, others in a
/// `weir.source.offset` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceHeaders {
    /// No record is stamped.
    #[default]
    Never,
    /// Every output, dead letter and changelog record.
    Always,
}

impl ProvenanceHeaders {
    /// Whether records are stamped.
    pub fn stamped(self) -> bool {
        self == Self::Always
    }
}

impl std::str::FromStr for ProvenanceHeaders {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Self::Never),
            "always" => Ok(Self::Always),
            _ => Err(format!("{s:?}: expected never or always")),
        }
    }
}

impl std::fmt::Display for ProvenanceHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Never => "never",
            Self::Always => "always",
        })
    }
}

/// More stream threads than this is a typo, not a plan.
const MAX_STREAM_THREADS: usize = 64;

/// Runtime configuration.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// The consumer group id and the prefix of internal topics
    /// (`<application-id>-<store>-changelog`). Instances with the same id
    /// share the work.
    pub application_id: String,
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Where store partitions live: `<state-dir>/<application-id>/<store>/<partition>`.
    /// Default `./state`.
    pub state_dir: PathBuf,
    /// How often the commit protocol runs. Default 1 s: at-least-once outputs
    /// are sent as records are processed, so this bounds the duplicates a
    /// crash can cause, not latency. See also `commit_when_caught_up`.
    pub commit_interval: Duration,
    /// Also commit as soon as a poll waited `poll_timeout` for nothing after
    /// records were processed: once the input is caught up, the group's
    /// committed lag is 0 (and a crash repeats nothing) within a poll, not
    /// an interval. It adds at most one commit per `poll_timeout`, only
    /// while records arrive more than a poll apart. Default true; false
    /// commits only at the interval, on revocation and at a stop.
    pub commit_when_caught_up: bool,
    /// Most records taken from one poll before processing. Default 1000.
    pub max_batch: usize,
    /// How long a poll waits when nothing is there. Default 100 ms (also the
    /// shutdown reaction time).
    pub poll_timeout: Duration,
    /// How often lag and store gauges are refreshed. Default 1 s.
    pub metrics_interval: Duration,
    /// librdkafka settings (`-X key=value`). Unprefixed keys go to every
    /// client; `consumer.`, `producer.`, `restore.consumer.` and `admin.`
    /// prefixes target one client, as in Kafka Streams.
    pub client_overrides: Vec<(String, String)>,
    /// RocksDB memory settings per store partition.
    pub rocksdb: RocksDbOptions,
    /// Replication factor of changelog topics Weir creates; -1 uses the
    /// broker's default. Default -1.
    pub changelog_replication: i32,
    /// Timeout for metadata, admin, flush and commit calls. Default 30 s.
    pub request_timeout: Duration,
    /// At-least-once (the library's default) or exactly-once.
    pub guarantee: Guarantee,
    /// Names this instance in its `transactional.id`
    /// (`<application-id>-<instance-id>`). `None`: derived from the host name
    /// and the state directory's path, so a restarted instance (even one
    /// whose state was lost) fences its predecessor's zombie and aborts its
    /// unfinished transaction. Set it when instances move between hosts
    /// with their identity (e.g. a StatefulSet's pod name).
    pub instance_id: Option<String>,
    /// Longest a transaction may stay open before the broker aborts it; also
    /// how long a killed instance's unfinished transaction can hold back
    /// `read_committed` readers when no restart fences it. Default 10 s.
    pub transaction_timeout: Duration,
    /// Stream threads in this instance (Kafka Streams' `num.stream.threads`).
    /// Each is a consumer-group member with its own producer, restore
    /// consumer and tasks; more than one lets a machine with spare cores
    /// process partitions in parallel. Thread `i > 0` is instance
    /// `<instance-id>-<i>` (its `transactional.id`). Default 1.
    pub num_stream_threads: usize,
    /// Whether records carry `weir.run`/`weir.txn` ([`ProvenanceHeaders`]).
    /// Default: none do.
    pub provenance_headers: ProvenanceHeaders,
}

impl StreamsConfig {
    /// A configuration with every default and the two required settings.
    pub fn new(application_id: impl Into<String>, bootstrap_servers: impl Into<String>) -> Self {
        Self {
            application_id: application_id.into(),
            bootstrap_servers: bootstrap_servers.into(),
            state_dir: PathBuf::from("./state"),
            commit_interval: Duration::from_secs(1),
            commit_when_caught_up: true,
            max_batch: 1000,
            poll_timeout: Duration::from_millis(100),
            metrics_interval: Duration::from_secs(1),
            client_overrides: Vec::new(),
            rocksdb: RocksDbOptions::default(),
            changelog_replication: -1,
            request_timeout: Duration::from_secs(30),
            guarantee: Guarantee::AtLeastOnce,
            instance_id: None,
            transaction_timeout: Duration::from_secs(10),
            num_stream_threads: 1,
            provenance_headers: ProvenanceHeaders::Never,
        }
    }

    /// Adds a librdkafka setting.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client_overrides.push((key.into(), value.into()));
        self
    }

    /// Checks values a typo could break, with a message that says what to fix.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let bad = |m: String| Err(TopologyError::Config(m));
        if self.application_id.is_empty()
            || !self
                .application_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return bad(format!(
                "application id {:?} must be non-empty and use only letters, digits, '.', '_' and '-' (it names topics and directories)",
                self.application_id
            ));
        }
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap servers are empty".into());
        }
        if self.commit_interval.is_zero() {
            return bad("commit interval must be positive".into());
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return bad(format!(
                    "instance id {id:?} must be non-empty and use only letters, digits, '.', '_' and '-'"
                ));
            }
        }
        if !(1..=MAX_STREAM_THREADS).contains(&self.num_stream_threads) {
            return bad(format!(
                "stream threads must be between 1 and {MAX_STREAM_THREADS}, got {}",
                self.num_stream_threads
            ));
        }
        if self.max_batch == 0 {
            return bad("max batch must be at least 1".into());
        }
        for (k, v) in &self.client_overrides {
            let key = k.rsplit_once('.').map(|_| k.as_str()).unwrap_or(k);
            if key.ends_with("partition.assignment.strategy") && v.contains("cooperative") {
                return bad(format!(
                    "{k}={v}: Weir's tasks follow the eager rebalance protocol; use range or roundrobin"
                ));
            }
            if key.ends_with("enable.auto.commit") && v == "true" {
                return bad(format!(
                    "{k}={v}: offsets are committed by Weir's commit protocol, never automatically"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_headers_are_off_by_default() {
        let default = StreamsConfig::new("a", "b:1").provenance_headers;
        assert_eq!(default, ProvenanceHeaders::Never);
        assert!(!default.stamped());
        assert!(ProvenanceHeaders::Always.stamped());
        for v in ["never", "always"] {
            assert_eq!(v.parse::<ProvenanceHeaders>().unwrap().to_string(), v);
        }
        let e = "auto".parse::<ProvenanceHeaders>().unwrap_err();
        assert!(e.contains("never or always"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let ok = StreamsConfig::new("inventory", "localhost:9092");
        assert!(ok.validate().is_ok());
        let e = StreamsConfig::new("in ventory", "x:1")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("application id"), "{e}");
        let mut none = ok.clone();
        none.num_stream_threads = 0;
        let e = none.validate().unwrap_err();
        assert!(e.to_string().contains("stream threads"), "{e}");
        let e = ok
            .clone()
            .set("partition.assignment.strategy", "cooperative-sticky")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("eager"), "{e}");
        let e = ok
            .set("consumer.enable.auto.commit", "true")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("commit protocol"), "{e}");
    }
}
