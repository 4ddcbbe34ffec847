//! The output sender: a thread of its own that hands a stream thread's sink
//! and dead-letter records to the producer.
//!
//! Why: handing a record to librdkafka (`rd_kafka_producev`: copy, header
//! list, partitioner, queue lock) cost ~10% of the stream thread, which is
//! the bottleneck of a job (perf, at-least-once on the embedded broker),
//! while the second core had idle time. The stream thread now moves each
//! processed batch's outputs here (no copy) and goes on processing.
//!
//! The commit protocol sees no difference: its first step is
//! [`OutputSender::drain`], which returns once every record handed over
//! before it is in the producer (or reports the first refusal), so the
//! flush that follows covers them. Order is kept: one thread, one FIFO
//! queue. [`OutputSender::discard`] drops whatever is still queued when an
//! interval is aborted (its records are reprocessed after the rewind; under
//! exactly-once they must not reach the producer after the abort).
//!
//! It also runs the middle of each commit ([`OutputSender::commit`]), in
//! queue order, so after every output of the interval, while the stream
//! thread processes the next one: at-least-once, flush, the changelog
//! records of the interval's frozen store writes, flush again (handing
//! ~230,000 changelog records to librdkafka stopped the stream thread
//! ~0.19 s of every 1 s interval); exactly-once, the changelog records and
//! the input offsets into the interval's transaction, and its commit. Under
//! exactly-once this thread owns the transactions: it begins one with the
//! first record of an interval, commits it when the interval's commit comes
//! and aborts it when the stream thread asks ([`OutputSender::abort`]), so
//! a transaction holds one interval's records, never two.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::Producer;
use rdkafka::TopicPartitionList;
use weir_state::FrozenWrites;

use crate::builder::SourceOffsetOf;
use crate::kafka::producer::{self, WeirProducer, KIND_DEAD_LETTER, KIND_OUTPUT};
use crate::record::OutputRecord;
use crate::runtime::commit::{kafka, send_changelog, Provenance};
use crate::{metrics, TopologyError};

/// Batches queued before the stream thread waits (back-pressure). Enough
/// for the batches a stream thread processes while the sender writes a
/// commit's changelog (~0.2 s, ~60 batches of up to 1,000 records at
/// 300,000 records/s): fewer and the stream thread waits for the commit
/// after all.
const QUEUED_BATCHES: usize = 96;

/// One store partition's frozen writes and the changelog partition they
/// are logged to.
pub(crate) struct FrozenLog {
    pub task: String,
    pub topic: String,
    pub partition: i32,
    pub writes: FrozenWrites,
    /// How the store's values tell their write's source offset, if they do.
    pub value_source_offset: Option<SourceOffsetOf>,
}

/// Exactly-once: the input offsets an interval's transaction commits, and
/// the consumer's group metadata they are committed under (a stale group
/// generation fences the commit).
pub(crate) struct TxnOffsets {
    pub offsets: TopicPartitionList,
    pub group: ConsumerGroupMetadata,
}

/// The answer to [`OutputSender::commit`]: `Ok` once the interval's
/// outputs and changelog records are delivered (exactly-once: committed).
pub(crate) type CommitReply = Receiver<Result<(), TopologyError>>;

/// What [`OutputSender::abort`] did: the commit sequence number of the
/// transaction it aborted (a checker needs it: a broker that does not hide
/// aborted records still shows them), and whether the abort went through.
pub(crate) type Aborted = Option<(u64, Result<(), TopologyError>)>;

enum Work {
    /// Records to produce, stamped with this provenance, unless their
    /// generation was discarded.
    Records {
        generation: u64,
        provenance: Provenance,
        records: Vec<OutputRecord>,
    },
    /// Reply once everything before this is handed over.
    Drain(SyncSender<Result<(), TopologyError>>),
    /// Deliver everything before this, then these changelog records
    /// (exactly-once: with these offsets, and commit); reply.
    Commit {
        generation: u64,
        provenance: Provenance,
        logs: Vec<FrozenLog>,
        offsets: Option<TxnOffsets>,
        timeout: Duration,
        reply: SyncSender<Result<(), TopologyError>>,
    },
    /// Abort the open transaction, if any; reply.
    Abort {
        timeout: Duration,
        reply: SyncSender<Aborted>,
    },
}

