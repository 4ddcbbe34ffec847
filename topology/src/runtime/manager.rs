//! The task manager: creates tasks on assignment, closes them on
//! revocation, feeds them records, drives restore and commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::producer::WeirProducer;
use crate::record::{Headers, SourceCoordinates, SourceRecord};
use crate::runtime::commit::{commit, finish, CommitScope, InFlight, Outcome, Provenance};
use crate::runtime::context::StreamContext;
use crate::runtime::restore::Restorer;
use crate::runtime::sender::OutputSender;
use crate::runtime::status::ThreadStatus;
use crate::runtime::task::{Task, TaskState};
use crate::task::now_ms;
use crate::{metrics, Guarantee, StreamsConfig, Topology, TopologyError};

pub(crate) struct TaskManager {
    pub cfg: StreamsConfig,
    topology: Topology,
    source_topic: Arc<str>,
    pub producer: Arc<WeirProducer>,
    /// Hands sink and dead-letter records to the producer on its own thread.
    sender: OutputSender,
    pub tasks: BTreeMap<i32, Task>,
    restorer: Restorer,
    /// Assigned tasks whose restore has not been planned yet (planning needs
    /// network calls, which do not belong in a rebalance callback).
    new_tasks: Vec<i32>,
    /// An error raised inside a callback, for the loop to act on.
    pub fatal: Option<TopologyError>,
    /// Bumped on every rebalance, so the loop can drop a batch polled
    /// across one (eager rebalancing resets positions to committed offsets).
    pub epoch: u64,
    status: ThreadStatus,
    /// Exactly-once: records were handed to the output sender since the last
    /// commit (its transaction is open, or will be when it sends them).
    txn_open: bool,
    /// Run id and commit sequence stamped on every produced record.
    provenance: Provenance,
    /// Commits failed in a row: the retry backoff grows with it.
    failed_commits: u32,
    /// Records processed since the last commit (reported when it commits).
    uncommitted_records: u64,
    /// A commit the output sender is completing, and the records it commits.
    in_flight: Option<(InFlight, u64)>,
}

impl TaskManager {
    pub fn new(
        cfg: StreamsConfig,
        topology: Topology,
        producer: WeirProducer,
        restorer: Restorer,
        status: ThreadStatus,
        run_id: String,
        instance: &str,
    ) -> Result<Self, TopologyError> {
        let producer = Arc::new(producer);
        let sender = OutputSender::start(
            producer.clone(),
            topology.dead_letter_topic().map(str::to_string),
            cfg.guarantee == Guarantee::ExactlyOnce,
            format!("weir-send-{instance}"),
        )?;
        let provenance = Provenance::new(
            run_id,
            cfg.provenance_headers.stamped(),
            cfg.guarantee == Guarantee::ExactlyOnce,
        );
        Ok(Self {
            source_topic: Arc::from(topology.source_topic()),
            cfg,
            topology,
            producer,
            sender,
            tasks: BTreeMap::new(),
            restorer,
            new_tasks: Vec::new(),
            fatal: None,
            epoch: 0,
            status,
            txn_open: false,
            provenance,
            failed_commits: 0,
            uncommitted_records: 0,
            in_flight: None,
        })
    }

    /// This thread's handle on the instance's status.
    pub fn thread_status(&self) -> ThreadStatus {
        self.status.clone()
    }

    /// The input topic.
    pub fn source_topic(&self) -> &str {
        &self.source_topic
    }

