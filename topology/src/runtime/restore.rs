//! Restore: rebuilding store partitions from their changelogs.
//!
//! Restore runs inside the stream thread's loop in bounded slices, beside
//! processing: a task that restores does not hold back tasks that are ready
//! (the paused input partition is the only thing waiting). Each slice is
//! applied to RocksDB with the changelog offset it reached in the same
//! atomic batch, so a crash mid-restore resumes where it stopped.
//!
//! Where restore starts:
//! - the store's recorded changelog offset (after a clean stop: the end, so
//!   nothing is replayed; after a crash: the unapplied tail);
//! - the changelog's start when the store is new or was deleted;
//! - the changelog's start after wiping, when the store claims an offset
//!   past the changelog's end (the topic was recreated: the local state
//!   belongs to another history);
//! - the first record still there when the changelog was truncated under
//!   the recorded offset (retention, or a broker that drops old data):
//!   what remains is restored and the gap is logged.
//!
//! Entries an operator keeps locally and never logs (the dedup operator's
//! time index) are derived again from each applied record by the store's
//! restore hooks, in the same batch.
//!
//! What restore trusts, under exactly-once: a changelog record whose
//! `weir.source.offset` is at or past the input partition's committed
//! offset belongs to a transaction that never committed (its input offsets
//! would have committed with it), so it is skipped. A correct broker hides
//! such records from `read_committed` readers anyway; some brokers do not,
//! and a killed instance's unfinished transaction must not mark an order
//! "seen" whose confirmation was aborted. Under at-least-once every record
//! is applied: its output was delivered before it was written.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_state::WriteBatch;

use crate::builder::RestoreHook;
use crate::kafka::client::{config, Client};
use crate::runtime::commit::HEADER_SOURCE_OFFSET;
use crate::runtime::task::Task;
use crate::{metrics, StreamsConfig, TopologyError};

struct Job {
    partition: i32,
    /// Skip records whose source offset is at or past this (exactly-once).
    trust_below: Option<i64>,
    skipped: u64,
    store: String,
    topic: String,
    position: i64,
    start: i64,
    end: i64,
    restored: u64,
    started: Instant,
    /// Derive the store's local entries from each applied record.
    hooks: Vec<RestoreHook>,
}

pub(crate) struct Restorer {
    consumer: BaseConsumer,
    jobs: Vec<Job>,
    timeout: Duration,
    last_log: Instant,
}

impl Restorer {
    pub fn new(cfg: &StreamsConfig, instance: &str) -> Result<Self, TopologyError> {
        let consumer: BaseConsumer =
            config(cfg, Client::Restore, instance)
                .create()
                .map_err(|source| TopologyError::Kafka {
                    op: "create restore consumer".into(),
                    source,
                })?;
        Ok(Self {
            consumer,
            jobs: Vec::new(),
            timeout: cfg.request_timeout,
            last_log: Instant::now(),
        })
    }

    fn kafka<T>(r: Result<T, rdkafka::error::KafkaError>, op: String) -> Result<T, TopologyError> {
        r.map_err(|source| TopologyError::Kafka { op, source })
    }

