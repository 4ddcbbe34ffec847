//! # weir: the Inventory job and the tools around it
//!
//! The stream-processing library lives in two crates: `weir-state` (stores)
//! and `weir-topology` (DSL, processors, Kafka runtime). This crate is what
//! is built with them.
//!
//! ## Layout
//! - [`inventory`]: the Inventory job — event contracts, validation, the
//!   dead-letter envelope, the topology, sample orders.
//! - [`bench`]: throughput and restore speed against the raw limit, latency,
//!   and a dedup store's memory as its keys grow.
//! - [`broker`]: the embedded broker (librdkafka's mock cluster on its own thread).
//! - [`observability`]: the Prometheus recorder and the `/metrics`, `/health`,
//!   `/ready` server.
//! - [`dlq`]: reading and replaying the dead-letter topic.
//! - [`load`]: the load generator and its manifest.
//! - [`orders`]: the Order service (`POST /orders` → `OrderReceived`).
//! - [`job`]: starting the inventory job from a `JobConfig`: topics, runtime,
//!   readiness — what `weir run` and the tests share.
//!
//! The binary (`src/main.rs`, `src/cli.rs`, `src/commands/`) only parses
//! arguments, sets up tracing and calls into these modules.

pub mod bench;
pub mod broker;
pub mod dlq;
pub mod inventory;
pub mod job;
pub mod load;
pub mod observability;
pub mod orders;

pub use weir_state as state;
pub use weir_topology as topology;
