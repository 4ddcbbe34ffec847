//! Decoding `OrderReceived` for the job's hot path.
//!
//! A well-formed order is parsed straight into the few fields the rules read
//! (typed serde, strings borrowed from the input while parsing) and its
//! `data` object is kept as raw JSON text for the confirmation. Parsing into
//! a `serde_json::Value` instead (a map node and a string per field) was
//! about a third of the job's CPU per record (perf, 2026-11-22).
//!
//! The typed parse is only a shortcut. Anything it does not accept — a
//! field of another type, a missing field, a duplicate key, an array where
//! an object belongs — is decoded as a JSON object, and
//! [`crate::inventory::validate`]'s rules, which name what is wrong, decide.
//! The same happens when the shortcut's own checks fail: the full rules
//! always make the verdict on an invalid order, so its dead-letter message
//! is the same whichever path read it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use weir_topology::{JsonObjectSerde, Serde};

use super::events::ORDER_RECEIVED;
use super::validate::ValidOrder;

/// An `OrderReceived` value as the job's source decodes it.
#[derive(Debug, Clone)]
pub enum ReceivedEvent {
    /// Read by the typed parse (valid or not: see [`TypedEvent::into_valid`]).
    Typed(Box<TypedEvent>),
    /// A JSON object of another shape, for the full rules to judge.
    Object(Value),
}

/// The fields of an `OrderReceived` the rules read, and its original bytes.
#[derive(Debug, Clone)]
pub struct TypedEvent {
    raw: Box<[u8]>,
    event_type_ok: bool,
    version: u64,
    event_id: String,
    correlation_id: Option<String>,
    order_id: String,
    customer_id: String,
    /// Every item has quantity ≥ 1 and price ≥ 0.
    items_ok: bool,
    item_count: usize,
    total: f64,
    currency: Option<String>,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "eventId", borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "eventType", borrow)]
    event_type: Cow<'a, str>,
    version: u64,
    #[serde(rename = "correlationId", default, borrow)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "orderId", borrow)]
    order_id: Cow<'a, str>,
    #[serde(rename = "customerId", borrow)]
    customer_id: Cow<'a, str>,
    items: Vec<Item>,
    #[serde(default, borrow)]
    currency: Option<Cow<'a, str>>,
}