    /// Plans the restore of a new task's stores. Returns `true` when there
    /// is something to restore.
    pub fn start(&mut self, task: &mut Task, exactly_once: bool) -> Result<bool, TopologyError> {
        let p = task.partition;
        let mut any = false;
        let mut added = TopicPartitionList::new();
        for (store, topic) in &task.changelogs {
            let (low, high) = Self::kafka(
                self.consumer.fetch_watermarks(topic, p, self.timeout),
                format!("read watermarks of {topic}[{p}]"),
            )?;
            let tx = task
                .core
                .stores
                .get_mut(store)
                .expect("every logged store is open");
            let recorded = tx.store().changelog_offset();
            let mut from = recorded.unwrap_or(low);
            if recorded.is_some() && from > high {
                tracing::warn!(
                    store, partition = p, recorded = from, changelog_end = high,
                    "local store is ahead of its changelog (the topic was recreated?): wiping it and rebuilding from the changelog"
                );
                tx.store_mut()
                    .wipe()
                    .map_err(|source| TopologyError::State {
                        task: task.core.id.clone(),
                        source,
                    })?;
                from = low;
            }
            if from < low {
                tracing::warn!(
                    store,
                    partition = p,
                    recorded = from,
                    first_available = low,
                    lost = low - from,
                    "changelog was truncated below the store's offset: restoring what remains"
                );
                from = low;
            }
            ::metrics::gauge!(metrics::RESTORE_REMAINING, metrics::LABEL_STORE => store.clone(), metrics::LABEL_PARTITION => p.to_string())
                .set((high - from).max(0) as f64);
            if from >= high {
                tracing::debug!(store, partition = p, offset = from, "store is up to date");
                continue;
            }
            tracing::info!(
                store,
                partition = p,
                from,
                to = high,
                records = high - from,
                full = recorded.is_none(),
                "restoring store from changelog"
            );
            any = true;
            Self::kafka(
                added.add_partition_offset(topic, p, Offset::Offset(from)),
                "build restore assignment".into(),
            )?;
            self.jobs.push(Job {
                partition: p,
                trust_below: exactly_once.then_some(task.committed.unwrap_or(0)),
                skipped: 0,
                store: store.clone(),
                topic: topic.clone(),
                position: from,
                start: from,
                end: high,
                restored: 0,
                started: Instant::now(),
                hooks: task.restore_hooks.get(store).cloned().unwrap_or_default(),
            });
        }
        if any {
            // Incremental: the other partitions' fetches go on undisturbed
            // (a full re-assign restarts them all; measured, it stalled the
            // restore ~0.5 s each time a partition started or finished).
            Self::kafka(
                self.consumer.incremental_assign(&added),
                "assign changelog partitions".into(),
            )?;
        }
        Ok(any)
    }

    /// Forgets every job (the tasks were revoked).
    pub fn clear(&mut self) {
        if !self.jobs.is_empty() {
            self.jobs.clear();
            let _ = self.consumer.unassign();
        }
    }

