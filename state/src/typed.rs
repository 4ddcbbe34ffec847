//! Serde at the edge: processors see typed values, stores see bytes.
//!
//! Keys are the caller's bytes (an orderId's UTF-8, say), so changelog keys
//! stay readable with any Kafka tool; values are bincode, compact and fast.

use serde::{de::DeserializeOwned, Serialize};

use crate::{StateError, StoreTransaction};

/// A typed view of one store transaction, bound to the input offset of the
/// record being processed (every write is attributed to it in the changelog).
pub struct TypedStore<'a> {
    tx: &'a mut StoreTransaction,
    source_offset: i64,
}

impl<'a> TypedStore<'a> {
    /// A view whose writes are attributed to `source_offset`.
    pub fn new(tx: &'a mut StoreTransaction, source_offset: i64) -> Self {
        Self { tx, source_offset }
    }

    /// Reads and decodes a value.
    pub fn get<V: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<V>, StateError> {
        match self.tx.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(self.tx.name(), &bytes).map(Some),
        }
    }

    /// True when the key has a value.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StateError> {
        self.tx.contains(key)
    }

    /// Encodes and writes a value.
    pub fn put<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<(), StateError> {
        let bytes = encode(self.tx.name(), value)?;
        self.tx.put(key.to_vec(), bytes, self.source_offset);
        Ok(())
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &[u8]) {
        self.tx.delete(key.to_vec(), self.source_offset);
    }

    /// Encodes and writes a value that is not logged (see
    /// [`StoreTransaction::put_local`]).
    pub fn put_local<V: Serialize>(&mut self, key: &[u8], value: &V) -> Result<(), StateError> {
        let bytes = encode(self.tx.name(), value)?;
        self.tx.put_local(key.to_vec(), bytes);
        Ok(())
    }

    /// Deletes a key without logging it.
    pub fn delete_local(&mut self, key: &[u8]) {
        self.tx.delete_local(key.to_vec());
    }
}

/// Encodes a value the way typed stores do.
pub fn encode<V: Serialize>(store: &str, value: &V) -> Result<Vec<u8>, StateError> {
    // Sized up front: bincode's `encode_to_vec` starts empty and grows one
    // varint at a time (a dedup entry reallocated on every put). A value's
    // in-memory size plus a varint's worst case covers fixed-size values;
    // a zero-sized one (an index entry's `()`) encodes to nothing.
    let hint = match std::mem::size_of::<V>() {
        0 => 0,
        n => n + 8,
    };
    let mut out = Vec::with_capacity(hint);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard()).map_err(
        |e| StateError::Encode {
            store: store.to_string(),
            message: e.to_string(),
        },
    )?;
    Ok(out)
}

/// Decodes a value the way typed stores do. The bytes must be exactly one
/// value: bincode alone also decodes a prefix of other bytes.
pub fn decode<V: DeserializeOwned>(store: &str, bytes: &[u8]) -> Result<V, StateError> {
    let err = |message: String| StateError::Decode {
        store: store.to_string(),
        message,
    };
    let (v, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| err(e.to_string()))?;
    if read != bytes.len() {
        return Err(err(format!(
            "{} bytes left over after the value",
            bytes.len() - read
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Seen {
        first_seen_ms: i64,
    }

    #[test]
    fn typed_values_round_trip_through_bytes() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("dedup")));
        let mut typed = TypedStore::new(&mut tx, 9);
        typed.put(b"o-1", &Seen { first_seen_ms: 5 }).unwrap();
        assert_eq!(
            typed.get::<Seen>(b"o-1").unwrap(),
            Some(Seen { first_seen_ms: 5 })
        );
        assert!(typed.contains(b"o-1").unwrap());
        typed.delete(b"o-1");
        assert_eq!(typed.get::<Seen>(b"o-1").unwrap(), None);
    }

    /// Stores and changelogs written before hold these exact bytes.
    #[test]
    fn the_encoding_is_bincode_standard_varints() {
        let seen = Seen {
            first_seen_ms: 1_763_800_000_000,
        };
        let bytes = encode("s", &seen).unwrap();
        // 253: a u64 varint follows, 8 bytes little-endian, of the zigzag
        // encoding (2 × 1,763,800,000,000 = 0x0335_5558_4C00).
        assert_eq!(bytes, [253, 0x00, 0x4c, 0x58, 0x55, 0x35, 0x03, 0, 0]);
        assert_eq!(decode::<Seen>("s", &bytes).unwrap(), seen);
        assert!(encode("s", &()).unwrap().is_empty());
        assert_eq!(encode("s", &"o-1").unwrap(), b"\x03o-1");
    }

    #[test]
    fn a_value_of_another_type_is_a_decode_error_naming_the_store() {
        let mut tx = StoreTransaction::new(Box::new(MemoryStore::new("dedup")));
        tx.put(b"k".to_vec(), vec![0xff], 0);
        let typed = TypedStore::new(&mut tx, 0);
        let err = typed.get::<String>(b"k").unwrap_err();
        assert!(err.to_string().contains("dedup"), "{err}");
    }

    #[test]
    fn bytes_left_after_a_value_are_a_decode_error() {
        let mut bytes = encode("s", &7u64).unwrap();
        assert_eq!(decode::<u64>("s", &bytes).unwrap(), 7);
        bytes.push(0);
        let err = decode::<u64>("s", &bytes).unwrap_err();
        assert!(err.to_string().contains("1 bytes left over"), "{err}");
    }
}
