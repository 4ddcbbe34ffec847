//! Turning bytes into typed keys and values at the edges of a topology.

use std::marker::PhantomData;

/// Serializes and deserializes one type. Errors are plain messages: the
/// runtime attaches topic, partition and offset and routes the record.
pub trait Serde<T>: Send + Sync + 'static {
    /// Bytes to value.
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String>;
    /// Value to bytes.
    fn serialize(&self, value: &T) -> Result<Vec<u8>, String>;
}

/// UTF-8 strings. Non-UTF-8 input is a deserialization error.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn deserialize(&self, bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            format!(
                "not valid UTF-8 (first bad byte at {})",
                e.utf8_error().valid_up_to()
            )
        })
    }
    fn serialize(&self, value: &String) -> Result<Vec<u8>, String> {
        Ok(value.as_bytes().to_vec())
    }
}

/// Raw bytes, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerde;

impl Serde<Vec<u8>> for BytesSerde {
    fn deserialize(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
    fn serialize(&self, value: &Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(value.clone())
    }
}

/// JSON through serde for any `T`.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> JsonSerde<T> {
    /// A JSON serde for `T`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Serde<T> for JsonSerde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    fn deserialize(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
    }
    fn serialize(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }
}

/// JSON that must be an object: anything else (an array, a number, a string)
/// is a deserialization error, so processors can rely on field access.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonObjectSerde;

impl Serde<serde_json::Value> for JsonObjectSerde {
    fn deserialize(&self, bytes: &[u8]) -> Result<serde_json::Value, String> {
        if bytes.is_empty() {
            return Err("value is empty (0 bytes)".into());
        }
        if std::str::from_utf8(bytes).is_err() {
            return Err("value is not valid UTF-8, so not JSON".into());
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        if !value.is_object() {
            return Err(format!(
                "JSON value is {}, expected an object",
                json_kind(&value)
            ));
        }
        Ok(value)
    }
    fn serialize(&self, value: &serde_json::Value) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }
}

/// "an array", "a string", … for messages about JSON values.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_serde_names_what_is_wrong() {
        let s = JsonObjectSerde;
        assert!(s.deserialize(b"").unwrap_err().contains("empty"));
        assert!(s.deserialize(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(s.deserialize(b"[1,2]").unwrap_err().contains("an array"));
        assert!(s.deserialize(b"{").unwrap_err().contains("invalid JSON"));
        assert!(s.deserialize(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn string_serde_rejects_non_utf8() {
        assert!(StringSerde.deserialize(&[b'a', 0xff]).is_err());
        assert_eq!(StringSerde.deserialize(b"o-1").unwrap(), "o-1");
    }
}
