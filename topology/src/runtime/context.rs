//! The consumer context: where rebalances reach the task manager.
//!
//! librdkafka calls these from inside `poll`, on the stream thread, while
//! the loop does not hold the manager's lock; revocation must finish (commit
//! and close) before the callback returns, because afterwards the
//! partitions belong to someone else.

use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use crate::runtime::manager::TaskManager;

pub(crate) struct StreamContext {
    pub manager: Arc<Mutex<TaskManager>>,
}

impl StreamContext {
    pub fn lock(&self) -> MutexGuard<'_, TaskManager> {
        self.manager.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for StreamContext {}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(_) => self.lock().on_revoke(consumer),
            // Stores open before librdkafka starts fetching (see `on_assign`).
            Rebalance::Assign(tpl) => self.lock().on_assign(tpl),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.lock().pause_assigned(consumer, tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance failed"),
        }
    }
}
