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
//! Under at-least-once it also runs the middle of each commit
//! ([`OutputSender::commit`]): flush, the changelog records of the
//! interval's frozen store writes, flush again — in queue order, so after
//! every output of the interval, while the stream thread processes the next
//! one (handing ~230,000 changelog records to librdkafka stopped the stream
//! thread ~0.19 s of every 1 s interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use weir_state::FrozenWrites;

use crate::kafka::producer::{self, WeirProducer, KIND_DEAD_LETTER, KIND_OUTPUT};
use crate::record::OutputRecord;
use crate::runtime::commit::{send_changelog, Provenance};
use crate::TopologyError;

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
}

/// The answer to [`OutputSender::commit`]: `Ok` once the interval's
/// outputs and changelog records are delivered.
pub(crate) type CommitReply = Receiver<Result<(), TopologyError>>;

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
    /// Deliver everything before this, then these changelog records; reply.
    Commit {
        generation: u64,
        provenance: Provenance,
        logs: Vec<FrozenLog>,
        timeout: Duration,
        reply: SyncSender<Result<(), TopologyError>>,
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
    /// (its records are counted apart in the delivery reports).
    pub fn start(
        producer: Arc<WeirProducer>,
        dead_letters: Option<String>,
        name: String,
    ) -> Result<Self, TopologyError> {
        let (queue, work) = sync_channel(QUEUED_BATCHES);
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&producer, dead_letters.as_deref(), &current, work))
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

    /// Steps 1–3 of an at-least-once commit (see `commit::commit`), on the
    /// sender thread once every record handed over before is in the
    /// producer: report a record the producer refused, flush (the outputs
    /// are delivered), send `logs`' changelog records stamped with
    /// `provenance`, flush again. The answer comes on the returned channel;
    /// after [`Self::discard`] it is an "aborted" error and nothing is sent.
    pub fn commit(
        &self,
        logs: Vec<FrozenLog>,
        provenance: &Provenance,
        timeout: Duration,
    ) -> Result<CommitReply, TopologyError> {
        let (reply, answer) = sync_channel(1);
        let work = Work::Commit {
            generation: self.generation.load(Ordering::SeqCst),
            provenance: provenance.clone(),
            logs,
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

fn run(
    producer: &WeirProducer,
    dead_letters: Option<&str>,
    generation: &AtomicU64,
    work: Receiver<Work>,
) {
    let mut refused: Option<TopologyError> = None;
    for w in work {
        match w {
            Work::Records {
                generation: g,
                provenance,
                records,
            } => {
                for r in records {
                    if refused.is_some() || generation.load(Ordering::Relaxed) != g {
                        break;
                    }
                    let kind = if Some(&*r.topic) == dead_letters {
                        KIND_DEAD_LETTER
                    } else {
                        KIND_OUTPUT
                    };
                    if let Err(e) = producer::send(
                        producer,
                        &r.topic,
                        None,
                        r.key.as_deref(),
                        r.value.as_deref(),
                        &r.headers,
                        &provenance.headers(),
                        Some(r.timestamp),
                        kind,
                    ) {
                        refused = Some(e);
                    }
                }
            }
            Work::Drain(reply) => {
                let _ = reply.send(refused.take().map_or(Ok(()), Err));
            }
            Work::Commit {
                generation: g,
                provenance,
                logs,
                timeout,
                reply,
            } => {
                if generation.load(Ordering::Relaxed) != g {
                    // Aborted: nothing more of the interval is sent.
                    let aborted = TopologyError::Commit("the interval was aborted".into());
                    let _ = reply.send(Err(aborted));
                    continue;
                }
                let result = match refused.take() {
                    Some(e) => Err(e),
                    None => log_frozen(producer, &provenance, &logs, timeout),
                };
                // Released before the answer: the stream thread then holds
                // the only reference to the writes it applies.
                drop(logs);
                let _ = reply.send(result);
            }
        }
    }
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
    for log in logs {
        send_changelog(
            producer,
            &log.topic,
            log.partition,
            provenance,
            &log.task,
            |sink| log.writes.log_changes(sink),
        )?;
    }
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
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "reader")
            .create()
            .unwrap();
        let (_, high) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut keys = Vec::new();
        while (keys.len() as i64) < high {
            if let Some(m) = c.poll(Duration::from_secs(10)) {
                let m = m.unwrap();
                keys.push(String::from_utf8_lossy(m.key().unwrap()).into_owned());
            }
        }
        keys
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
        let sender = OutputSender::start(producer.clone(), None, "test-send".into()).unwrap();
        let run = Provenance::new("run".into());

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
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, 1, 1).unwrap();
        cluster.create_topic("log", 1, 1).unwrap();
        let producer: WeirProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.max.bytes", "2000")
            .create_with_context(DeliveryTracker::default())
            .unwrap();
        let producer = Arc::new(producer);
        let sender = OutputSender::start(producer.clone(), None, "test-send".into()).unwrap();
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
        }]
    }

    #[test]
    fn a_commit_delivers_the_outputs_then_the_frozen_changelog_and_answers() {
        let (cluster, producer, sender) = sender_on_cluster();
        let run = Provenance::new("run".into());
        sender.send(vec![record("a", 10)], &run).unwrap();
        let reply = sender
            .commit(frozen_log(&["k"]), &run, Duration::from_secs(10))
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
        let run = Provenance::new("run".into());
        sender.send(vec![record("too-big", 5000)], &run).unwrap();
        let reply = sender
            .commit(frozen_log(&["k"]), &run, Duration::from_secs(10))
            .unwrap();
        let err = reply.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("produce to out"), "{err}");
        assert!(keys_of(&cluster.bootstrap_servers(), "log").is_empty());
    }

    #[test]
    fn a_discarded_commit_answers_aborted_and_logs_nothing() {
        let (cluster, producer, _) = sender_on_cluster();
        let run_id = Provenance::new("run".into());
        // A sender whose thread runs here, once the commit is queued and
        // discarded (as `discard` does: a new generation).
        let (queue, work) = sync_channel(4);
        let sender = OutputSender {
            queue: Some(queue),
            thread: None,
            generation: Arc::new(AtomicU64::new(0)),
        };
        let reply = sender
            .commit(frozen_log(&["k"]), &run_id, Duration::from_secs(10))
            .unwrap();
        sender.generation.fetch_add(1, Ordering::SeqCst);
        let generation = sender.generation.clone();
        drop(sender); // closes the queue: `run` returns when it is empty
        run(&producer, None, &generation, work);
        let err = reply.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("aborted"), "{err}");
        producer::flush(&producer, Duration::from_secs(10)).unwrap();
        assert!(keys_of(&cluster.bootstrap_servers(), "log").is_empty());
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
        let run = Provenance::new("run".into());
        let sent = sender.send(vec![record("a", 1)], &run).unwrap_err();
        assert!(matches!(sent, TopologyError::Panicked(_)), "{sent}");
        assert!(matches!(sender.drain(), Err(TopologyError::Panicked(_))));
    }
}
