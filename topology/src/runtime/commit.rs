//! The commit protocol, in one place.

use std::collections::BTreeMap;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use weir_state::{ChangelogSink, StateError};

use crate::kafka::producer::{self, WeirProducer, KIND_CHANGELOG};
use crate::record::Headers;
use crate::runtime::context::StreamContext;
use crate::runtime::task::Task;
use crate::{metrics, TopologyError};

/// Header carrying the input offset that caused a changelog write.
pub(crate) const HEADER_SOURCE_OFFSET: &str = "weir.source.offset";

struct KafkaChangelog<'a> {
    producer: &'a WeirProducer,
    topic: &'a str,
    partition: i32,
}

impl ChangelogSink for KafkaChangelog<'_> {
    fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        source_offset: i64,
    ) -> Result<(), StateError> {
        let headers = Headers::new().with(HEADER_SOURCE_OFFSET, source_offset.to_string());
        producer::send(
            self.producer,
            self.topic,
            Some(self.partition),
            Some(key),
            value,
            &headers,
            None,
            KIND_CHANGELOG,
        )
        .map_err(|e| StateError::Changelog {
            store: self.topic.to_string(),
            message: e.to_string(),
        })
    }
}

/// Commits every task: makes outputs and state durable, then moves the
/// group's offsets. At-least-once; a crash at any step loses nothing.
///
/// 1. **Outputs.** Sink and dead-letter records were handed to the producer
///    as they were processed (no per-record wait). Flush: all are delivered,
///    or the commit stops here.
/// 2. **Changelog.** Each task's store transaction sends one record per key
///    written since the last commit to its changelog partition (same number
///    as the input partition), tagged with the input offset that caused it.
///    This comes *after* step 1's flush so the changelog never claims a key
///    whose output was not delivered — otherwise a restore could mark an
///    order "seen" whose confirmation was lost.
/// 3. **Flush** again: every changelog record is delivered; the delivery
///    reports give each changelog partition's new end offset.
/// 4. **Commit input offsets** (synchronous) for tasks that made progress.
/// 5. **Apply state**: each store transaction is written to RocksDB together
///    with its changelog end offset, in one atomic batch.
///
/// Crash points: before 4, the input is reprocessed — duplicate outputs are
/// possible (the at-least-once anomaly), and a changelog written in 2–3 only
/// repeats facts whose outputs were delivered. Between 4 and 5, the store
/// lags its changelog; restore replays exactly that tail. After 5, nothing
/// is replayed. On error the caller aborts the transactions and rewinds
/// the input to the last committed offsets.
pub(crate) fn commit(
    tasks: &mut BTreeMap<i32, Task>,
    producer: &WeirProducer,
    consumer: &BaseConsumer<StreamContext>,
    source_topic: &str,
    timeout: std::time::Duration,
) -> Result<(), TopologyError> {
    let started = Instant::now();
    // 1. Outputs are already in the producer; make sure they are delivered.
    producer::flush(producer, timeout)?;
    // 2. Changelog records.
    let mut logged = false;
    for task in tasks.values_mut() {
        let partition = task.partition;
        for (store, topic) in &task.changelogs {
            let Some(tx) = task.core.stores.get(store) else {
                continue;
            };
            if tx.pending_len() == 0 {
                continue;
            }
            logged = true;
            let mut sink = KafkaChangelog {
                producer,
                topic,
                partition,
            };
            tx.log_changes(&mut sink)
                .map_err(|source| TopologyError::State {
                    task: task.core.id.clone(),
                    source,
                })?;
        }
    }
    // 3. Flush the changelog.
    if logged {
        producer::flush(producer, timeout)?;
    }
    // 4. Input offsets.
    let mut tpl = TopicPartitionList::new();
    for task in tasks.values() {
        if let Some(next) = task.next_offset {
            if Some(next) != task.committed {
                tpl.add_partition_offset(source_topic, task.partition, Offset::Offset(next))
                    .map_err(|source| TopologyError::Kafka {
                        op: "build commit list".into(),
                        source,
                    })?;
            }
        }
    }
    if tpl.count() > 0 {
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|source| TopologyError::Kafka {
                op: "commit offsets".into(),
                source,
            })?;
    }
    // 5. State, with the changelog offset it reached.
    for task in tasks.values_mut() {
        task.committed = task.next_offset.or(task.committed);
        let partition = task.partition;
        for (name, tx) in task.core.stores.iter_mut() {
            if tx.pending_len() == 0 {
                continue;
            }
            let end = task
                .changelogs
                .get(name)
                .and_then(|topic| producer.context().changelog_end(topic, partition));
            tx.commit(end).map_err(|source| TopologyError::State {
                task: task.core.id.clone(),
                source,
            })?;
        }
    }
    ::metrics::counter!(metrics::COMMITS).increment(1);
    ::metrics::histogram!(metrics::COMMIT_LATENCY).record(started.elapsed().as_secs_f64());
    Ok(())
}
