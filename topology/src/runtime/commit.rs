//! The commit protocol, in one place.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use weir_state::{ChangelogSink, StateError, StoreTransaction};

use crate::builder::SourceOffsetOf;
use crate::kafka::producer::{self, WeirProducer, KIND_CHANGELOG};
use crate::record::Headers;
use crate::runtime::context::StreamContext;
use crate::runtime::sender::{CommitReply, FrozenLog, OutputSender, TxnOffsets};
use crate::runtime::task::Task;
use crate::{metrics, Guarantee, TopologyError};

/// Header carrying the input offset that caused a changelog write.
pub(crate) const HEADER_SOURCE_OFFSET: &str = "weir.source.offset";
/// Header naming the process run that produced a record.
pub(crate) const HEADER_RUN: &str = "weir.run";
/// Header carrying the commit (under exactly-once: transaction) sequence
/// number of the run that produced a record. With `weir.run` it lets a
/// checker tell the records of a killed run's unfinished transaction.
pub(crate) const HEADER_TXN: &str = "weir.txn";

/// Which run and which commit interval a record belongs to, and which of
/// Weir's headers produced records carry (see [`Provenance::headers`]).
#[derive(Debug, Clone)]
pub(crate) struct Provenance {
    pub run: String,
    pub seq: u64,
    run_bytes: Vec<u8>,
    seq_bytes: Vec<u8>,
    /// Every produced record carries `weir.run` and `weir.txn`
    /// ([`crate::ProvenanceHeaders`]).
    stamp: bool,
    /// Changelog records tell their source offset (`weir.source.offset`,
    /// unless the value tells it): exactly-once restore reads it;
    /// at-least-once restore applies every record and never does.
    pub source_offsets: bool,
}

impl Provenance {
    /// `stamp`: whether records carry `weir.run`/`weir.txn`;
    /// `source_offsets`: whether changelog records carry `weir.source.offset`.
    pub fn new(run: String, stamp: bool, source_offsets: bool) -> Self {
        Self {
            run_bytes: run.clone().into_bytes(),
            run,
            seq: 0,
            seq_bytes: b"0".to_vec(),
            stamp,
            source_offsets,
        }
    }

    /// Moves to the next commit interval.
    pub fn advance(&mut self) {
        self.seq += 1;
        self.seq_bytes = self.seq.to_string().into_bytes();
    }

    /// The headers Weir adds to a record: `weir.source.offset` (a changelog
    /// record's `source`, when changelog records carry it: see
    /// `source_offsets`), then `weir.run`
    /// and `weir.txn` when records are stamped. Use the first `n` entries.
    ///
    /// Why not always all of them: they are ~30 bytes on every output and
    /// ~55 on every changelog record (whose key and value are ~45), which
    /// every broker stores and every restore reads; and a broker that keeps
    /// headers apart from records pays per header. On nisshi (a row per
    /// header) at-least-once went from 6.0–6.5k to 12.8–14.1k records/s
    /// without them, exactly-once from 6.1–6.3k to 10.3k.
    pub fn headers<'a>(
        &'a self,
        source: Option<&'a [u8]>,
    ) -> ([(&'static str, &'a [u8]); 3], usize) {
        let mut out: [(&'static str, &[u8]); 3] = [("", &[]); 3];
        let mut n = 0;
        if let Some(s) = source.filter(|_| self.source_offsets) {
            out[n] = (HEADER_SOURCE_OFFSET, s);
            n += 1;
        }
        if self.stamp {
            out[n] = (HEADER_RUN, &self.run_bytes);
            out[n + 1] = (HEADER_TXN, &self.seq_bytes);
            n += 2;
        }
        (out, n)
    }
}

/// Whether a changelog record carries `weir.source.offset`: where records
/// tell their source offset at all (exactly-once), unless its value tells
/// the same offset through `read` (restore reads it there). Checked per
/// record: a tombstone, or a value of another shape written to the same
/// store, still gets the header.
fn source_header_needed(
    source_offsets: bool,
    value: Option<&[u8]>,
    source_offset: i64,
    read: Option<SourceOffsetOf>,
) -> bool {
    source_offsets
        && value
            .zip(read)
            .is_none_or(|(v, read)| read(v) != Some(source_offset))
}

struct KafkaChangelog<'a> {
    producer: &'a WeirProducer,
    topic: &'a str,
    partition: i32,
    provenance: &'a Provenance,
    /// How the store's values tell their write's source offset, if they do.
    value_source_offset: Option<SourceOffsetOf>,
    /// The producer's own error, kept whole: a refused send is a Kafka
    /// problem (retry, or a new producer), not a broken store.
    failure: Option<TopologyError>,
}

