//! # weir-topology: the DSL, the Processor API and the Kafka runtime
//!
//! Write a topology with [`TopologyBuilder`], test it with
//! [`TopologyTestDriver`] (no broker), run it with [`KafkaStreams`].
//!
//! ## Layout
//! Public surface:
//! - [`builder`]: `TopologyBuilder`, `KStream<K, V>` (map, filter, try_map,
//!   process, dedup, split/branch, to), `StoreSpec`, the built `Topology`.
//! - [`processor`]: the `Processor` trait and its `ProcessorContext`.
//! - [`record`]: `Record`, `Headers`, `SourceRecord`, `OutputRecord`.
//! - [`serde`]: the `Serde` trait; string, bytes, JSON and JSON-object serdes.
//! - [`dead_letter`]: the dead-letter route and KIP-1034 header names.
//! - [`dedup`]: the dedup operator and what it stores.
//! - [`describe`]: text and Mermaid pictures of a topology.
//! - [`test_driver`]: run a topology over in-memory stores.
//! - [`config`]: `StreamsConfig`, the one configuration struct of the runtime.
//! - [`metrics`]: every metric name, as constants.
//! - [`error`]: `TopologyError` (stops a topology) and `ProcessError` (one record).
//! - [`kafka::batch`]: `BatchReader`, an assigning consumer's records many
//!   at a time (restore reads with it; so can tools that read whole topics).
//!
//! Internals:
//! - `graph`: the erased node graph behind the typed builder.
//! - `task`: one topology instance per input partition (shared by the
//!   runtime and the test driver).
//! - `runtime/`: the stream thread, rebalance handling, the commit protocol
//!   (`commit.rs`), the output sender thread (`sender.rs`) and restore
//!   (`restore.rs`).
//! - `kafka/`: client configuration, topic administration, the producer's
//!   delivery tracking and the changelog writer (only `batch` is public).

pub mod builder;
pub mod config;
pub mod dead_letter;
pub mod dedup;
pub mod describe;
pub mod error;
mod graph;
pub mod kafka;
pub mod metrics;
pub mod processor;
pub mod record;
mod runtime;
pub mod serde;
mod task;
pub mod test_driver;

pub use builder::{BranchedStream, Branches, Data, KStream, StoreSpec, Topology, TopologyBuilder};
pub use config::{Guarantee, ProvenanceHeaders, StreamsConfig};
pub use dead_letter::{DeadLetter, DeadLetterHandler, Failure, RawDeadLetters};
pub use describe::TopologyDescription;
pub use error::{FailureKind, ProcessError, TopologyError};
pub use processor::{Processor, ProcessorContext};
pub use record::{Headers, OutputRecord, Record, SourceCoordinates, SourceRecord};
pub use runtime::{AppState, KafkaStreams, StreamsHandle, StreamsStatus};
pub use serde::{BytesSerde, JsonObjectSerde, JsonSerde, Serde, StringSerde};
pub use test_driver::{TestRecord, TopologyTestDriver};
