//! An in-memory store with the same contract as RocksDB, for tests and the
//! topology test driver.

use std::collections::BTreeMap;

use crate::{KeyValueStore, StateError, WriteBatch};

/// A `BTreeMap` store. Nothing survives the process, which is the point.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    /// The store's name, for errors and metrics.
    name: String,
    /// The data, kept ordered so `for_each` matches RocksDB's key order.
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The changelog offset recorded by the last batch that carried one.
    changelog_offset: Option<i64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

impl KeyValueStore for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.data.get(key).cloned())
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        for (key, value) in batch.iter() {
            match value {
                Some(v) => {
                    self.data.insert(key.to_vec(), v.to_vec());
                }
                None => {
                    self.data.remove(key);
                }
            }
        }
        if let Some(offset) = batch.changelog_offset() {
            self.changelog_offset = Some(offset);
        }
        Ok(())
    }

    fn changelog_offset(&self) -> Option<i64> {
        self.changelog_offset
    }

    fn approximate_entries(&self) -> u64 {
        self.data.len() as u64
    }

    fn scan_from(
        &self,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StateError> {
        for (k, v) in self.data.range(from.to_vec()..) {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    fn wipe(&mut self) -> Result<(), StateError> {
        self.data.clear();
        self.changelog_offset = None;
        Ok(())
    }
}