/// The fields of an item the rules read. Read as a JSON object only: a
/// derived `Deserialize` would take an array too (by position), and
/// reading each item as raw text first to check was a second pass.
struct Item {
    quantity: u64,
    price: f64,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Item;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an item object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                let (mut quantity, mut price) = (None, None);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot_taken = match &*key {
                        "quantity" => quantity.replace(map.next_value()?).is_some(),
                        "price" => price.replace(map.next_value()?).is_some(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            false
                        }
                    };
                    if slot_taken {
                        return Err(A::Error::custom(format!("duplicate field {key}")));
                    }
                }
                Ok(Item {
                    quantity: quantity.ok_or_else(|| A::Error::missing_field("quantity"))?,
                    price: price.ok_or_else(|| A::Error::missing_field("price"))?,
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// serde reads a struct from a JSON array too (by position); the rules want
/// objects, so anything else leaves the shortcut.
fn object(raw: &str) -> Option<&str> {
    raw.trim_start().starts_with('{').then_some(raw)
}

fn typed(bytes: &[u8]) -> Option<TypedEvent> {
    let text = object(std::str::from_utf8(bytes).ok()?)?;
    let env: Envelope<'_> = serde_json::from_str(text).ok()?;
    let data: Data<'_> = serde_json::from_str(object(env.data.get())?).ok()?;
    let mut items_ok = true;
    let mut total = 0.0;
    for item in &data.items {
        items_ok &= item.quantity >= 1 && item.price >= 0.0;
        total += item.quantity as f64 * item.price;
    }
    Some(TypedEvent {
        raw: bytes.into(),
        event_type_ok: env.event_type == ORDER_RECEIVED,
        version: env.version,
        event_id: env.event_id.into_owned(),
        correlation_id: env.correlation_id.map(Cow::into_owned),
        order_id: data.order_id.into_owned(),
        customer_id: data.customer_id.into_owned(),
        items_ok,
        item_count: data.items.len(),
        total,
        currency: data.currency.map(Cow::into_owned),
        data: env.data.to_owned(),
    })
}

impl TypedEvent {
    /// The valid order, when every rule holds (`key`: the record key, which
    /// must equal the orderId when present); otherwise the original bytes,
    /// for the full rules to name what is wrong.
    pub fn into_valid(self, key: Option<&str>) -> Result<ValidOrder, Box<[u8]>> {
        let ok = self.event_type_ok
            && self.version == 1
            && !self.event_id.trim().is_empty()
            && !self.order_id.trim().is_empty()
            && !self.customer_id.trim().is_empty()
            && self.item_count > 0
            && self.items_ok
            && self.total.is_finite()
            && key.is_none_or(|k| k == self.order_id);
        if !ok {
            return Err(self.raw);
        }
        Ok(ValidOrder {
            event_id: self.event_id,
            correlation_id: self.correlation_id,
            order_id: self.order_id,
            customer_id: self.customer_id,
            item_count: self.item_count,
            total: self.total,
            currency: self.currency,
            data: self.data,
        })
    }
}

/// The source serde of the job: UTF-8 JSON objects, typed when they have
/// the order's shape. Errors are [`JsonObjectSerde`]'s (empty, not UTF-8,
/// not JSON, not an object).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReceivedSerde;

impl Serde<ReceivedEvent> for ReceivedSerde {
    fn deserialize(&self, bytes: &[u8]) -> Result<ReceivedEvent, String> {
        match typed(bytes) {
            Some(t) => Ok(ReceivedEvent::Typed(Box::new(t))),
            None => JsonObjectSerde
                .deserialize(bytes)
                .map(ReceivedEvent::Object),
        }
    }

    fn serialize(&self, value: &ReceivedEvent) -> Result<Vec<u8>, String> {
        match value {
            ReceivedEvent::Typed(t) => Ok(t.raw.to_vec()),
            ReceivedEvent::Object(v) => JsonObjectSerde.serialize(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::validate::{validate, validate_received};

    const VALID: &str = r#"{"eventId":"e-1","eventType":"OrderReceived","version":1,"timestamp":"2026-11-22T00:00:00Z","correlationId":"c","data":{"orderId":"o-1","customerId":"c-1","items":[{"productId":"p","quantity":2,"price":9.5}],"currency":"USD","note":"kept"}}"#;

    /// A verdict as comparable text.
    fn show(result: Result<ValidOrder, weir_topology::ProcessError>) -> String {
        match result {
            Ok(o) => format!(
                "valid {} {:?} {} {} {} {} {:?} {}",
                o.event_id,
                o.correlation_id,
                o.order_id,
                o.customer_id,
                o.item_count,
                o.total,
                o.currency,
                serde_json::from_str::<Value>(o.data.get()).unwrap()
            ),
            Err(e) => format!("{e}"),
        }
    }

    /// What the job concludes from `bytes` with `key`, through the source
    /// serde and the shortcut.
    fn verdict(key: Option<&str>, bytes: &[u8]) -> String {
        match ReceivedSerde.deserialize(bytes) {
            Err(e) => format!("source error: {e}"),
            Ok(ev) => show(validate_received(key, ev)),
        }
    }

    /// The same through a `Value` and the full rules only.
    fn reference(key: Option<&str>, bytes: &[u8]) -> String {
        match JsonObjectSerde.deserialize(bytes) {
            Err(e) => format!("source error: {e}"),
            Ok(v) => show(validate(key, &v)),
        }
    }

    #[test]
    fn a_well_formed_order_takes_the_typed_path_and_keeps_data_verbatim() {
        let ev = ReceivedSerde.deserialize(VALID.as_bytes()).unwrap();
        let ReceivedEvent::Typed(t) = ev else {
            panic!("a well-formed order must take the typed path")
        };
        let o = t.into_valid(Some("o-1")).unwrap();
        assert_eq!(
            o.data.get(),
            r#"{"orderId":"o-1","customerId":"c-1","items":[{"productId":"p","quantity":2,"price":9.5}],"currency":"USD","note":"kept"}"#
        );
        assert_eq!(o.total, 19.0);
        assert_eq!(
            ReceivedSerde.serialize(&ReceivedSerde.deserialize(VALID.as_bytes()).unwrap()),
            Ok(VALID.as_bytes().to_vec())
        );
    }

    /// The shortcut never decides differently from the full rules: every
    /// variant here (each rule broken, other shapes and types, escapes,
    /// duplicate keys, arrays where objects belong) gets the same verdict
    /// and the same message both ways.
    #[test]
    fn the_typed_path_agrees_with_the_full_rules_on_every_variant() {
        let edits: &[(&str, &str)] = &[
            (r#""version":1"#, r#""version":2"#),
            (r#""version":1"#, r#""version":1.0"#),
            (r#""version":1"#, r#""version":"1""#),
            (
                r#""eventType":"OrderReceived""#,
                r#""eventType":"OrderShipped""#,
            ),
            (r#""eventType":"OrderReceived""#, r#""eventType":7"#),
            (r#""eventId":"e-1""#, r#""eventId":"  ""#),
            (r#""eventId":"e-1""#, r#""eventId":null"#),
            (r#""eventId":"e-1","#, ""),
            (r#""correlationId":"c""#, r#""correlationId":null"#),
            (r#""correlationId":"c""#, r#""correlationId":5"#),
            (r#""orderId":"o-1""#, r#""orderId":"""#),
            (r#""orderId":"o-1""#, r#""orderId":"o-\u0031""#),
            (r#""orderId":"o-1""#, r#""orderId":"o-2""#),
            (r#""customerId":"c-1""#, r#""customerId":["c"]"#),
            (r#""quantity":2"#, r#""quantity":0"#),
            (r#""quantity":2"#, r#""quantity":-2"#),
            (r#""quantity":2"#, r#""quantity":2.5"#),
            (r#""quantity":2"#, r#""quantity":2.0"#),
            (r#""quantity":2"#, r#""quantity":99999999999999999999"#),
            (r#""price":9.5"#, r#""price":-0.01"#),
            (r#""price":9.5"#, r#""price":0"#),
            (r#""price":9.5"#, r#""price":"9.5""#),
            (r#""price":9.5"#, r#""price":1e308,"quantity":3"#),
            (r#""currency":"USD""#, r#""currency":840"#),
            (r#""currency":"USD","#, ""),
            (r#"[{"productId":"p","quantity":2,"price":9.5}]"#, r#"[]"#),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"[[2,9.5]]"#,
            ),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"{"a":1}"#,
            ),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"[{"quantity":1,"price":1},{"quantity":1}]"#,
            ),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"[{"quantity":0,"quantity":2,"price":9.5}]"#,
            ),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"[{"quantity":2,"price":9.5},5]"#,
            ),
            (
                r#"[{"productId":"p","quantity":2,"price":9.5}]"#,
                r#"[{"quantity":2,"price":9.5,"extra":{"a":[1]}}]"#,
            ),
            (r#""eventId":"e-1""#, r#""eventId":"e-1","eventId":"e-2""#),
            (
                r#""data":{"orderId":"o-1","customerId":"c-1","#,
                r#""data":["o-1","c-1","#,
            ),
        ];
        let mut typed = 0;
        for (from, to) in edits {
            assert!(VALID.contains(from), "{from}");
            let text = VALID.replacen(from, to, 1);
            if matches!(
                ReceivedSerde.deserialize(text.as_bytes()),
                Ok(ReceivedEvent::Typed(_))
            ) {
                typed += 1;
            }
            for key in [None, Some("o-1"), Some("o-2")] {
                assert_eq!(
                    verdict(key, text.as_bytes()),
                    reference(key, text.as_bytes()),
                    "{text} with key {key:?}"
                );
            }
        }
        for bytes in [
            &b""[..],
            b"[1]",
            b"\"x\"",
            b"{",
            &[0xff, 0xfe],
            VALID.as_bytes(),
        ] {
            assert_eq!(verdict(Some("o-1"), bytes), reference(Some("o-1"), bytes));
        }
        // The comparison covers the shortcut, not just the fallback.
        assert!(typed >= 10, "only {typed} variants took the typed path");
    }
}