    /// True while any store is restoring.
    pub fn active(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// True while any store of `partition` is restoring.
    pub fn is_restoring(&self, partition: i32) -> bool {
        self.jobs.iter().any(|j| j.partition == partition)
    }

    /// Restores for at most `budget`, then returns the partitions whose stores
    /// are all restored.
    pub fn poll(
        &mut self,
        tasks: &mut BTreeMap<i32, Task>,
        budget: Duration,
    ) -> Result<Vec<i32>, TopologyError> {
        if self.jobs.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + budget;
        // Per job: the batch to apply and how many changelog records it holds
        // (restore hooks add derived entries to the batch).
        let mut batches: HashMap<usize, (WriteBatch, u64)> = HashMap::new();
        let mut polled = 0u32;
        loop {
            // The clock and the done-check every 256 records: per record
            // they cost ~6% of a restore (perf).
            if polled % 256 == 0
                && (Instant::now() >= deadline || self.jobs.iter().all(|j| j.position >= j.end))
            {
                break;
            }
            polled = polled.wrapping_add(1);
            let Some(msg) = self.consumer.poll(Duration::from_millis(10)) else {
                polled = 0; // idle: look at the clock now
                continue;
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "restore consumer error (retrying)");
                    continue;
                }
            };
            let Some(idx) = self
                .jobs
                .iter()
                .position(|j| j.partition == m.partition() && j.topic == m.topic())
            else {
                continue;
            };
            let job = &mut self.jobs[idx];
            if m.offset() < job.position {
                continue;
            }
            job.position = m.offset() + 1;
            if let Some(limit) = job.trust_below {
                let source = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == HEADER_SOURCE_OFFSET)
                        .and_then(|x| std::str::from_utf8(x.value?).ok()?.parse::<i64>().ok())
                });
                if source.is_some_and(|s| s >= limit) {
                    job.skipped += 1;
                    continue;
                }
            }
            let (batch, records) = batches.entry(idx).or_default();
            *records += 1;
            let key = m.key().unwrap_or_default().to_vec();
            match m.payload() {
                Some(v) => {
                    for hook in &job.hooks {
                        hook(&key, v, batch);
                    }
                    batch.put(key, v.to_vec())
                }
                None => batch.delete(key),
            }
            job.restored += 1;
        }
        // Transactional changelogs end with commit markers, which are never
        // delivered: the consumer's position moves past them, the records' do not.
        if self.jobs.iter().any(|j| j.position < j.end) {
            if let Ok(positions) = self.consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        if let Some(j) = self
                            .jobs
                            .iter_mut()
                            .find(|j| j.partition == e.partition() && j.topic == e.topic())
                        {
                            j.position = j.position.max(o);
                        }
                    }
                }
            }
        }
        for (idx, (mut batch, n)) in batches {
            let job = &self.jobs[idx];
            // Past the last applied record, or past the markers after it.
            batch.set_changelog_offset(job.position);
            let task = tasks
                .get_mut(&job.partition)
                .expect("restoring tasks exist");
            let tx = task.core.stores.get_mut(&job.store).expect("store exists");
            tx.store_mut()
                .write(batch)
                .map_err(|source| TopologyError::State {
                    task: task.core.id.clone(),
                    source,
                })?;
            ::metrics::counter!(metrics::RESTORE_RECORDS, metrics::LABEL_STORE => job.store.clone())
                .increment(n);
        }
        for j in &self.jobs {
            let labels = [
                (metrics::LABEL_STORE, j.store.clone()),
                (metrics::LABEL_PARTITION, j.partition.to_string()),
            ];
            ::metrics::gauge!(metrics::RESTORE_REMAINING, &labels)
                .set((j.end - j.position).max(0) as f64);
            let secs = j.started.elapsed().as_secs_f64().max(1e-3);
            ::metrics::gauge!(metrics::RESTORE_RATE, &labels).set(j.restored as f64 / secs);
        }
        if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            for j in &self.jobs {
                let secs = j.started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(
                    store = %j.store, partition = j.partition,
                    restored = j.restored, remaining = j.end - j.position,
                    rate = format!("{:.0}/s", j.restored as f64 / secs),
                    "restore progress"
                );
            }
        }
        let (done, left): (Vec<Job>, Vec<Job>) =
            self.jobs.drain(..).partition(|j| j.position >= j.end);
        self.jobs = left;
        for j in &done {
            let secs = j.started.elapsed().as_secs_f64();
            ::metrics::histogram!(metrics::RESTORE_DURATION, metrics::LABEL_STORE => j.store.clone()).record(secs);
            ::metrics::gauge!(metrics::RESTORE_RATE, metrics::LABEL_STORE => j.store.clone(), metrics::LABEL_PARTITION => j.partition.to_string()).set(0.0);
            ::metrics::gauge!(metrics::RESTORE_REMAINING, metrics::LABEL_STORE => j.store.clone(), metrics::LABEL_PARTITION => j.partition.to_string()).set(0.0);
            tracing::info!(
                store = %j.store, partition = j.partition, records = j.restored,
                skipped_uncommitted = j.skipped,
                offsets = format!("{}..{}", j.start, j.end),
                seconds = format!("{secs:.3}"),
                rate = format!("{:.0}/s", j.restored as f64 / secs.max(1e-9)),
                "restore complete"
            );
        }
        if !done.is_empty() {
            let mut finished = TopicPartitionList::new();
            for j in &done {
                finished.add_partition(&j.topic, j.partition);
            }
            Self::kafka(
                self.consumer.incremental_unassign(&finished),
                "unassign restored changelog partitions".into(),
            )?;
        }
        let mut finished: Vec<i32> = done.iter().map(|j| j.partition).collect();
        finished.sort_unstable();
        finished.dedup();
        finished.retain(|p| !self.is_restoring(*p));
        Ok(finished)
    }
}
