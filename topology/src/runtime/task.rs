//! A task as the runtime sees it: the processing core plus where it is in
//! its input partition and whether its state is restored.

use std::collections::HashMap;

use weir_state::{RocksDbStore, StoreTransaction};

use crate::builder::{LocalDerivation, SourceOffsetOf};
use crate::task::TaskCore;
use crate::{StreamsConfig, Topology, TopologyError};

/// Lifecycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Stores are being rebuilt from changelogs; the input partition is paused.
    Restoring,
    /// Processing input.
    Running,
}

pub(crate) struct Task {
    pub partition: i32,
    pub core: TaskCore,
    pub state: TaskState,
    /// Changelog topic per logged store.
    pub changelogs: HashMap<String, String>,
    /// What restore derives per store (local index entries).
    pub local_derivations: HashMap<String, Vec<LocalDerivation>>,
    /// Per store whose values tell their write's source offset: how to
    /// read it (changelog records of such writes carry no header for it).
    pub value_source_offsets: HashMap<String, SourceOffsetOf>,
    /// Offset after the last processed record.
    pub next_offset: Option<i64>,
    /// Last committed offset (from the group at assignment, then ours).
    pub committed: Option<i64>,
    /// The first offset of records that arrived while restoring (and were not
    /// processed): the input must be rewound there on resume.
    pub rewind_to: Option<i64>,
}

impl Task {
    /// Opens the task's store partitions under `<state-dir>/<app>/<store>/<partition>`.
    pub fn open(
        cfg: &StreamsConfig,
        topology: &Topology,
        partition: i32,
    ) -> Result<Self, TopologyError> {
        let mut stores = HashMap::new();
        let mut changelogs = HashMap::new();
        let mut local_derivations = HashMap::new();
        let mut value_source_offsets = HashMap::new();
        for spec in topology.stores() {
            let path = cfg
                .state_dir
                .join(&cfg.application_id)
                .join(&spec.name)
                .join(partition.to_string());
            let store = RocksDbStore::open(&spec.name, &path, cfg.rocksdb).map_err(|source| {
                TopologyError::State {
                    task: format!("{}-{partition}", topology.source_topic()),
                    source,
                }
            })?;
            stores.insert(spec.name.clone(), StoreTransaction::new(Box::new(store)));
            local_derivations.insert(spec.name.clone(), topology.local_derivations(&spec.name));
            if let Some(read) = topology.value_source_offset(&spec.name) {
                value_source_offsets.insert(spec.name.clone(), read);
            }
            if spec.changelog {
                changelogs.insert(
                    spec.name.clone(),
                    Topology::changelog_topic(&cfg.application_id, &spec.name),
                );
            }
        }
        Ok(Self {
            partition,
            core: TaskCore::new(topology, partition, stores),
            state: TaskState::Restoring,
            changelogs,
            local_derivations,
            value_source_offsets,
            next_offset: None,
            committed: None,
            rewind_to: None,
        })
    }

    /// Drops uncommitted work after a failed commit.
    pub fn abort(&mut self) {
        self.core.abort();
        self.next_offset = self.committed;
    }

    /// Flushes stores and closes processors (clean shutdown or revocation).
    pub fn close(&mut self) {
        self.core.close();
        for tx in self.core.stores.values_mut() {
            if let Err(e) = tx.store_mut().flush() {
                tracing::warn!(task = %self.core.id, error = %e, "store flush on close failed");
            }
        }
    }
}
