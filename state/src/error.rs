//! The crate's single error type. Each variant names what failed and where.

use std::path::PathBuf;

/// Errors raised by state stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The RocksDB instance could not be opened. Most often another process
    /// holds the directory's lock: two instances must not share a `--state-dir`.
    #[error("cannot open store {store:?} at {path}: {source}")]
    Open {
        store: String,
        path: PathBuf,
        #[source]
        source: ::rocksdb::Error,
    },
    /// A read or write against an open RocksDB instance failed.
    #[error("store {store:?}: {op} failed: {source}")]
    RocksDb {
        store: String,
        op: &'static str,
        #[source]
        source: ::rocksdb::Error,
    },
    /// Filesystem work around a store (creating or wiping its directory) failed.
    #[error("store {store:?}: {op} {path}: {source}")]
    Io {
        store: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value in the store does not decode as the type the caller asked for:
    /// the store was written by an incompatible version. Rebuild it from the changelog.
    #[error("store {store:?}: cannot decode value: {message}")]
    Decode { store: String, message: String },
    /// A value could not be encoded for the store.
    #[error("store {store:?}: cannot encode value: {message}")]
    Encode { store: String, message: String },
    /// Metadata kept beside the data is corrupt.
    #[error("store {store:?}: corrupt metadata: {message}")]
    CorruptMetadata { store: String, message: String },
    /// The changelog sink refused a record (the Kafka side reports why).
    #[error("changelog of store {store:?}: {message}")]
    Changelog { store: String, message: String },
}