/// Hands output records to the producer on its own thread.
pub(crate) struct OutputSender {
    queue: Option<SyncSender<Work>>,
    thread: Option<JoinHandle<()>>,
    /// Bumped by [`Self::discard`]; queued batches of an older generation are dropped.
    generation: Arc<AtomicU64>,
}

impl OutputSender {
    /// Starts the sender thread. `dead_letters` names the dead-letter topic
    /// (its records are counted apart in the delivery reports);
    /// `transactional`: exactly-once (the producer's transactions are
    /// initialised).
    pub fn start(
        producer: Arc<WeirProducer>,
        dead_letters: Option<String>,
        transactional: bool,
        name: String,
    ) -> Result<Self, TopologyError> {
        let (queue, work) = sync_channel(QUEUED_BATCHES);
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                run(
                    &producer,
                    dead_letters.as_deref(),
                    transactional,
                    &current,
                    work,
                )
            })
            .map_err(|source| TopologyError::Spawn {
                what: "output sender",
                source,
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            generation,
        })
    }

    /// Queues records for the producer, stamped with `provenance` (run and
    /// commit interval); waits only while the queue is full.
    pub fn send(
        &self,
        records: Vec<OutputRecord>,
        provenance: &Provenance,
    ) -> Result<(), TopologyError> {
        if records.is_empty() {
            return Ok(());
        }
        let work = Work::Records {
            generation: self.generation.load(Ordering::SeqCst),
            provenance: provenance.clone(),
            records,
        };
        self.queue
            .as_ref()
            .and_then(|q| q.send(work).ok())
            .ok_or_else(gone)
    }

    /// Waits until every record queued so far is in the producer; returns
    /// the first one the producer refused since the last drain (the records
    /// after it were dropped: the interval must be aborted).
    pub fn drain(&self) -> Result<(), TopologyError> {
        let (reply, answer) = sync_channel(1);
        self.queue
            .as_ref()
            .and_then(|q| q.send(Work::Drain(reply)).ok())
            .ok_or_else(gone)?;
        answer.recv().map_err(|_| gone())?
    }

    /// Steps 1–3 of a commit (see `commit::commit`), on the sender thread
    /// once every record handed over before is in the producer: report a
    /// record the producer refused; then at-least-once (`offsets` is
    /// `None`) flush (the outputs are delivered), send `logs`' changelog
    /// records stamped with `provenance`, flush again; exactly-once, send
    /// them and `offsets` into the interval's transaction and commit it.
    /// The answer comes on the returned channel; after [`Self::discard`] it
    /// is an "aborted" error and nothing is sent. After a failed commit the
    /// records queued behind it are dropped until the next discard.
    pub fn commit(
        &self,
        logs: Vec<FrozenLog>,
        offsets: Option<TxnOffsets>,
        provenance: &Provenance,
        timeout: Duration,
    ) -> Result<CommitReply, TopologyError> {
        let (reply, answer) = sync_channel(1);
        let work = Work::Commit {
            generation: self.generation.load(Ordering::SeqCst),
            provenance: provenance.clone(),
            logs,
            offsets,
            timeout,
            reply,
        };
        self.queue
            .as_ref()
            .and_then(|q| q.send(work).ok())
            .ok_or_else(gone)?;
        Ok(answer)
    }

    /// Drops every queued record and waits until the sender has stopped
    /// handing any to the producer (an aborted interval).
    pub fn discard(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // A refusal of a discarded record does not matter any more.
        let _ = self.drain();
    }

    /// Exactly-once: aborts the open transaction, if there is one (call
    /// after [`Self::discard`]: nothing of the interval follows).
    pub fn abort(&self, timeout: Duration) -> Result<Aborted, TopologyError> {
        let (reply, answer) = sync_channel(1);
        self.queue
            .as_ref()
            .and_then(|q| q.send(Work::Abort { timeout, reply }).ok())
            .ok_or_else(gone)?;
        answer.recv().map_err(|_| gone())
    }
}