impl ChangelogSink for KafkaChangelog<'_> {
    fn send(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        source_offset: i64,
    ) -> Result<(), StateError> {
        let mut digits = [0u8; 20];
        // Formatted only where the record will carry it.
        let source = source_header_needed(
            self.provenance.source_offsets,
            value,
            source_offset,
            self.value_source_offset,
        )
        .then(|| decimal(source_offset, &mut digits));
        let (extra, n) = self.provenance.headers(source);
        producer::send(
            self.producer,
            self.topic,
            Some(self.partition),
            Some(key),
            value,
            &Headers::new(),
            &extra[..n],
            None,
            KIND_CHANGELOG,
        )
        .map_err(|e| {
            let message = e.to_string();
            self.failure = Some(e);
            StateError::Changelog {
                store: self.topic.to_string(),
                message,
            }
        })
    }
}

/// Hands one store partition's changelog records to the producer: `log`
/// is a store transaction's (or frozen writes') `log_changes`. Under
/// exactly-once each record tells the input offset that caused it (in its
/// value, where `value_source_offset` reads it there, else a header); when
/// stamped, it carries the run's provenance.
pub(crate) fn send_changelog(
    producer: &WeirProducer,
    topic: &str,
    partition: i32,
    provenance: &Provenance,
    task: &str,
    value_source_offset: Option<SourceOffsetOf>,
    log: impl FnOnce(&mut dyn ChangelogSink) -> Result<(), StateError>,
) -> Result<(), TopologyError> {
    let mut sink = KafkaChangelog {
        producer,
        topic,
        partition,
        provenance,
        value_source_offset,
        failure: None,
    };
    log(&mut sink).map_err(|source| {
        sink.failure.take().unwrap_or(TopologyError::State {
            task: task.to_string(),
            source,
        })
    })
}

/// `n` in decimal, written into `buf` (no allocation: one per changelog record).
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{n}").expect("an i64 has at most 20 characters");
    let len = cursor.position() as usize;
    &buf[..len]
}

/// Step 5 of a commit ([`finish`]): every store transaction's frozen
/// writes written to its store with its changelog end offset, on two
/// threads. Store partitions are separate RocksDB instances that share no
/// lock, and the writes (~0.3 µs an entry, ~150 ms for a 1 s at-least-once
/// interval on the embedded broker) stop the stream thread.
fn apply_state(
    tasks: &mut BTreeMap<i32, Task>,
    producer: &WeirProducer,
) -> Result<(), TopologyError> {
    let mut writes = Vec::new();
    for task in tasks.values_mut() {
        let partition = task.partition;
        let id = task.core.id.as_str();
        for (name, tx) in task.core.stores.iter_mut() {
            if !tx.has_frozen() {
                continue;
            }
            let end = task
                .changelogs
                .get(name)
                .and_then(|topic| producer.context().changelog_end(topic, partition));
            writes.push((tx, end, id));
        }
    }
    let apply = |writes: &mut [(&mut StoreTransaction, Option<i64>, &str)]| {
        writes.iter_mut().try_for_each(|(tx, end, task)| {
            tx.commit_frozen(*end)
                .map_err(|source| TopologyError::State {
                    task: task.to_string(),
                    source,
                })
        })
    };
    if writes.len() < 2 {
        return apply(&mut writes);
    }
    let half = writes.len() / 2;
    let (mine, theirs) = writes.split_at_mut(half);
    // Taken by whichever thread writes it: the second thread, or this one
    // if no thread could be started.
    let theirs = std::sync::Mutex::new(Some(theirs));
    let take = || theirs.lock().ok().and_then(|mut t| t.take());
    std::thread::scope(|s| {
        let other = std::thread::Builder::new()
            .name("weir-commit-write".into())
            .spawn_scoped(s, || take().map_or(Ok(()), apply));
        let here = apply(mine);
        let there = match other {
            Ok(other) => other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => take().map_or(Ok(()), apply),
        };
        here.and(there)
    })
}

