//! The inventory job's dead-letter envelope: `OrderProcessingFailed`.
//!
//! It carries the error, where the record came from, the original event
//! (parsed, when it parsed) and the exact original bytes (base64). It must
//! fit a broker's default 1 MB message limit: when it does not, the parsed
//! copy goes first, then the bytes are truncated — and the envelope says so
//! and carries the SHA-256 of the full original.

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use weir_topology::{DeadLetter, DeadLetterHandler, Failure, Headers};

use super::events::{ms_to_rfc3339, now_rfc3339, EVENT_ID_NAMESPACE, ORDER_PROCESSING_FAILED};

/// Most bytes a dead-letter value may take. The broker's default limit is
/// 1,048,588 bytes per record batch; headers (the original ones plus the
/// error ones) and batch overhead need the rest.
pub const MAX_DEAD_LETTER_BYTES: usize = 900_000;

/// Builds `OrderProcessingFailed` envelopes.
#[derive(Debug, Clone)]
pub struct InventoryDeadLetters {
    /// Written into `service.applicationId`.
    pub application_id: String,
}

impl DeadLetterHandler for InventoryDeadLetters {
    fn dead_letter(&self, f: &Failure<'_>) -> DeadLetter {
        let c = &f.source.coordinates;
        let key_json = match f.source.key.map(std::str::from_utf8) {
            None => Value::Null,
            Some(Ok(s)) => Value::String(s.to_string()),
            Some(Err(_)) => Value::Null,
        };
        let mut source = json!({
            "topic": &*c.topic,
            "partition": c.partition,
            "offset": c.offset,
            "key": key_json,
            "timestamp": ms_to_rfc3339(f.source.timestamp),
        });
        if let Some(k) = f.source.key.filter(|k| std::str::from_utf8(k).is_err()) {
            source["keyBase64"] = Value::String(b64(k));
        }
        let original_event = f
            .source
            .value
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .unwrap_or(Value::Null);
        let payload = f.source.value.unwrap_or_default();
        // The original headers, so a replay can republish the record exactly.
        let original_headers: Vec<Value> = f
            .source
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with("__streams.errors."))
            .map(|(k, v)| json!({"key": k, "value": v.map(b64)}))
            .collect();
        let mut envelope = json!({
            // Deterministic: the same failed record always has the same id.
            "eventId": Uuid::new_v5(
                &EVENT_ID_NAMESPACE,
                format!("{}/{}/{}", c.topic, c.partition, c.offset).as_bytes()
            ).to_string(),
            "eventType": ORDER_PROCESSING_FAILED,
            "version": 1,
            "timestamp": now_rfc3339(),
            "error": { "kind": f.kind.as_str(), "message": f.message, "processor": f.processor },
            "source": source,
            "originalEvent": original_event,
            "originalPayload": f.source.value.map(b64),
            "originalHeaders": original_headers,
            "service": {
                "name": "weir",
                "applicationId": &self.application_id,
                "version": env!("CARGO_PKG_VERSION"),
            },
        });
        let mut bytes = serde_json::to_vec(&envelope).unwrap_or_default();
        if bytes.len() > MAX_DEAD_LETTER_BYTES {
            envelope["originalEvent"] = Value::Null;
            envelope["originalEventDropped"] = Value::Bool(true);
            bytes = serde_json::to_vec(&envelope).unwrap_or_default();
        }
        if bytes.len() > MAX_DEAD_LETTER_BYTES {
            let full_b64 = b64(payload).len();
            let rest = bytes.len() - full_b64;
            // Room left for base64 text, then the raw bytes that encode into it.
            let room = MAX_DEAD_LETTER_BYTES.saturating_sub(rest + 200);
            let keep = (room / 4) * 3;
            envelope["originalPayload"] = Value::String(b64(&payload[..keep.min(payload.len())]));
            envelope["originalPayloadTruncated"] = Value::Bool(true);
            envelope["originalPayloadBytes"] = json!(payload.len());
            envelope["originalPayloadSha256"] = Value::String(hex(&Sha256::digest(payload)));
            bytes = serde_json::to_vec(&envelope).unwrap_or_default();
        }
        DeadLetter {
            key: f.source.key.map(<[u8]>::to_vec),
            value: Some(bytes),
            headers: Headers::new().with("content-type", "application/json"),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
