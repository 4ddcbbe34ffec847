//! What the outside world can see of a running topology: its state, for
//! readiness probes and tests.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

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

#[derive(Default)]
pub(crate) struct Status {
    state: AtomicU8,
    assigned: AtomicUsize,
    restoring: AtomicUsize,
    processed: AtomicU64,
    failed_commits: AtomicU64,
    error: Mutex<Option<String>>,
}

const STARTING: u8 = 0;
const ACTIVE: u8 = 1;
const STOPPED: u8 = 2;
const FAILED: u8 = 3;

impl Status {
    pub fn set_tasks(&self, assigned: usize, restoring: usize) {
        self.assigned.store(assigned, Ordering::SeqCst);
        self.restoring.store(restoring, Ordering::SeqCst);
        let _ = self
            .state
            .compare_exchange(STARTING, ACTIVE, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn stopped(&self, error: Option<String>) {
        let failed = error.is_some();
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        self.state
            .store(if failed { FAILED } else { STOPPED }, Ordering::SeqCst);
    }

    pub fn state(&self) -> AppState {
        match self.state.load(Ordering::SeqCst) {
            STARTING => AppState::Starting,
            STOPPED => AppState::Stopped,
            FAILED => AppState::Failed,
            _ if self.restoring.load(Ordering::SeqCst) > 0 => AppState::Restoring,
            _ => AppState::Running,
        }
    }

    pub fn add_processed(&self, n: u64) {
        self.processed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn set_failed_commits(&self, n: u64) {
        self.failed_commits.store(n, Ordering::SeqCst);
    }

    pub fn failed_commits(&self) -> u64 {
        self.failed_commits.load(Ordering::SeqCst)
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::SeqCst)
    }

    pub fn restoring(&self) -> usize {
        self.restoring.load(Ordering::SeqCst)
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