pub(crate) fn kafka(op: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> TopologyError + '_ {
    move |source| TopologyError::Kafka {
        op: op.to_string(),
        source,
    }
}

/// What a commit works with, besides the tasks.
#[derive(Clone, Copy)]
pub(crate) struct CommitScope<'a> {
    pub producer: &'a WeirProducer,
    pub sender: &'a OutputSender,
    pub consumer: &'a BaseConsumer<StreamContext>,
    pub source_topic: &'a str,
    pub guarantee: Guarantee,
    pub provenance: &'a Provenance,
    pub timeout: Duration,
}

/// What [`commit`] did.
pub(crate) enum Outcome {
    /// Nothing happened since the last commit.
    Idle,
    /// Steps 1–3 run on the output sender thread; call [`finish`] with
    /// this once its answer came (or to wait for it).
    Pending(InFlight),
}

/// A commit whose outputs and changelog (exactly-once: transaction) the
/// output sender is completing while the stream thread goes on processing.
pub(crate) struct InFlight {
    /// The input offsets to commit, per partition.
    offsets: Vec<(i32, i64)>,
    reply: CommitReply,
    started: Instant,
}

/// Commits every task: makes outputs and state durable, then moves the
/// group's offsets. A crash at any step loses nothing.
///
/// Both guarantees are pipelined: the stream thread hands steps 1–3 to the
/// output sender thread and processes the next interval meanwhile; its
/// writes go to a new overlay, over the frozen one. The next commit, a
/// revocation or a stop first waits for [`finish`], so one commit at most
/// is in flight.
///
/// **At-least-once**
/// 0. *Freeze* each store transaction's writes ([`StoreTransaction::freeze`])
///    and note each task's next input offset.
/// 1. *Outputs.* Sink and dead-letter records were handed to the output
///    sender as they were processed (no per-record wait). On the sender
///    thread, behind all of them: report the first one the producer
///    refused, then flush: all are delivered, or the commit stops here.
/// 2. *Changelog.* The sender sends one record per key frozen in 0 to the
///    store's changelog partition (same number as the input partition),
///    tagged with the input offset that caused it. This comes *after* step
///    1's flush so the changelog never claims a key whose output was not
///    delivered — otherwise a restore could mark an order "seen" whose
///    confirmation was lost.
/// 3. *Flush* again: every changelog record is delivered; the delivery
///    reports give each changelog partition's new end offset.
/// 4. ([`finish`], on the stream thread, when the sender answered) *Commit
///    input offsets* (synchronously) for tasks that made progress.
/// 5. *Apply state*: each store's frozen writes are written to RocksDB
///    together with its changelog end offset, in one atomic batch (half of
///    the store partitions on a second thread: see [`apply_state`]). No
///    changelog record of the next interval exists yet: its changelog is
///    sent by the next commit, which starts after this one finished.
///
/// Crash points: before 4, the input is reprocessed — duplicate outputs are
/// possible (the at-least-once anomaly), and a changelog written in 2–3 only
/// repeats facts whose outputs were delivered. After 4, the store lags its
/// changelog by what it had not flushed (stores keep no WAL; see
/// `weir_state::RocksDbStore`); restore replays exactly that tail from the
/// offset stored with the flushed data. A clean stop flushes: nothing is
/// replayed.
///
/// **Exactly-once** (one transaction per interval, owned by the sender
/// thread: begun by the interval's first record, or by step 2)
/// 0. *Freeze* as above; note the input offsets and the consumer's group
///    metadata.
/// 1. *Outputs* are in the open transaction: the sender handed them over,
///    in queue order, before it reaches this commit.
/// 2. *Changelog* records of the frozen writes are sent into the same
///    transaction.
/// 3. *Input offsets* are added to it (`send_offsets_to_transaction` with
///    the group metadata), and the sender *commits the transaction*:
///    outputs, changelog and offsets become visible to `read_committed`
///    readers together, or not at all. The next interval's records, queued
///    behind, begin the next transaction.
/// 4. ([`finish`]) Nothing: the offsets were committed in 3.
/// 5. *Apply state* as above. A crash before 3's commit leaves an
///    unfinished transaction that the broker aborts (at once when the
///    restarted instance's `init_transactions` fences it); the store never
///    saw its writes, so restore replays only committed changelog records,
///    from the offset of the store's last flush.
///
/// On error the caller aborts (the commit in flight, the open transaction —
/// on the sender thread, after the records queued behind the failed commit
/// were dropped — and the store overlays) and rewinds the input to the last
/// committed offsets.
pub(crate) fn commit(
    tasks: &mut BTreeMap<i32, Task>,
    scope: &CommitScope<'_>,
    txn_open: &mut bool,
) -> Result<Outcome, TopologyError> {
    let CommitScope {
        producer: _,
        sender,
        consumer,
        source_topic,
        guarantee,
        provenance,
        timeout,
    } = *scope;
    let started = Instant::now();
    let mut offsets = Vec::new();
    for task in tasks.values() {
        if let Some(next) = task.next_offset.filter(|n| Some(*n) != task.committed) {
            offsets.push((task.partition, next));
        }
    }
    let pending = tasks
        .values()
        .any(|t| t.core.stores.values().any(|s| s.pending_len() > 0));
    if offsets.is_empty() && !pending && !*txn_open {
        return Ok(Outcome::Idle); // nothing happened since the last commit
    }
    // 0. Freeze. 1–3 on the sender thread.
    let mut logs = Vec::new();
    for task in tasks.values_mut() {
        for (store, tx) in task.core.stores.iter_mut() {
            let (Some(writes), Some(topic)) = (tx.freeze(), task.changelogs.get(store)) else {
                continue; // nothing written, or an unlogged store
            };
            logs.push(FrozenLog {
                task: task.core.id.clone(),
                topic: topic.clone(),
                partition: task.partition,
                writes,
                value_source_offset: task.value_source_offsets.get(store).copied(),
            });
        }
    }
    let txn = match guarantee {
        Guarantee::AtLeastOnce => None,
        Guarantee::ExactlyOnce => Some(TxnOffsets {
            offsets: offset_list(source_topic, &offsets)?,
            group: consumer.group_metadata().ok_or_else(|| {
                TopologyError::Commit("the consumer has no group metadata".into())
            })?,
        }),
    };
    let reply = sender.commit(logs, txn, provenance, timeout)?;
    // The sender commits or (on failure, told by the stream thread) aborts
    // the interval's transaction; the next records begin the next one.
    *txn_open = false;
    Ok(Outcome::Pending(InFlight {
        offsets,
        reply,
        started,
    }))
}

