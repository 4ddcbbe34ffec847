//! Deduplication as a first-class operator (Kafka Streams still lacks one:
//! KIP-655). The first record of a dedup key passes; every later one is
//! dropped with no output at all and counted. Seen keys live in a store with
//! a changelog, so the memory of what was seen survives crashes and moves
//! with the partition.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::builder::{Data, KStream};
use crate::graph::{ErasedRecord, Node, NodeContext, Target};
use crate::metrics;
use crate::record::Record;
use crate::ProcessError;

/// What the dedup store keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEntry {
    /// Timestamp of the first record with this key (ms since the epoch).
    pub first_seen_ms: i64,
    /// Input offset of that first record.
    pub first_offset: i64,
}

type KeyFn<K, V> = Arc<dyn Fn(&Record<K, V>) -> Option<Vec<u8>> + Send + Sync>;

struct DedupNode<K, V> {
    store: String,
    key_fn: KeyFn<K, V>,
}

impl<K: Data, V: Data> Node for DedupNode<K, V> {
    fn process(
        &mut self,
        record: ErasedRecord,
        ctx: &mut NodeContext<'_>,
    ) -> Result<(), ProcessError> {
        let typed: Record<K, V> = record.typed();
        let Some(key) = (self.key_fn)(&typed) else {
            ctx.forwards.push((Target::All, ErasedRecord::erase(typed)));
            return Ok(());
        };
        let offset = ctx.source.offset;
        let tx = ctx.stores.get_mut(&self.store).ok_or_else(|| {
            ProcessError::Misuse(format!("dedup store {:?} is missing", self.store))
        })?;
        let mut store = weir_state::TypedStore::new(tx, offset);
        if let Some(seen) = store.get::<SeenEntry>(&key)? {
            ::metrics::counter!(metrics::DUPLICATES, metrics::LABEL_STORE => self.store.clone())
                .increment(1);
            tracing::debug!(
                key = %String::from_utf8_lossy(&key),
                offset,
                first_offset = seen.first_offset,
                "duplicate dropped"
            );
            return Ok(());
        }
        store.put(
            &key,
            &SeenEntry {
                first_seen_ms: typed.timestamp,
                first_offset: offset,
            },
        )?;
        ctx.forwards.push((Target::All, ErasedRecord::erase(typed)));
        Ok(())
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    /// Passes the first record of each dedup key and drops the rest.
    ///
    /// `key_fn` gives the dedup key (`None`: not subject to dedup, passes).
    /// `store` must be declared with `add_store`; its changelog makes the
    /// operator fault tolerant. Keys seen are kept until removed (retention
    /// comes with a time index).
    pub fn dedup<F>(&self, name: &str, store: &str, key_fn: F) -> KStream<K, V>
    where
        F: Fn(&Record<K, V>) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let key_fn: KeyFn<K, V> = Arc::new(key_fn);
        let store_name = store.to_string();
        self.add_node(
            name,
            &[store],
            Arc::new(move || {
                Box::new(DedupNode {
                    store: store_name.clone(),
                    key_fn: key_fn.clone(),
                })
            }),
        )
    }
}