impl Drop for OutputSender {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.queue = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sender thread ends only when its queue closes, so a closed queue
/// means it panicked: nothing more would reach the producer, and retrying
/// cannot help (the stream thread stops on it).
fn gone() -> TopologyError {
    TopologyError::Panicked("its output sender thread stopped".into())
}

/// The sender thread: handles work until the queue closes.
fn run(
    producer: &WeirProducer,
    dead_letters: Option<&str>,
    transactional: bool,
    generation: &AtomicU64,
    work: Receiver<Work>,
) {
    let mut sender = Sender {
        producer,
        dead_letters,
        transactional,
        generation,
        refused: None,
        open: None,
        failed: None,
    };
    for w in work {
        sender.handle(w);
    }
}

/// The sender thread's state.
struct Sender<'a> {
    producer: &'a WeirProducer,
    dead_letters: Option<&'a str>,
    transactional: bool,
    /// The stream thread's current generation; work of an older one is dropped.
    generation: &'a AtomicU64,
    /// The first record the producer refused since the last drain or commit.
    refused: Option<TopologyError>,
    /// Exactly-once: the commit sequence number of the open transaction.
    open: Option<u64>,
    /// The generation of a commit that failed: its interval's records
    /// still queued are dropped (the stream thread aborts and discards).
    failed: Option<u64>,
}

impl Sender<'_> {
    /// Whether work of generation `g` is still wanted.
    fn current(&self, g: u64) -> bool {
        self.generation.load(Ordering::Relaxed) == g && self.failed.is_none_or(|f| f < g)
    }

    fn handle(&mut self, w: Work) {
        match w {
            Work::Records {
                generation: g,
                provenance,
                records,
            } => {
                for r in records {
                    if self.refused.is_some() || !self.current(g) {
                        break;
                    }
                    if let Err(e) = self.send(&r, &provenance) {
                        self.refused = Some(e);
                    }
                }
            }
            Work::Drain(reply) => {
                let _ = reply.send(self.refused.take().map_or(Ok(()), Err));
            }
            Work::Commit {
                generation: g,
                provenance,
                logs,
                offsets,
                timeout,
                reply,
            } => {
                if !self.current(g) {
                    // Aborted: nothing more of the interval is sent.
                    let aborted = TopologyError::Commit("the interval was aborted".into());
                    let _ = reply.send(Err(aborted));
                    return;
                }
                let result = match (self.refused.take(), offsets) {
                    (Some(e), _) => Err(e),
                    (None, None) => log_frozen(self.producer, &provenance, &logs, timeout),
                    (None, Some(offsets)) => {
                        self.commit_transaction(&provenance, &logs, &offsets, timeout)
                    }
                };
                if result.is_err() {
                    self.failed = Some(g);
                }
                // Released before the answer: the stream thread then holds
                // the only reference to the writes it applies.
                drop(logs);
                let _ = reply.send(result);
            }
            Work::Abort { timeout, reply } => {
                let aborted = self.open.take().map(|seq| {
                    let result = self
                        .producer
                        .abort_transaction(timeout)
                        .map_err(kafka("abort transaction"));
                    (seq, result)
                });
                let _ = reply.send(aborted);
            }
        }
    }

    /// Exactly-once: the interval's transaction begins with its first record.
    fn begin(&mut self, provenance: &Provenance) -> Result<(), TopologyError> {
        if self.transactional && self.open.is_none() {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin transaction"))?;
            self.open = Some(provenance.seq);
        }
        Ok(())
    }

    fn send(&mut self, r: &OutputRecord, provenance: &Provenance) -> Result<(), TopologyError> {
        self.begin(provenance)?;
        let kind = if Some(&*r.topic) == self.dead_letters {
            KIND_DEAD_LETTER
        } else {
            KIND_OUTPUT
        };
        let (extra, n) = provenance.headers(None);
        producer::send(
            self.producer,
            &r.topic,
            None,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
            &extra[..n],
            Some(r.timestamp),
            kind,
        )
    }

    /// The sender's part of an exactly-once commit: the changelog records
    /// and the input offsets go into the interval's transaction (begun here
    /// if no output began it), which is then committed.
    fn commit_transaction(
        &mut self,
        provenance: &Provenance,
        logs: &[FrozenLog],
        offsets: &TxnOffsets,
        timeout: Duration,
    ) -> Result<(), TopologyError> {
        self.begin(provenance)?;
        send_logs(self.producer, provenance, logs)?;
        if offsets.offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(&offsets.offsets, &offsets.group, timeout)
                .map_err(kafka("send offsets to transaction"))?;
        }
        // Our flush first: rust-rdkafka's commit_transaction flushes with
        // `Producer::flush`, which costs ≥ 100 ms with a threaded producer
        // (see `producer::flush`) — a whole 100 ms commit interval.
        producer::flush(self.producer, timeout)?;
        self.producer
            .commit_transaction(timeout)
            .map_err(kafka("commit transaction"))?;
        self.open = None;
        if let Some(e) = self.producer.context().take_error() {
            // Cannot happen after a successful commit; refuse to go on if it does.
            return Err(TopologyError::Commit(e));
        }
        ::metrics::counter!(metrics::TRANSACTIONS, metrics::LABEL_RESULT => "committed")
            .increment(1);
        Ok(())
    }
}