/// Steps 4 and 5 of a [`commit`], once the output sender delivered the
/// interval's outputs and changelog (exactly-once: committed its
/// transaction): waits for its answer
/// when `wait`, else returns `Ok(Some(in_flight))` while there is none yet.
pub(crate) fn finish(
    in_flight: InFlight,
    tasks: &mut BTreeMap<i32, Task>,
    scope: &CommitScope<'_>,
    wait: bool,
) -> Result<Option<InFlight>, TopologyError> {
    use std::sync::mpsc::TryRecvError;
    let answer = if wait {
        in_flight.reply.recv().map_err(|_| gone())
    } else {
        match in_flight.reply.try_recv() {
            Ok(answer) => Ok(answer),
            Err(TryRecvError::Empty) => return Ok(Some(in_flight)),
            Err(TryRecvError::Disconnected) => Err(gone()),
        }
    };
    answer??;
    // 4. Commit input offsets (exactly-once: they were in the transaction).
    if scope.guarantee == Guarantee::AtLeastOnce && !in_flight.offsets.is_empty() {
        let tpl = offset_list(scope.source_topic, &in_flight.offsets)?;
        scope
            .consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(kafka("commit offsets"))?;
    }
    // 5. State, with the changelog offset it reached.
    apply_state(tasks, scope.producer)?;
    for (p, next) in &in_flight.offsets {
        if let Some(task) = tasks.get_mut(p) {
            task.committed = Some(*next);
        }
    }
    count_commit(in_flight.started);
    Ok(None)
}