    fn publish_status(&self) {
        let restoring = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Restoring)
            .count();
        self.status.set_tasks(self.tasks.len(), restoring);
        ::metrics::gauge!(metrics::ASSIGNED_PARTITIONS).set(self.status.topology_assigned() as f64);
    }

    /// Revocation: commit what was processed, close every task.
    pub fn on_revoke(&mut self, consumer: &BaseConsumer<StreamContext>) {
        self.epoch += 1;
        if self.tasks.is_empty() {
            return;
        }
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        tracing::info!(
            ?partitions,
            "partitions revoked: committing and closing tasks"
        );
        if let Err(e) = self
            .send_outputs()
            .and_then(|_| self.commit_all(consumer, true))
        {
            tracing::warn!(error = %e, "commit on revocation failed: the next owner reprocesses from the last committed offsets");
            self.abort_interval();
        }
        for (p, t) in self.tasks.iter_mut() {
            t.close();
            // No phantom lag for partitions this instance no longer owns.
            ::metrics::gauge!(metrics::CONSUMER_LAG, metrics::LABEL_TOPIC => self.source_topic.to_string(), metrics::LABEL_PARTITION => p.to_string())
                .set(0.0);
        }
        self.tasks.clear();
        self.restorer.clear();
        self.new_tasks.clear();
        self.publish_status();
    }

    /// Assignment, before librdkafka takes it: open a task per input
    /// partition.
    ///
    /// Why before: once assigned, librdkafka looks up the positions and
    /// starts fetching at once, and opening the stores takes a while (131
    /// RocksDB partitions: ~0.6 s on two cores). Opened after the assign,
    /// the fetcher had filled the consumer's queue (up to its 64 MiB) by the
    /// time [`Self::pause_assigned`] paused the partitions, and the pause
    /// and the resume after restore made all of it stale: librdkafka
    /// dropped it record by record and fetched it again, and the first
    /// record was processed 0.02–0.66 s after the tasks were running (the
    /// embedded broker, 131 partitions, `weir bench`).
    pub fn on_assign(&mut self, tpl: &TopicPartitionList) {
        self.epoch += 1;
        ::metrics::counter!(metrics::REBALANCES).increment(1);
        self.status.add_assignment();
        let partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| e.topic() == &*self.source_topic)
            .map(|e| e.partition())
            .collect();
        for (p, opened) in open_tasks(&self.cfg, &self.topology, &partitions) {
            match opened {
                Ok(t) => {
                    self.tasks.insert(p, t);
                    self.new_tasks.push(p);
                }
                Err(err) => {
                    self.fatal.get_or_insert(err);
                }
            }
        }
        tracing::info!(?partitions, "partitions assigned");
        self.publish_status();
    }

    /// Assignment, right after librdkafka took it: pause every partition
    /// until its task's stores are restored ([`Self::start_new_tasks`]
    /// resumes them), before the first fetch can answer.
    pub fn pause_assigned(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        tpl: &TopicPartitionList,
    ) {
        if let Err(e) = consumer.pause(tpl) {
            self.fatal.get_or_insert(TopologyError::Kafka {
                op: "pause partitions for restore".into(),
                source: e,
            });
        }
    }

    /// Reads committed offsets of new tasks and plans their restore.
    pub fn start_new_tasks(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
    ) -> Result<(), TopologyError> {
        if self.new_tasks.is_empty() {
            return Ok(());
        }
        let new = std::mem::take(&mut self.new_tasks);
        let mut tpl = TopicPartitionList::new();
        for p in &new {
            tpl.add_partition(&self.source_topic, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, self.cfg.request_timeout)
            .map_err(|source| TopologyError::Kafka {
                op: "read committed offsets".into(),
                source,
            })?;
        for e in committed.elements() {
            if let (Some(t), Offset::Offset(o)) = (self.tasks.get_mut(&e.partition()), e.offset()) {
                t.committed = Some(o);
            }
        }
        let changelogs: Vec<(String, i32)> = new
            .iter()
            .filter_map(|p| self.tasks.get(p))
            .flat_map(|t| {
                t.changelogs
                    .values()
                    .map(|topic| (topic.clone(), t.partition))
            })
            .collect();
        self.restorer.prefetch_watermarks(&changelogs);
        for p in new {
            let task = self.tasks.get_mut(&p).expect("new task exists");
            let exactly_once = self.cfg.guarantee == Guarantee::ExactlyOnce;
            if !self.restorer.start(task, exactly_once)? {
                self.resume(consumer, p)?;
            }
        }
        self.restorer.assign_planned()?;
        self.publish_status();
        Ok(())
    }

    fn resume(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        p: i32,
    ) -> Result<(), TopologyError> {
        let task = self.tasks.get_mut(&p).expect("resumed task exists");
        task.state = TaskState::Running;
        if let Some(o) = task.rewind_to.take() {
            consumer
                .seek(
                    &self.source_topic,
                    p,
                    Offset::Offset(o),
                    self.cfg.request_timeout,
                )
                .map_err(|source| TopologyError::Kafka {
                    op: format!("rewind {}[{p}] to {o} after restore", self.source_topic),
                    source,
                })?;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.source_topic, p);
        consumer
            .resume(&tpl)
            .map_err(|source| TopologyError::Kafka {
                op: "resume partition".into(),
                source,
            })?;
        tracing::info!(partition = p, committed = ?task.committed, "task running");
        Ok(())
    }

    /// Runs one restore slice; resumes tasks whose stores are complete.
    pub fn restore_step(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        budget: Duration,
    ) -> Result<(), TopologyError> {
        if !self.restorer.active() {
            return Ok(());
        }
        let done = self.restorer.poll(&mut self.tasks, budget)?;
        for p in done {
            self.resume(consumer, p)?;
        }
        self.publish_status();
        Ok(())
    }

    /// Counts records processed (for progress and benchmarks).
    pub fn add_processed(&mut self, n: u64) {
        self.status.add_processed(n);
        self.uncommitted_records += n;
    }

    /// Whether records were processed since the last commit started and no
    /// commit is in flight: a commit when the input ran dry would start at
    /// once (not wait for one to finish) and commit something.
    pub fn caught_up_commit_due(&self) -> bool {
        self.uncommitted_records > 0 && self.in_flight.is_none()
    }

    /// The rebalance epoch and whether any store is restoring, in one look.
    pub fn poll_state(&self) -> (u64, bool) {
        (self.epoch, self.restorer.active())
    }

    /// Processes one polled record.
    pub fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<(), TopologyError> {
        let p = m.partition();
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(()); // revoked in the meantime; the new owner will process it
        };
        if task.state != TaskState::Running {
            // Fetched before the pause took effect: process it after restore.
            task.rewind_to.get_or_insert(m.offset());
            return Ok(());
        }
        let mut headers = Headers::new();
        if let Some(h) = m.headers() {
            for hd in h.iter() {
                headers.push(hd.key, hd.value.map(<[u8]>::to_vec));
            }
        }
        let raw = SourceRecord {
            coordinates: SourceCoordinates {
                topic: self.source_topic.clone(),
                partition: p,
                offset: m.offset(),
            },
            timestamp: m.timestamp().to_millis().unwrap_or_else(now_ms),
            key: m.key(),
            value: m.payload(),
            headers,
        };
        task.core.process(&raw)?;
        task.next_offset = Some(m.offset() + 1);
        Ok(())
    }

    /// Hands every task's outputs to the output sender (one batch, in task
    /// order; a refusal shows at the next commit's drain).
    pub fn send_outputs(&mut self) -> Result<(), TopologyError> {
        let n: usize = self.tasks.values().map(|t| t.core.outputs.len()).sum();
        if n == 0 {
            return Ok(());
        }
        // Exactly-once: the sender begins the transaction with the first.
        self.txn_open = self.cfg.guarantee == Guarantee::ExactlyOnce;
        let mut records = Vec::with_capacity(n);
        for task in self.tasks.values_mut() {
            records.append(&mut task.core.outputs);
        }
        self.sender.send(records, &self.provenance)
    }

    /// What the commit protocol works with, besides the tasks.
    fn scope<'a>(&'a self, consumer: &'a BaseConsumer<StreamContext>) -> CommitScope<'a> {
        CommitScope {
            producer: &self.producer,
            sender: &self.sender,
            consumer,
            source_topic: &self.source_topic,
            guarantee: self.cfg.guarantee,
            provenance: &self.provenance,
            timeout: self.cfg.request_timeout,
        }
    }

    /// Starts a commit once the one in flight (if any) finished; with
    /// `wait`, also finishes it. Returns whether anything was committed.
    fn commit_all(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        wait: bool,
    ) -> Result<bool, TopologyError> {
        self.finish_commit(consumer, true)?;
        // Taken out for the call: the scope borrows the rest of `self`.
        let mut tasks = std::mem::take(&mut self.tasks);
        let mut txn_open = self.txn_open;
        let outcome = commit(&mut tasks, &self.scope(consumer), &mut txn_open);
        self.tasks = tasks;
        self.txn_open = txn_open;
        let outcome = outcome?;
        let records = std::mem::take(&mut self.uncommitted_records);
        let started = !matches!(outcome, Outcome::Idle);
        match outcome {
            Outcome::Pending(in_flight) => self.in_flight = Some((in_flight, records)),
            Outcome::Idle => self.status.add_committed(records),
        }
        // The next interval's records carry the next sequence number.
        self.provenance.advance();
        // Periodic work (state expiry) right after a commit started, when
        // the store overlays are empty (the frozen writes are readable);
        // its writes go out with the next commit.
        let now = now_ms();
        for (p, t) in self.tasks.iter_mut() {
            if t.state == TaskState::Running {
                let offset = t.committed.map(|o| o - 1).unwrap_or(-1);
                t.core.punctuate(now, *p, offset)?;
            }
        }
        if wait {
            self.finish_commit(consumer, true)?;
        }
        Ok(started)
    }

    /// Finishes the commit in flight once the output sender delivered its
    /// outputs and changelog (with `wait`: waits for that). Returns whether
    /// one finished.
    fn finish_commit(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        wait: bool,
    ) -> Result<bool, TopologyError> {
        let Some((in_flight, records)) = self.in_flight.take() else {
            return Ok(false);
        };
        let mut tasks = std::mem::take(&mut self.tasks);
        let finished = finish(in_flight, &mut tasks, &self.scope(consumer), wait);
        self.tasks = tasks;
        match finished? {
            Some(still) => {
                self.in_flight = Some((still, records));
                Ok(false)
            }
            None => {
                self.commit_succeeded(records);
                Ok(true)
            }
        }
    }

    /// A commit went through: its records count as committed, and a run of
    /// failures ends (an empty commit proves nothing: after a rewind there
    /// is no progress yet, so the backoff keeps growing while the same work
    /// keeps failing).
    fn commit_succeeded(&mut self, records: u64) {
        self.status.add_committed(records);
        if self.failed_commits > 0 {
            tracing::info!(after = self.failed_commits, "commit succeeded again");
            self.failed_commits = 0;
            self.status.set_failed_commits(0);
        }
    }

    /// Drops the interval's uncommitted work: the open transaction, store
    /// overlays and pending outputs.
    fn abort_interval(&mut self) {
        // Processed again after the rewind, and counted then.
        self.uncommitted_records = 0;
        // Its outputs and changelog may be delivered, its offsets are not
        // committed: it is repeated after the rewind, as the interval is.
        self.in_flight = None;
        // Nothing of this interval may reach the producer after the abort.
        self.sender.discard();
        self.txn_open = false;
        if self.cfg.guarantee == Guarantee::ExactlyOnce {
            // Named so a checker can tell this transaction's records (a
            // broker that does not hide aborted records still shows them).
            // Its number is the sender's: a failed commit's interval, while
            // this thread's provenance has moved to the next one.
            match self.sender.abort(self.cfg.request_timeout) {
                Ok(None) => {}
                Ok(Some((txn, result))) => {
                    tracing::warn!(run = %self.provenance.run, txn, "transaction aborted");
                    match result {
                        Ok(()) => {
                            ::metrics::counter!(metrics::TRANSACTIONS, metrics::LABEL_RESULT => "aborted")
                                .increment(1);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "abort_transaction failed (the broker aborts it on timeout)")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no transaction abort: the output sender is gone")
                }
            }
        }
        // The interval's records are aborted (or, at-least-once, will be
        // repeated): the next interval gets a new sequence number.
        self.provenance.advance();
        for t in self.tasks.values_mut() {
            t.abort();
        }
    }

    /// Runs the commit protocol; a failure goes to [`Self::recover`].
    pub fn commit(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<(), TopologyError> {
        match self
            .send_outputs()
            .and_then(|_| self.commit_all(consumer, false))
        {
            Ok(_) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Finishes the commit in flight if the output sender is done with it
    /// (called every turn of the loop, so state is applied soon); a failure
    /// goes to [`Self::recover`].
    pub fn poll_commit(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
    ) -> Result<(), TopologyError> {
        match self.finish_commit(consumer, false) {
            Ok(_) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// Hands the processed batch's outputs to the producer; a failure goes
    /// to [`Self::recover`].
    pub fn send_outputs_or_recover(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
    ) -> Result<(), TopologyError> {
        match self.send_outputs() {
            Ok(()) => Ok(()),
            Err(e) => self.recover(consumer, e),
        }
    }

    /// After a failed send or commit: drop the interval's uncommitted work
    /// (abort the transaction, the store overlays). A failure the next
    /// attempt can fix (broker trouble, an undeliverable output, a
    /// transaction that must be aborted) backs off and rewinds the input to
    /// the last committed offsets; nothing is dropped or dead-lettered. A
    /// store failure, a dead producer or a dead output sender is returned
    /// (the caller stops, or re-creates the producer).
    fn recover(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        e: TopologyError,
    ) -> Result<(), TopologyError> {
        // Fencing first: any operation may be the one that notices it.
        let e = self.fenced_or(e);
        self.abort_interval();
        let e = self.fenced_or(e); // the abort itself may reveal it
        if matches!(
            e,
            TopologyError::ProducerFenced(_)
                | TopologyError::State { .. }
                | TopologyError::Panicked(_)
        ) {
            return Err(e);
        }
        let backoff = Duration::from_millis(100 * (1u64 << self.failed_commits.min(6)))
            .min(Duration::from_secs(5));
        self.failed_commits += 1;
        self.status.set_failed_commits(self.failed_commits.into());
        tracing::warn!(error = %e, attempt = self.failed_commits, backoff_ms = backoff.as_millis() as u64, "commit failed: dropping uncommitted work and reprocessing from the last committed offsets");
        ::metrics::counter!(metrics::RETRIES, metrics::LABEL_OPERATION => "commit").increment(1);
        std::thread::sleep(backoff);
        for (p, t) in self.tasks.iter_mut() {
            if t.state != TaskState::Running {
                continue;
            }
            let to = t.committed.map(Offset::Offset).unwrap_or(Offset::Beginning);
            consumer
                .seek(&self.source_topic, *p, to, self.cfg.request_timeout)
                .map_err(|source| TopologyError::Kafka {
                    op: format!("rewind {}[{p}] after a failed commit", self.source_topic),
                    source,
                })?;
        }
        Ok(())
    }

    /// `e`, or [`TopologyError::ProducerFenced`] when the producer is dead
    /// (fenced by a newer instance, or another fatal error): whatever
    /// operation noticed it, the cure is a new producer, not a stop.
    pub fn fenced_or(&self, e: TopologyError) -> TopologyError {
        use rdkafka::types::RDKafkaErrorCode::{InvalidProducerEpoch, ProducerFenced};
        let fatal = self.producer.client().fatal_error();
        // librdkafka reports a fencing first as an *abortable* error and,
        // after the abort, bumps the epoch — fencing the other instance in
        // turn. A fenced producer must not fight on: treat it as dead now.
        let txn_fatal = matches!(&e, TopologyError::Kafka { source: rdkafka::error::KafkaError::Transaction(t), .. }
            if t.is_fatal() || matches!(t.code(), ProducerFenced | InvalidProducerEpoch));
        match (e, fatal) {
            (e @ TopologyError::ProducerFenced(_), _) => e,
            (e, Some((code, why))) => {
                TopologyError::ProducerFenced(format!("{e} (producer: {code:?}: {why})"))
            }
            (e, None) if txn_fatal => TopologyError::ProducerFenced(e.to_string()),
            (e, None) => e,
        }
    }

    /// Refreshes lag and store gauges from locally cached watermarks.
    pub fn update_gauges(&self, consumer: &BaseConsumer<StreamContext>) {
        use rdkafka::consumer::Consumer as _;
        // Every thread sets the sum; the last one's may have missed a
        // concurrent change, so it is set again here, periodically.
        ::metrics::gauge!(metrics::ASSIGNED_PARTITIONS).set(self.status.topology_assigned() as f64);
        let client = consumer.client();
        for (p, t) in &self.tasks {
            if let Some((low, high)) =
                crate::kafka::client::cached_watermarks(client, &self.source_topic, *p)
            {
                let next = t.next_offset.or(t.committed).unwrap_or(low);
                ::metrics::gauge!(metrics::CONSUMER_LAG, metrics::LABEL_TOPIC => self.source_topic.to_string(), metrics::LABEL_PARTITION => p.to_string())
                    .set((high - next).max(0) as f64);
            }
            for (name, tx) in &t.core.stores {
                ::metrics::gauge!(metrics::STORE_ENTRIES, metrics::LABEL_STORE => name.clone(), metrics::LABEL_PARTITION => p.to_string())
                    .set(tx.store().approximate_entries() as f64);
            }
        }
    }

    /// Shutdown: commit when `clean`, then close every task. After an
    /// error nothing is committed: the next run reprocesses from the last
    /// committed offsets.
    pub fn shutdown(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        clean: bool,
    ) -> Result<(), TopologyError> {
        let result = if clean {
            self.send_outputs()
                .and_then(|_| self.commit_all(consumer, true))
                .map(|_| ())
        } else {
            Ok(())
        };
        if result.is_err() || !clean {
            self.abort_interval();
        }
        // A rebalance (another member joining or leaving) refused the final
        // commit: the partitions are moving anyway, and their next owner
        // reprocesses from the last committed offsets, as after any
        // rebalance. The stop itself is clean (Kafka Streams: tasks migrated).
        let result = match result {
            Err(e) if partitions_migrated(&e) => {
                tracing::warn!(error = %e, "final commit refused by a rebalance: the partitions' next owner reprocesses the last interval");
                Ok(())
            }
            other => other,
        };
        for t in self.tasks.values_mut() {
            t.close();
        }
        self.tasks.clear();
        self.restorer.clear();
        self.publish_status();
        result
    }
}

/// Threads that open a new assignment's store partitions.
const OPENERS: usize = 4;

/// Opens a task per partition, on up to [`OPENERS`] threads. Opening a
/// RocksDB store partition takes ~6–8 ms, mostly file creation and syncs
/// that overlap well (60 opens: 6.3 ms each one after another, 3.5 ms on
/// four threads), and every assignment waits for it before processing
/// starts: 131 partitions on the embedded broker, subscribe → assigned
/// 1.21–1.64 s opened one after another, 0.92–0.98 s now (both including
/// the group's 250 ms initial delay). Results come back in `partitions`'
/// order.
fn open_tasks(
    cfg: &StreamsConfig,
    topology: &Topology,
    partitions: &[i32],
) -> Vec<(i32, Result<Task, TopologyError>)> {
    let open = |chunk: &[i32]| -> Vec<(i32, Result<Task, TopologyError>)> {
        chunk
            .iter()
            .map(|p| (*p, Task::open(cfg, topology, *p)))
            .collect()
    };
    if partitions.len() < 2 * OPENERS {
        return open(partitions);
    }
    let chunk = partitions.len().div_ceil(OPENERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = partitions
            .chunks(chunk)
            .map(|c| {
                let handle = std::thread::Builder::new()
                    .name("weir-open".into())
                    .spawn_scoped(s, move || open(c));
                (c, handle)
            })
            .collect();
        let mut opened = Vec::with_capacity(partitions.len());
        for (c, handle) in handles {
            match handle {
                Ok(h) => match h.join() {
                    Ok(tasks) => opened.extend(tasks),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                // The OS refused a thread: open that share here.
                Err(_) => opened.extend(open(c)),
            }
        }
        opened
    })
}

/// The group took the partitions away under a commit (a rebalance in
/// progress, or this member's generation is gone).
fn partitions_migrated(e: &TopologyError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    match e {
        TopologyError::Kafka { source, .. } => matches!(
            source.rdkafka_error_code(),
            Some(C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use weir_state::{RocksDbOptions, RocksDbStore};

    use super::*;
    use crate::{StoreSpec, StringSerde, TopologyBuilder};

    #[test]
    fn tasks_open_on_several_threads_in_partition_order_and_a_failure_stays_with_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StreamsConfig::new("app", "unused:9092");
        cfg.state_dir = dir.path().to_path_buf();
        let b = TopologyBuilder::new();
        b.add_store(StoreSpec::key_value("seen"));
        b.source("in", StringSerde, StringSerde)
            .to("out", StringSerde, StringSerde);
        let topology = b.build().unwrap();
        // Partition 7's store is held open elsewhere (RocksDB's lock).
        let held = RocksDbStore::open(
            "seen",
            dir.path().join("app/seen/7"),
            RocksDbOptions::default(),
        )
        .unwrap();
        let partitions: Vec<i32> = (0..3 * OPENERS as i32).rev().collect();
        let opened = open_tasks(&cfg, &topology, &partitions);
        let order: Vec<i32> = opened.iter().map(|(p, _)| *p).collect();
        assert_eq!(order, partitions);
        for (p, task) in &opened {
            match (p, task) {
                (7, Err(TopologyError::State { task, .. })) => assert_eq!(task, "in-7"),
                (7, other) => panic!("partition 7 opened although locked: {:?}", other.is_ok()),
                (p, Err(e)) => panic!("partition {p}: {e}"),
                (p, Ok(t)) => assert_eq!(t.partition, *p),
            }
        }
        drop(held);
    }
}
