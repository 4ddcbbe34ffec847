//! The Inventory job: confirm each order once, dead-letter everything else.
//!
//! - [`events`]: the contracts (`OrderReceived`, `OrderConfirmed`).
//! - [`received`]: decoding the input (a typed fast path, JSON objects otherwise).
//! - [`validate`]: the validity rules.
//! - [`dead_letter`]: the `OrderProcessingFailed` envelope.
//! - [`topology`]: the wiring.
//! - [`samples`]: a handful of orders showing every outcome.

pub mod dead_letter;
pub mod events;
pub mod received;
pub mod samples;
pub mod topology;
pub mod validate;

pub use topology::{
    inventory_topology, inventory_topology_with, InventoryTopics, DEDUP_STORE,
    DEFAULT_DEDUP_RETENTION,
};
