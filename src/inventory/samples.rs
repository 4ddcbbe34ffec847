//! A handful of `OrderReceived` records that show every outcome: confirmed
//! orders, a redelivered duplicate, a resend with a new eventId, an invalid
//! order and undecodable bytes.

use super::events::{Order, OrderItem, OrderReceived};

/// One sample input record.
#[derive(Debug, Clone)]
pub struct Sample {
    /// What a newcomer should see happen.
    pub expect: &'static str,
    /// Record key.
    pub key: Option<String>,
    /// Record value bytes.
    pub value: Vec<u8>,
}

fn order(id: &str, customer: &str, items: &[(&str, u64, f64)]) -> Order {
    Order {
        order_id: id.into(),
        customer_id: customer.into(),
        items: items
            .iter()
            .map(|(p, q, price)| OrderItem {
                product_id: (*p).into(),
                quantity: *q,
                price: *price,
            })
            .collect(),
        currency: Some("USD".into()),
    }
}

fn json(e: &OrderReceived) -> Vec<u8> {
    serde_json::to_vec(e).expect("events serialize")
}

/// The sample records, in publishing order.
pub fn samples() -> Vec<Sample> {
    let first = OrderReceived::new(
        order("o-1001", "c-1", &[("p-1", 2, 9.99)]),
        Some("demo".into()),
    );
    let second = OrderReceived::new(
        order("o-1002", "c-2", &[("p-2", 1, 24.5), ("p-3", 3, 1.25)]),
        Some("demo".into()),
    );
    let resend = OrderReceived::new(
        order("o-1002", "c-2", &[("p-2", 1, 24.5)]),
        Some("demo".into()),
    );
    let mut invalid = OrderReceived::new(order("o-1003", "c-3", &[("p-4", 0, 5.0)]), None);
    invalid.data.items[0].quantity = 0;
    let third = OrderReceived::new(order("o-1004", "c-1", &[("p-1", 1, 9.99)]), None);
    vec![
        Sample {
            expect: "confirmed",
            key: Some("o-1001".into()),
            value: json(&first),
        },
        Sample {
            expect: "confirmed",
            key: Some("o-1002".into()),
            value: json(&second),
        },
        Sample {
            expect: "duplicate (redelivery of o-1001)",
            key: Some("o-1001".into()),
            value: json(&first),
        },
        Sample {
            expect: "duplicate (resend of o-1002, new eventId)",
            key: Some("o-1002".into()),
            value: json(&resend),
        },
        Sample {
            expect: "dead letter: validation (quantity 0)",
            key: Some("o-1003".into()),
            value: json(&invalid),
        },
        Sample {
            expect: "dead letter: deserialization (not JSON)",
            key: Some("o-1005".into()),
            value: b"this is not JSON".to_vec(),
        },
        Sample {
            expect: "confirmed",
            key: Some("o-1004".into()),
            value: json(&third),
        },
    ]
}
