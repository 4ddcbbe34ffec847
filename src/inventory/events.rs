//! The event contracts of the inventory job: what it reads and what it writes.
//!
//! Input `OrderReceived` (key = orderId):
//! `{"eventId","eventType":"OrderReceived","version":1,"timestamp","correlationId"?,"data":{order}}`.
//! Output `OrderConfirmed` (key = orderId): the order unchanged, with a
//! deterministic eventId (UUIDv5 of the source eventId) so downstream
//! consumers can deduplicate too, and `causationId` = the source eventId.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The input event type.
pub const ORDER_RECEIVED: &str = "OrderReceived";
/// The output event type.
pub const ORDER_CONFIRMED: &str = "OrderConfirmed";
/// The dead-letter event type.
pub const ORDER_PROCESSING_FAILED: &str = "OrderProcessingFailed";

/// Namespace of Weir's UUIDv5 event ids (a fixed, random v4 UUID).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b1e_8a47_4f7e_9d3a_5c0b_7e21_d4a9);

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    /// Product identifier.
    pub product_id: String,
    /// Units ordered, at least 1.
    pub quantity: u64,
    /// Unit price, at least 0.
    pub price: f64,
}

/// An order as carried in `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order identifier (the dedup key and the record key).
    pub order_id: String,
    /// Customer identifier.
    pub customer_id: String,
    /// Order lines, at least one.
    pub items: Vec<OrderItem>,
    /// ISO currency code, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The `OrderReceived` envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderReceived {
    /// Unique per event (a resend has a new one).
    pub event_id: String,
    /// Always `OrderReceived`.
    pub event_type: String,
    /// Always 1.
    pub version: u32,
    /// RFC 3339 time the event was created.
    pub timestamp: String,
    /// Ties the events of one business flow together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The order.
    pub data: Order,
}

impl OrderReceived {
    /// A new event for `order`, with a fresh eventId and the current time.
    pub fn new(order: Order, correlation_id: Option<String>) -> Self {
        Self {
            event_id: Uuid::new_v4().to_string(),
            event_type: ORDER_RECEIVED.to_string(),
            version: 1,
            timestamp: now_rfc3339(),
            correlation_id,
            data: order,
        }
    }
}

/// The `OrderConfirmed` envelope. `data` is the input's `data` object as
/// received (fields Weir does not know are kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmed {
    /// UUIDv5 of the source eventId: the same input always confirms with the same id.
    pub event_id: String,
    /// Always `OrderConfirmed`.
    pub event_type: String,
    /// Always 1.
    pub version: u32,
    /// RFC 3339 time of confirmation.
    pub timestamp: String,
    /// The source's correlationId, or its eventId when it had none.
    pub correlation_id: String,
    /// The source eventId.
    pub causation_id: String,
    /// The order: the input's `data` JSON text, unchanged.
    pub data: Box<serde_json::value::RawValue>,
}

/// The deterministic eventId of the event caused by `source_event_id`.
pub fn derived_event_id(source_event_id: &str) -> String {
    // Straight into the text form: `to_string` goes through `fmt` (~1% of
    // the stream thread, one per confirmed order).
    let id = Uuid::new_v5(&EVENT_ID_NAMESPACE, source_event_id.as_bytes());
    id.hyphenated()
        .encode_lower(&mut Uuid::encode_buffer())
        .to_owned()
}

/// Now, as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    // Every confirmation carries one; at tens of thousands a second most
    // fall in the same millisecond as the one before, so each thread keeps
    // the last one formatted.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    let ms = now.timestamp_millis();
    LAST.with_borrow_mut(|(last_ms, text)| {
        if *last_ms != ms {
            *text = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            *last_ms = ms;
        }
        text.clone()
    })
}

/// Milliseconds since the epoch as RFC 3339, UTC.
pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_event_id_is_the_hyphenated_lowercase_uuid_v5() {
        let expected = Uuid::new_v5(&EVENT_ID_NAMESPACE, b"e-1").to_string();
        assert_eq!(derived_event_id("e-1"), expected);
        assert_eq!(expected.len(), 36);
        assert_eq!(expected, expected.to_lowercase());
    }

    #[test]
    fn now_is_rfc3339_with_milliseconds_in_utc_and_moves_on() {
        let first = now_rfc3339();
        let parsed = chrono::DateTime::parse_from_rfc3339(&first).unwrap();
        assert!(first.ends_with('Z') && first.len() == 24, "{first}");
        let later = chrono::Utc::now() + chrono::Duration::milliseconds(5);
        while chrono::Utc::now() < later {
            std::hint::spin_loop();
        }
        let second = now_rfc3339();
        let reparsed = chrono::DateTime::parse_from_rfc3339(&second).unwrap();
        assert!(reparsed > parsed, "{first} then {second}");
    }
}