/// Hands every frozen log's changelog records to the producer.
fn send_logs(
    producer: &WeirProducer,
    provenance: &Provenance,
    logs: &[FrozenLog],
) -> Result<(), TopologyError> {
    logs.iter().try_for_each(|log| {
        send_changelog(
            producer,
            &log.topic,
            log.partition,
            provenance,
            &log.task,
            log.value_source_offset,
            |sink| log.writes.log_changes(sink),
        )
    })
}

/// The sender's part of an at-least-once commit: outputs delivered, then
/// the changelog records sent and delivered. The order keeps the
/// changelog from claiming a key whose output was not delivered.
fn log_frozen(
    producer: &WeirProducer,
    provenance: &Provenance,
    logs: &[FrozenLog],
    timeout: Duration,
) -> Result<(), TopologyError> {
    producer::flush(producer, timeout)?;
    send_logs(producer, provenance, logs)?;
    producer::flush(producer, timeout)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use rdkafka::producer::{DefaultProducerContext, Producer};
    use weir_state::{MemoryStore, StoreTransaction};

    use super::*;
    use crate::kafka::producer::DeliveryTracker;
    use crate::record::Headers;

    const TOPIC: &str = "out";

    fn record(key: &str, value_len: usize) -> OutputRecord {
        OutputRecord {
            topic: Arc::from(TOPIC),
            key: Some(key.as_bytes().to_vec()),
            value: Some(vec![b'x'; value_len]),
            headers: Headers::new(),
            timestamp: 1,
        }
    }

    /// Every key on `TOPIC`, in offset order.
    fn keys(brokers: &str) -> Vec<String> {
        keys_of(brokers, TOPIC)
    }

    /// Every key on partition 0 of `topic`, in offset order.
    fn keys_of(brokers: &str, topic: &str) -> Vec<String> {
        all_keys(brokers, topic)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn records_after_a_refused_one_are_dropped_and_the_drain_reports_it() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let producer: WeirProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("message.max.bytes", "2000")
            .create_with_context(DeliveryTracker::default())
            .unwrap();
        let producer = Arc::new(producer);
        let sender =
            OutputSender::start(producer.clone(), None, false, "test-send".into()).unwrap();
        let run = Provenance::new("run".into(), true, false);

        sender
            .send(vec![record("a", 10), record("b", 10)], &run)
            .unwrap();
        sender
            .send(vec![record("too-big", 5000), record("c", 10)], &run)
            .unwrap();
        sender.send(vec![record("d", 10)], &run).unwrap();
        let err = sender.drain().unwrap_err();
        assert!(err.to_string().contains("produce to out"), "{err}");
        // The next interval starts clean.
        sender.send(vec![record("e", 10)], &run).unwrap();
        sender.drain().unwrap();
        producer::flush(&producer, Duration::from_secs(10)).unwrap();
        assert_eq!(keys(&brokers), ["a", "b", "e"]);
    }

    /// A sender on a fresh cluster with `out` and `log` topics.
    fn sender_on_cluster() -> (
        MockCluster<'static, DefaultProducerContext>,
        Arc<WeirProducer>,
        OutputSender,
    ) {
        cluster_sender(false)
    }

    /// A sender on a fresh cluster with `out` and `log` topics; with
    /// `transactional`, its producer's transactions are initialised.
    fn cluster_sender(
        transactional: bool,
    ) -> (
        MockCluster<'static, DefaultProducerContext>,
        Arc<WeirProducer>,
        OutputSender,
    ) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 1, 1).unwrap();
        cluster.create_topic("log", 1, 1).unwrap();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "2000");
        if transactional {
            config.set("transactional.id", "test-txn");
        }
        let producer: WeirProducer = config
            .create_with_context(DeliveryTracker::default())
            .unwrap();
        if transactional {
            producer.init_transactions(Duration::from_secs(10)).unwrap();
        }
        let producer = Arc::new(producer);
        let sender =
            OutputSender::start(producer.clone(), None, transactional, "test-send".into()).unwrap();
        (cluster, producer, sender)
    }

    fn frozen_log(keys: &[&str]) -> Vec<FrozenLog> {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("s")));
        for (i, k) in keys.iter().enumerate() {
            tx.put(k.as_bytes().to_vec(), b"seen".to_vec(), i as i64);
        }
        vec![FrozenLog {
            task: "t-0".into(),
            topic: "log".into(),
            partition: 0,
            writes: tx.freeze().expect("writes"),
            value_source_offset: None,
        }]
    }

    #[test]
    fn a_commit_delivers_the_outputs_then_the_frozen_changelog_and_answers() {
        let (cluster, producer, sender) = sender_on_cluster();
        let run = Provenance::new("run".into(), true, false);
        sender.send(vec![record("a", 10)], &run).unwrap();
        let reply = sender
            .commit(frozen_log(&["k"]), None, &run, Duration::from_secs(10))
            .unwrap();
        reply.recv().unwrap().unwrap();
        // Delivered when the answer comes: no flush of the caller's.
        assert_eq!(producer.context().changelog_end("log", 0), Some(1));
        let brokers = cluster.bootstrap_servers();
        assert_eq!(keys(&brokers), ["a"]);
        assert_eq!(keys_of(&brokers, "log"), ["k"]);
    }

    #[test]
    fn a_commit_after_a_refused_output_fails_and_logs_nothing() {
        let (cluster, _producer, sender) = sender_on_cluster();
        let run = Provenance::new("run".into(), true, false);
        sender.send(vec![record("too-big", 5000)], &run).unwrap();
        let reply = sender
            .commit(frozen_log(&["k"]), None, &run, Duration::from_secs(10))
            .unwrap();
        let err = reply.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("produce to out"), "{err}");
        assert!(keys_of(&cluster.bootstrap_servers(), "log").is_empty());
    }

    #[test]
    fn a_discarded_commit_answers_aborted_and_logs_nothing() {
        let (cluster, producer, _) = sender_on_cluster();
        let run_id = Provenance::new("run".into(), true, false);
        // A sender whose thread runs here, once the commit is queued and
        // discarded (as `discard` does: a new generation).
        let (queue, work) = sync_channel(4);
        let sender = OutputSender {
            queue: Some(queue),
            thread: None,
            generation: Arc::new(AtomicU64::new(0)),
        };
        let reply = sender
            .commit(frozen_log(&["k"]), None, &run_id, Duration::from_secs(10))
            .unwrap();
        sender.generation.fetch_add(1, Ordering::SeqCst);
        let generation = sender.generation.clone();
        drop(sender); // closes the queue: `run` returns when it is empty
        run(&producer, None, false, &generation, work);
        let err = reply.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        producer::flush(&producer, Duration::from_secs(10)).unwrap();
        assert!(keys_of(&cluster.bootstrap_servers(), "log").is_empty());
    }

    /// A transactional sender (exactly-once) on a fresh cluster with `out`
    /// and `log` topics, and a group's metadata for its commits.
    fn transactional_sender() -> (
        MockCluster<'static, DefaultProducerContext>,
        OutputSender,
        BaseConsumer,
    ) {
        let (cluster, _, sender) = cluster_sender(true);
        let group: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "g")
            .create()
            .unwrap();
        (cluster, sender, group)
    }

    /// Every key on partition 0 of `topic` with its offset, aborted ones
    /// included, in offset order (a transaction's marker takes an offset
    /// and is never delivered: read until the position passes the end).
    fn all_keys(brokers: &str, topic: &str) -> Vec<(String, i64)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reader")
            .set("isolation.level", "read_uncommitted")
            .create()
            .unwrap();
        let (low, high) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        if low >= high {
            return Vec::new(); // nothing to read: no position would ever be set
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut keys = Vec::new();
        let at_end = |c: &BaseConsumer| {
            let pos = c.position().unwrap();
            matches!(pos.find_partition(topic, 0).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= high)
        };
        while !at_end(&c) {
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                keys.push((
                    String::from_utf8_lossy(m.key().unwrap()).into_owned(),
                    m.offset(),
                ));
            }
        }
        keys
    }

    /// Queues an exactly-once commit of the interval, logging `key`.
    fn commit_txn(
        sender: &OutputSender,
        group: &BaseConsumer,
        run: &Provenance,
        key: &str,
    ) -> CommitReply {
        let offsets = TxnOffsets {
            offsets: TopicPartitionList::new(),
            group: group.group_metadata().expect("a group member has metadata"),
        };
        sender
            .commit(
                frozen_log(&[key]),
                Some(offsets),
                run,
                Duration::from_secs(10),
            )
            .unwrap()
    }

    /// `(key, offset)` pairs, for short assertions.
    fn at(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(k, o)| (k.to_string(), *o)).collect()
    }

    #[test]
    fn exactly_once_commits_an_interval_in_one_transaction_and_the_next_begins_another() {
        let (cluster, sender, group) = transactional_sender();
        let timeout = Duration::from_secs(10);
        let mut run = Provenance::new("run".into(), true, false);
        sender.send(vec![record("a", 10)], &run).unwrap();
        let first = commit_txn(&sender, &group, &run, "k");
        // Queued behind the commit, as the stream thread does: the next
        // interval's records.
        run.advance();
        sender.send(vec![record("b", 10)], &run).unwrap();
        first.recv().unwrap().unwrap();
        let second = commit_txn(&sender, &group, &run, "k2");
        second.recv().unwrap().unwrap();
        let brokers = cluster.bootstrap_servers();
        // (This broker writes no transaction markers: no gaps.)
        assert_eq!(all_keys(&brokers, TOPIC), at(&[("a", 0), ("b", 1)]));
        assert_eq!(all_keys(&brokers, "log"), at(&[("k", 0), ("k2", 1)]));
        // An abort names the transaction it ends: the interval's number.
        run.advance();
        sender.send(vec![record("c", 10)], &run).unwrap();
        sender.drain().unwrap();
        let (txn, aborted) = sender.abort(timeout).unwrap().expect("c began one");
        assert_eq!(txn, 2);
        aborted.unwrap();
        assert!(sender.abort(timeout).unwrap().is_none(), "nothing is open");
    }

    #[test]
    fn after_a_failed_commit_its_interval_is_dropped_until_the_abort() {
        let (cluster, sender, group) = transactional_sender();
        let run = Provenance::new("run".into(), true, false);
        sender
            .send(vec![record("a", 10), record("too-big", 5000)], &run)
            .unwrap();
        let reply = commit_txn(&sender, &group, &run, "k");
        let err = reply.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("produce to out"), "{err}");
        // Processed before the stream thread saw the failure: dropped.
        sender.send(vec![record("b", 10)], &run).unwrap();
        sender.drain().unwrap();
        sender.discard();
        let (txn, aborted) = sender
            .abort(Duration::from_secs(10))
            .unwrap()
            .expect("open");
        assert_eq!(txn, 0);
        aborted.unwrap();
        // After the rewind the interval runs again, in a new transaction.
        sender.send(vec![record("a", 10)], &run).unwrap();
        let reply = commit_txn(&sender, &group, &run, "k");
        reply.recv().unwrap().unwrap();
        let brokers = cluster.bootstrap_servers();
        // "b" never left; the first "a", if it reached the broker before
        // the abort purged it, is in the aborted transaction.
        let out = keys(&brokers);
        assert!(out == ["a"] || out == ["a", "a"], "{out:?}");
        assert_eq!(keys_of(&brokers, "log"), ["k"]);
    }

    #[test]
    fn a_stopped_sender_thread_is_an_error_not_a_hang() {
        let (queue, work) = sync_channel(1);
        drop(work);
        let sender = OutputSender {
            queue: Some(queue),
            thread: None,
            generation: Arc::new(AtomicU64::new(0)),
        };
        let run = Provenance::new("run".into(), true, false);
        let sent = sender.send(vec![record("a", 1)], &run).unwrap_err();
        assert!(matches!(sent, TopologyError::Panicked(_)), "{sent}");
        assert!(matches!(sender.drain(), Err(TopologyError::Panicked(_))));
    }
}
