//! The inventory topology:
//!
//! ```text
//! OrderReceived → validate → dedup (store: dedup) → confirm → OrderConfirmed
//!                  any failure (bytes, rules, processing) → DeadLetterQueue
//! ```

use std::time::Duration;

use weir_topology::record::Record;
use weir_topology::{
    JsonSerde, ProcessError, StoreSpec, StringSerde, Topology, TopologyBuilder, TopologyError,
};

use super::dead_letter::InventoryDeadLetters;
use super::events::{derived_event_id, now_rfc3339, OrderConfirmed, ORDER_CONFIRMED};
use super::received::{ReceivedEvent, ReceivedSerde};
use super::validate::{validate_received, ValidOrder};

/// The dedup store's name; its changelog is `<application-id>-dedup-changelog`.
pub const DEDUP_STORE: &str = "dedup";

/// Topic names of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryTopics {
    /// Input: `OrderReceived`.
    pub input: String,
    /// Confirmed orders: `OrderConfirmed`.
    pub confirmed: String,
    /// Failures: `DeadLetterQueue`.
    pub dead_letters: String,
}

impl Default for InventoryTopics {
    fn default() -> Self {
        Self {
            input: "OrderReceived".into(),
            confirmed: "OrderConfirmed".into(),
            dead_letters: "DeadLetterQueue".into(),
        }
    }
}

/// How long a confirmed orderId is remembered by default.
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Builds the inventory topology with the default dedup retention.
pub fn inventory_topology(
    topics: &InventoryTopics,
    application_id: &str,
) -> Result<Topology, TopologyError> {
    inventory_topology_with(topics, application_id, Some(DEFAULT_DEDUP_RETENTION))
}

/// Builds the inventory topology. An orderId is forgotten `dedup_retention`
/// after the timestamp of the event that confirmed it (`None`: never): a
/// resend after that is confirmed again.
pub fn inventory_topology_with(
    topics: &InventoryTopics,
    application_id: &str,
    dedup_retention: Option<Duration>,
) -> Result<Topology, TopologyError> {
    let b = TopologyBuilder::new();
    b.add_store(StoreSpec::key_value(DEDUP_STORE));
    b.dead_letter_topic(
        &topics.dead_letters,
        InventoryDeadLetters {
            application_id: application_id.to_string(),
        },
    );
    b.source(&topics.input, StringSerde, ReceivedSerde)
        .try_map("validate", |mut r: Record<String, ReceivedEvent>| {
            let Some(value) = r.value.take() else {
                return Err(ProcessError::deserialization(
                    "value is null (a tombstone is not an order)",
                ));
            };
            let order = validate_received(r.key.as_deref(), value)?;
            Ok(r.with_value(Some(order)))
        })
        .dedup_with_retention(
            "dedup",
            DEDUP_STORE,
            dedup_retention,
            |r: &Record<String, ValidOrder>| {
                r.value.as_ref().map(|o| o.order_id.as_bytes().to_vec())
            },
        )
        .map("confirm", |mut r: Record<String, ValidOrder>| {
            let order = r.value.take().expect("validated records have a value");
            // Debug, not info: a line per order was ~10% of the job's time.
            tracing::debug!(
                order_id = %order.order_id,
                customer_id = %order.customer_id,
                items = order.item_count,
                total = format!("{:.2}", order.total),
                currency = order.currency.as_deref().unwrap_or("-"),
                "order confirmed"
            );
            let confirmed = OrderConfirmed {
                event_id: derived_event_id(&order.event_id),
                event_type: ORDER_CONFIRMED.to_string(),
                version: 1,
                timestamp: now_rfc3339(),
                correlation_id: order
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| order.event_id.clone()),
                causation_id: order.event_id,
                data: order.data,
            };
            r.with_value(Some(confirmed))
        })
        .to(
            &topics.confirmed,
            StringSerde,
            JsonSerde::<OrderConfirmed>::new(),
        );
    b.build()
}
