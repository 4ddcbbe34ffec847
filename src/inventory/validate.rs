//! The validity rules of an `OrderReceived` event, each failure naming the
//! field. Undecodable input never reaches here (the source's JSON-object
//! serde rejects it as a deserialization failure).

use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;
use weir_topology::serde::json_kind;
use weir_topology::ProcessError;

use super::events::ORDER_RECEIVED;
use super::received::ReceivedEvent;

/// A validated order, with what the rest of the job needs.
#[derive(Debug, Clone)]
pub struct ValidOrder {
    /// The source eventId.
    pub event_id: String,
    /// The source correlationId, if any.
    pub correlation_id: Option<String>,
    /// `data.orderId`.
    pub order_id: String,
    /// `data.customerId`.
    pub customer_id: String,
    /// Number of lines.
    pub item_count: usize,
    /// Sum of quantity × price.
    pub total: f64,
    /// `data.currency`, if any.
    pub currency: Option<String>,
    /// The `data` object as received (its JSON text: it goes out unchanged).
    pub data: Box<RawValue>,
}

fn non_empty_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, ProcessError> {
    match v.get(field.rsplit('.').next().unwrap_or(field)) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(ProcessError::validation(format!("{field} is empty"))),
        None | Some(Value::Null) => Err(ProcessError::validation(format!("{field} is missing"))),
        Some(other) => Err(ProcessError::validation(format!(
            "{field} must be a string, got {}",
            json_kind(other)
        ))),
    }
}

/// Checks every rule; `key` is the record key (it must equal the orderId).
pub fn validate(key: Option<&str>, event: &Value) -> Result<ValidOrder, ProcessError> {
    check(key, event)
}

/// [`validate`] for what the job's source decoded: a typed event that
/// passes every rule is valid as it is; otherwise these rules judge it.
pub fn validate_received(
    key: Option<&str>,
    event: ReceivedEvent,
) -> Result<ValidOrder, ProcessError> {
    match event {
        ReceivedEvent::Typed(t) => t.into_valid(key).or_else(|raw| {
            let event: Value = serde_json::from_slice(&raw)
                .map_err(|e| ProcessError::deserialization(format!("invalid JSON: {e}")))?;
            validate(key, &event)
        }),
        ReceivedEvent::Object(event) => validate(key, &event),
    }
}

/// Every rule, each failure naming the field.
fn check(key: Option<&str>, event: &Value) -> Result<ValidOrder, ProcessError> {
    match event.get("eventType") {
        Some(Value::String(t)) if t == ORDER_RECEIVED => {}
        Some(Value::String(t)) => {
            return Err(ProcessError::validation(format!(
                "eventType must be \"{ORDER_RECEIVED}\", got {t:?}"
            )))
        }
        Some(other) => {
            return Err(ProcessError::validation(format!(
                "eventType must be a string, got {}",
                json_kind(other)
            )))
        }
        None => return Err(ProcessError::validation("eventType is missing")),
    }
    match event.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(ProcessError::validation(format!(
                "version must be 1, got {v}"
            )))
        }
        None => return Err(ProcessError::validation("version is missing")),
    }
    let event_id = non_empty_str(event, "eventId")?.to_string();
    let correlation_id = match event.get("correlationId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ProcessError::validation(format!(
                "correlationId must be a string, got {}",
                json_kind(other)
            )))
        }
    };
    let data = match event.get("data") {
        Some(d @ Value::Object(_)) => d,
        None | Some(Value::Null) => return Err(ProcessError::validation("data is missing")),
        Some(other) => {
            return Err(ProcessError::validation(format!(
                "data must be an object, got {}",
                json_kind(other)
            )))
        }
    };
    let order_id = non_empty_str(data, "data.orderId")?.to_string();
    let customer_id = non_empty_str(data, "data.customerId")?.to_string();
    let items = match data.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(ProcessError::validation("data.items is empty")),
        None | Some(Value::Null) => return Err(ProcessError::validation("data.items is missing")),
        Some(other) => {
            return Err(ProcessError::validation(format!(
                "data.items must be an array, got {}",
                json_kind(other)
            )))
        }
    };
    let mut total = 0.0;
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(ProcessError::validation(format!(
                "data.items[{i}] must be an object, got {}",
                json_kind(item)
            )));
        }
        let quantity = match item.get("quantity") {
            Some(q) => match q.as_u64() {
                Some(n) if n >= 1 => n,
                _ => {
                    return Err(ProcessError::validation(format!(
                        "data.items[{i}].quantity must be an integer >= 1, got {q}"
                    )))
                }
            },
            None => {
                return Err(ProcessError::validation(format!(
                    "data.items[{i}].quantity is missing"
                )))
            }
        };
        let price = match item.get("price") {
            Some(p) => match p.as_f64() {
                Some(x) if p.is_number() && x >= 0.0 => x,
                _ => {
                    return Err(ProcessError::validation(format!(
                        "data.items[{i}].price must be a number >= 0, got {p}"
                    )))
                }
            },
            None => {
                return Err(ProcessError::validation(format!(
                    "data.items[{i}].price is missing"
                )))
            }
        };
        total += quantity as f64 * price;
    }
    if let Some(k) = key {
        if k != order_id {
            return Err(ProcessError::validation(format!(
                "record key {k:?} does not match data.orderId {order_id:?}"
            )));
        }
    }
    if !total.is_finite() {
        // Valid field by field, but no order can be confirmed with an
        // infinite total: the one "processing" failure of this job.
        return Err(ProcessError::processing(format!(
            "order {order_id}: total (sum of quantity x price) is not a finite number"
        )));
    }
    let currency = data
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ValidOrder {
        event_id,
        correlation_id,
        order_id,
        customer_id,
        item_count: items.len(),
        total,
        currency,
        data: to_raw_value(data).map_err(|e| ProcessError::processing(format!("data: {e}")))?,
    })
}
