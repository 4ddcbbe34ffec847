//! What the outside world can see of a running topology: its state, for
//! readiness probes and tests.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lifecycle of a running topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Connected, waiting for the first assignment.
    Starting,
    /// At least one assigned task is restoring its stores.
    Restoring,
    /// Every assigned task is processing.
    Running,
    /// Shut down cleanly.
    Stopped,
    /// Stopped on an error (see `StreamsHandle::error`).
    Failed,
}

/// The state of every stream thread of one topology, read as one.
pub(crate) struct Status {
    state: AtomicU8,
    /// Stream threads that have not stopped yet.
    live: AtomicUsize,
    threads: Vec<ThreadSlot>,
    processed: AtomicU64,
    /// Input records whose interval committed (offsets, outputs, state).
    committed: AtomicU64,
    /// Partition assignments received, by any thread.
    assignments: AtomicU64,
    error: Mutex<Option<String>>,
}

/// What one stream thread reports.
#[derive(Default)]
struct ThreadSlot {
    assigned: AtomicUsize,
    restoring: AtomicUsize,
    failed_commits: AtomicU64,
    /// Its final commit is done (or it has stopped): it may leave the group.
    done: AtomicBool,
}

/// One stream thread's handle on the shared [`Status`].
#[derive(Clone)]
pub(crate) struct ThreadStatus {
    shared: Arc<Status>,
    index: usize,
}

const STARTING: u8 = 0;
const ACTIVE: u8 = 1;
const STOPPED: u8 = 2;
const FAILED: u8 = 3;

impl Status {
    /// The status of `threads` stream threads, all starting.
    pub fn new(threads: usize) -> Arc<Self> {
        Arc::new(Self {
            state: AtomicU8::new(STARTING),
            live: AtomicUsize::new(threads),
            threads: (0..threads).map(|_| ThreadSlot::default()).collect(),
            processed: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
            error: Mutex::new(None),
        })
    }

    /// Thread `index`'s handle.
    pub fn thread(self: &Arc<Self>, index: usize) -> ThreadStatus {
        assert!(
            index < self.threads.len(),
            "stream thread {index} has a slot"
        );
        ThreadStatus {
            shared: self.clone(),
            index,
        }
    }

    pub fn state(&self) -> AppState {
        match self.state.load(Ordering::SeqCst) {
            STARTING => AppState::Starting,
            STOPPED => AppState::Stopped,
            FAILED => AppState::Failed,
            _ if self.restoring() > 0 => AppState::Restoring,
            _ => AppState::Running,
        }
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Relaxed)
    }

    /// The most commits any thread has failed in a row.
    pub fn failed_commits(&self) -> u64 {
        self.threads
            .iter()
            .map(|t| t.failed_commits.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0)
    }

    pub fn assigned(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.assigned.load(Ordering::SeqCst))
            .sum()
    }

    pub fn restoring(&self) -> usize {
        self.threads
            .iter()
            .map(|t| t.restoring.load(Ordering::SeqCst))
            .sum()
    }

    /// The first error a thread stopped on.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ThreadStatus {
    pub fn set_tasks(&self, assigned: usize, restoring: usize) {
        let slot = &self.shared.threads[self.index];
        slot.assigned.store(assigned, Ordering::SeqCst);
        slot.restoring.store(restoring, Ordering::SeqCst);
        let _ = self.shared.state.compare_exchange(
            STARTING,
            ACTIVE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// This thread has made its final commit.
    pub fn finished_work(&self) {
        self.shared.threads[self.index]
            .done
            .store(true, Ordering::SeqCst);
    }

    /// Waits (at most `timeout`) until every thread has made its final
    /// commit or stopped. Threads leave the group together: one leaving
    /// first starts a rebalance, and its siblings' final commits would fail
    /// with RebalanceInProgress (seen with two threads: the last interval
    /// was not committed and would have been processed again).
    pub fn wait_for_siblings(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .shared
                .threads
                .iter()
                .all(|t| t.done.load(Ordering::SeqCst))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// This thread stopped; the topology has stopped when the last one has
    /// (failed if any thread failed).
    pub fn stopped(&self, error: Option<String>) {
        let slot = &self.shared.threads[self.index];
        slot.done.store(true, Ordering::SeqCst);
        slot.assigned.store(0, Ordering::SeqCst);
        slot.restoring.store(0, Ordering::SeqCst);
        if let Some(e) = error {
            self.shared
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        }
        if self.shared.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            let failed = self.shared.error().is_some();
            self.shared
                .state
                .store(if failed { FAILED } else { STOPPED }, Ordering::SeqCst);
        }
    }

    /// Input partitions assigned to all threads of the topology.
    pub fn topology_assigned(&self) -> usize {
        self.shared.assigned()
    }

    pub fn add_processed(&self, n: u64) {
        self.shared.processed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_assignment(&self) {
        self.shared.assignments.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_committed(&self, n: u64) {
        self.shared.committed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_failed_commits(&self, n: u64) {
        self.shared.threads[self.index]
            .failed_commits
            .store(n, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_add_up_and_the_topology_stops_with_its_last_thread() {
        let status = Status::new(2);
        let (a, b) = (status.thread(0), status.thread(1));
        assert_eq!(status.state(), AppState::Starting);
        a.set_tasks(3, 1);
        b.set_tasks(2, 0);
        assert_eq!((status.assigned(), status.restoring()), (5, 1));
        assert_eq!(status.state(), AppState::Restoring);
        a.set_tasks(3, 0);
        assert_eq!(status.state(), AppState::Running);
        a.add_processed(4);
        b.add_processed(6);
        assert_eq!(status.processed(), 10);
        a.add_committed(4);
        assert_eq!(status.committed(), 4);
        b.set_failed_commits(2);
        assert_eq!(status.failed_commits(), 2);
        a.stopped(Some("broker gone".into()));
        assert_eq!(status.state(), AppState::Running, "thread b still runs");
        assert_eq!(status.assigned(), 2);
        assert!(
            !b.wait_for_siblings(Duration::from_millis(20)),
            "b has not made its final commit"
        );
        b.finished_work();
        assert!(b.wait_for_siblings(Duration::ZERO), "a stopped, b done");
        b.stopped(None);
        assert_eq!(status.state(), AppState::Failed);
        assert_eq!(status.error().as_deref(), Some("broker gone"));
    }
}
