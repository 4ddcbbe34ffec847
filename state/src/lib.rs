//! # weir-state: state stores for Weir
//!
//! A store here knows nothing of Kafka. It holds bytes, and it remembers how far
//! its changelog has been applied *in the same atomic write* as the data, so
//! "what is on disk" and "where restore must resume" can never disagree.
//!
//! ## Layout
//! - [`store`]: the [`KeyValueStore`] trait over bytes and the [`WriteBatch`] that
//!   carries data and the changelog offset together.
//! - [`rocksdb`]: [`RocksDbStore`], one RocksDB instance per store partition;
//!   `rocksdb_batch` builds its writes in RocksDB's batch format in one pass.
//! - [`memory`]: [`MemoryStore`], the same contract in a `BTreeMap`, for tests
//!   and the topology test driver.
//! - [`transaction`]: [`StoreTransaction`], the write overlay of one commit
//!   interval: reads see pending writes, nothing reaches the store until the
//!   runtime's commit protocol says so, and an abort simply drops it;
//!   [`FrozenWrites`] hold one interval's writes while a pipelined commit logs them.
//! - [`changelog`]: [`ChangelogSink`], the one thing a transaction needs from the
//!   outside world to log its writes (implemented over Kafka by `weir-topology`).
//! - [`typed`]: serde (bincode) access at the edge: [`TypedStore`].
//! - [`error`]: [`StateError`], the crate's single error type.

pub mod changelog;
pub mod error;
pub mod memory;
pub mod rocksdb;
mod rocksdb_batch;
pub mod store;
pub mod transaction;
pub mod typed;

pub use changelog::ChangelogSink;
pub use error::StateError;
pub use memory::MemoryStore;
pub use rocksdb::{RocksDbOptions, RocksDbStore};
pub use store::{KeyValueStore, WriteBatch};
pub use transaction::{FrozenWrites, StoreTransaction};
pub use typed::TypedStore;
