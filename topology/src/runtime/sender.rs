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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::kafka::producer::{self, WeirProducer, KIND_DEAD_LETTER, KIND_OUTPUT};
use crate::record::OutputRecord;
use crate::runtime::commit::Provenance;
use crate::TopologyError;

/// Batches queued before the stream thread waits (back-pressure).
const QUEUED_BATCHES: usize = 8;

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

fn gone() -> TopologyError {
    TopologyError::Commit("the output sender thread is gone".into())
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
                for mut r in records {
                    if refused.is_some() || generation.load(Ordering::Relaxed) != g {
                        break;
                    }
                    provenance.stamp(&mut r.headers);
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
        }
    }
}
