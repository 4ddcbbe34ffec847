//! The stream thread: one consumer-group member, its tasks, one loop.
//!
//! Each turn: poll a batch (rebalances happen inside poll), process it,
//! hand its outputs to the output sender thread (which feeds the producer),
//! finish a commit the sender completed, restore a slice, commit when the
//! interval is due or the input ran dry, refresh gauges.
//! Nothing in the loop waits per record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::kafka::client::{config, Client};
use crate::runtime::context::StreamContext;
use crate::runtime::manager::TaskManager;
use crate::{metrics, TopologyError};

/// How long one restore slice may take before the loop polls input again.
const RESTORE_SLICE: Duration = Duration::from_millis(50);
/// Longest wait for the source topic's metadata before subscribing.
const METADATA_HEAD_START: Duration = Duration::from_secs(2);

pub(crate) fn run(
    manager: TaskManager,
    instance: &str,
    shutdown: &AtomicBool,
) -> Result<(), TopologyError> {
    let cfg = manager.cfg.clone();
    let source = manager.source_topic().to_string();
    let ctx = StreamContext {
        manager: Arc::new(Mutex::new(manager)),
    };
    let consumer: BaseConsumer<StreamContext> = config(&cfg, Client::Consumer, instance)
        .create_with_context(ctx)
        .map_err(|source| TopologyError::Kafka {
            op: "create consumer".into(),
            source,
        })?;
    // Metadata first, so the group join does not wait for it: the threads
    // of one instance then join within the broker's initial rebalance
    // delay instead of one of them arriving after the first generation
    // formed (a rebalance at start and the first interval redone). Only a
    // head start: a broker that does not answer soon must not hold the
    // thread (and a stop) for the whole request timeout.
    let head_start = cfg.request_timeout.min(METADATA_HEAD_START);
    if let Err(e) = consumer.fetch_metadata(Some(&source), head_start) {
        tracing::debug!(error = %e, "metadata before subscribing failed; subscribing anyway");
    }
    consumer
        .subscribe(&[&source])
        .map_err(|source| TopologyError::Kafka {
            op: "subscribe".into(),
            source,
        })?;
    tracing::info!(topic = %source, group = %cfg.application_id, "subscribed");

    let result =
        run_loop(&consumer, &cfg, shutdown).map_err(|e| consumer.context().lock().fenced_or(e));
    // A clean stop commits; after an error nothing more is committed (the
    // failed record's partial outputs must not ride on a commit), and the
    // next run reprocesses from the last committed offsets.
    let closing = consumer
        .context()
        .lock()
        .shutdown(&consumer, result.is_ok());
    if shutdown.load(Ordering::SeqCst) {
        // A stop: leave together with this instance's other threads, once
        // every one has committed (see `wait_for_siblings`).
        let status = consumer.context().lock().thread_status();
        status.finished_work();
        if !status.wait_for_siblings(cfg.request_timeout) {
            tracing::warn!(
                "other stream threads did not finish their final commits in time; leaving the group anyway"
            );
        }
    }
    // Leave the group now rather than after the session timeout; the revoke
    // callback finds no tasks left.
    consumer.unsubscribe();
    drop(consumer);
    result.and(closing)
}

fn run_loop(
    consumer: &BaseConsumer<StreamContext>,
    cfg: &crate::StreamsConfig,
    shutdown: &AtomicBool,
) -> Result<(), TopologyError> {
    let mut batch = Vec::with_capacity(cfg.max_batch);
    let mut last_commit = Instant::now();
    let mut last_gauges = Instant::now();
    let mut errors = ErrorLog::default();
    let source = consumer.context().lock().source_topic().to_string();
    let consumed = ::metrics::counter!(metrics::RECORDS_CONSUMED, metrics::LABEL_TOPIC => source);
    let process_latency = ::metrics::histogram!(metrics::PROCESS_LATENCY);
    while !shutdown.load(Ordering::SeqCst) {
        let (epoch, restoring) = consumer.context().lock().poll_state();
        // While restoring, poll briefly so restore slices keep coming.
        let wait = if restoring {
            Duration::ZERO
        } else {
            cfg.poll_timeout
        };
        let mut next = consumer.poll(wait);
        // A poll that waited its whole timeout for nothing: the input ran
        // dry (or its fetches are slow), so what was processed is all there
        // is to commit for now.
        let dry = next.is_none() && !wait.is_zero();
        while let Some(item) = next {
            match item {
                Ok(m) => batch.push(m),
                Err(e) => {
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                        return Err(TopologyError::Kafka {
                            op: "consume".into(),
                            source: e,
                        });
                    }
                    errors.warn(&e);
                }
            }
            if batch.len() >= cfg.max_batch {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        let mut m = consumer.context().lock();
        if let Some(e) = m.fatal.take() {
            return Err(e);
        }
        if m.epoch != epoch {
            // A rebalance happened while polling: positions were reset to
            // the committed offsets, so these records will come again.
            batch.clear();
        }
        if !batch.is_empty() {
            let n = batch.len();
            let started = Instant::now();
            for msg in batch.drain(..) {
                m.process(&msg)?;
            }
            consumed.increment(n as u64);
            m.add_processed(n as u64);
            process_latency.record(started.elapsed().as_secs_f64() / n as f64);
        }
        m.send_outputs_or_recover(consumer)?;
        m.poll_commit(consumer)?;
        m.start_new_tasks(consumer)?;
        m.restore_step(consumer, RESTORE_SLICE)?;
        // Caught up (`commit_when_caught_up`): commit now rather than at
        // the interval, so the committed lag reaches 0 once the input is
        // processed.
        let caught_up = dry && cfg.commit_when_caught_up && m.caught_up_commit_due();
        if caught_up || last_commit.elapsed() >= cfg.commit_interval {
            m.commit(consumer)?;
            last_commit = Instant::now();
        }
        if last_gauges.elapsed() >= cfg.metrics_interval {
            m.update_gauges(consumer);
            last_gauges = Instant::now();
        }
    }
    Ok(())
}

/// Logs consumer errors at most every few seconds: a broker outage makes
/// librdkafka report the same transport error many times a second.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn warn(&mut self, e: &rdkafka::error::KafkaError) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %e, repeated = self.suppressed, "consumer error (librdkafka retries)");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}