/// The output sender thread ended (it panicked): no answer will come.
fn gone() -> TopologyError {
    TopologyError::Panicked("its output sender thread stopped during a commit".into())
}

fn offset_list(topic: &str, offsets: &[(i32, i64)]) -> Result<TopicPartitionList, TopologyError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (p, next) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
            .map_err(kafka("build commit list"))?;
    }
    Ok(tpl)
}

fn count_commit(started: Instant) {
    ::metrics::counter!(metrics::COMMITS).increment(1);
    ::metrics::histogram!(metrics::COMMIT_LATENCY).record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Provenance, source: Option<&[u8]>) -> Vec<String> {
        let (h, n) = p.headers(source);
        h[..n]
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect()
    }

    #[test]
    fn records_carry_the_headers_their_guarantee_needs() {
        // Exactly-once, stamped: the changelog's source offset and the stamps.
        let mut eos = Provenance::new("r1".into(), true, true);
        eos.advance();
        assert_eq!(
            names(&eos, Some(b"42")),
            ["weir.source.offset=42", "weir.run=r1", "weir.txn=1"]
        );
        assert_eq!(names(&eos, None), ["weir.run=r1", "weir.txn=1"]);
        // At-least-once, by default: nothing.
        let alo = Provenance::new("r1".into(), false, false);
        assert!(names(&alo, Some(b"42")).is_empty());
        assert!(names(&alo, None).is_empty());
        // Exactly-once, by default: what restore reads.
        let bare = Provenance::new("r1".into(), false, true);
        assert_eq!(names(&bare, Some(b"7")), ["weir.source.offset=7"]);
    }

    #[test]
    fn the_source_offset_header_is_left_out_only_where_the_value_tells_the_same_offset() {
        // A store whose values are the offset, as text.
        let read: SourceOffsetOf = |v| std::str::from_utf8(v).ok()?.parse().ok();
        let needed = |eos, value: Option<&[u8]>, read| source_header_needed(eos, value, 7, read);
        assert!(!needed(true, Some(b"7"), Some(read)), "the value tells it");
        assert!(
            needed(true, Some(b"8"), Some(read)),
            "the value tells another"
        );
        assert!(
            needed(true, Some(b"x"), Some(read)),
            "a value of another shape"
        );
        assert!(needed(true, None, Some(read)), "a tombstone has no value");
        assert!(
            needed(true, Some(b"7"), None),
            "a store whose values do not tell"
        );
        assert!(
            !needed(false, Some(b"8"), Some(read)),
            "at-least-once: never"
        );
        assert!(!needed(false, None, None), "at-least-once: never");
    }
}
