//! Runs a topology with no broker: in-memory stores, one partition, a commit
//! after every record. The processing core is the runtime's own, so a test
//! here exercises exactly the logic that runs on Kafka.

use std::collections::HashMap;
use std::sync::Arc;

use weir_state::changelog::{ChangeRecord, RecordingSink};
use weir_state::{KeyValueStore, MemoryStore, StoreTransaction};

use crate::record::{Headers, OutputRecord, SourceCoordinates, SourceRecord};
use crate::task::{Outcome, TaskCore};
use crate::{StoreSpec, Topology, TopologyError};

/// One input record for the driver.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    /// Raw key bytes.
    pub key: Option<Vec<u8>>,
    /// Raw value bytes (`None` is a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Headers,
    /// Timestamp (ms); the driver uses the offset when 0.
    pub timestamp: i64,
}

impl TestRecord {
    /// A record with a UTF-8 key and value.
    pub fn new(key: &str, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.into()),
            ..Self::default()
        }
    }
}

/// Drives a topology over in-memory stores.
pub struct TopologyTestDriver {
    task: TaskCore,
    topic: Arc<str>,
    next_offset: i64,
    outputs: Vec<OutputRecord>,
    changelogs: HashMap<String, RecordingSink>,
}

impl TopologyTestDriver {
    /// A driver for partition 0 of the topology's source topic.
    pub fn new(topology: &Topology) -> Self {
        Self::with_stores(topology, |spec| Box::new(MemoryStore::new(&spec.name)))
    }

    /// A driver whose stores come from `open` (e.g. RocksDB, to test or
    /// measure with the store the runtime uses).
    pub fn with_stores(
        topology: &Topology,
        mut open: impl FnMut(&StoreSpec) -> Box<dyn KeyValueStore>,
    ) -> Self {
        let stores = topology
            .stores()
            .iter()
            .map(|s| (s.name.clone(), StoreTransaction::new(open(s))))
            .collect();
        Self {
            task: TaskCore::new(topology, 0, stores),
            topic: Arc::from(topology.source_topic()),
            next_offset: 0,
            outputs: Vec::new(),
            changelogs: HashMap::new(),
        }
    }

    /// Pipes one record and commits. Returns `true` when it was processed,
    /// `false` when it went to the dead-letter topic.
    pub fn pipe(&mut self, input: TestRecord) -> Result<bool, TopologyError> {
        let processed = self.process(input)?;
        self.commit()?;
        Ok(processed)
    }

    /// Pipes records and commits once after the last, as the runtime
    /// commits once per interval (a store sees one write per interval, not
    /// one per record). Returns how many were processed, not dead-lettered.
    pub fn pipe_all(
        &mut self,
        inputs: impl IntoIterator<Item = TestRecord>,
    ) -> Result<usize, TopologyError> {
        let mut processed = 0;
        for input in inputs {
            processed += usize::from(self.process(input)?);
        }
        self.commit()?;
        Ok(processed)
    }

    fn process(&mut self, input: TestRecord) -> Result<bool, TopologyError> {
        let offset = self.next_offset;
        self.next_offset += 1;
        let raw = SourceRecord {
            coordinates: SourceCoordinates {
                topic: self.topic.clone(),
                partition: 0,
                offset,
            },
            timestamp: if input.timestamp == 0 {
                offset
            } else {
                input.timestamp
            },
            key: input.key.as_deref(),
            value: input.value.as_deref(),
            headers: input.headers.clone(),
        };
        let outcome = self.task.process(&raw)?;
        self.outputs.append(&mut self.task.outputs);
        Ok(outcome == Outcome::Processed)
    }

    /// Runs periodic work (dedup expiry) as the runtime does after a commit,
    /// at wall-clock time `now_ms`, then commits its writes.
    pub fn punctuate(&mut self, now_ms: i64) -> Result<(), TopologyError> {
        let last = self.next_offset - 1;
        self.task.punctuate(now_ms, 0, last)?;
        self.commit()
    }

    /// Logs and applies every store's pending writes, as a runtime commit does.
    fn commit(&mut self) -> Result<(), TopologyError> {
        for (name, tx) in &mut self.task.stores {
            let sink = self.changelogs.entry(name.clone()).or_default();
            tx.log_changes(sink)
                .map_err(|source| TopologyError::State {
                    task: "driver".into(),
                    source,
                })?;
            let end = sink.records.len() as i64;
            tx.commit(Some(end))
                .map_err(|source| TopologyError::State {
                    task: "driver".into(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Pipes a UTF-8 key and value.
    pub fn pipe_kv(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<bool, TopologyError> {
        self.pipe(TestRecord::new(key, value))
    }

    /// Takes every record written to `topic` so far.
    pub fn read_output(&mut self, topic: &str) -> Vec<OutputRecord> {
        let (taken, kept) = std::mem::take(&mut self.outputs)
            .into_iter()
            .partition(|r| &*r.topic == topic);
        self.outputs = kept;
        taken
    }

    /// A committed value in a store.
    pub fn store_get(&self, store: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.task.stores.get(store)?.store().get(key).ok().flatten()
    }

    /// Number of entries in a store.
    pub fn store_len(&self, store: &str) -> u64 {
        self.task
            .stores
            .get(store)
            .map(|s| s.store().approximate_entries())
            .unwrap_or(0)
    }

    /// Changelog records of a store: `(key, value, source offset)`.
    pub fn changelog(&self, store: &str) -> &[ChangeRecord] {
        self.changelogs
            .get(store)
            .map(|s| s.records.as_slice())
            .unwrap_or(&[])
    }
}
