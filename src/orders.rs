//! The Order service: `POST /orders` publishes an `OrderReceived` event.
//!
//! It validates with the job's own rules, fills the orderId when absent,
//! builds the envelope (eventId, timestamp, correlationId from
//! `X-Correlation-Id` or new) and publishes it keyed by orderId with an
//! idempotent producer. `202 Accepted` is answered only after the broker
//! acknowledged the write; `503` when it could not take it in time — a
//! request is never acknowledged and then lost. Posting the same orderId
//! again is allowed: the Inventory job deduplicates.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use uuid::Uuid;
use weir_topology::ProcessError;

use crate::inventory::events::{now_rfc3339, ORDER_RECEIVED};
use crate::inventory::validate::validate;
use crate::observability::{ORDERS_PUBLISH_LATENCY, ORDERS_REQUESTS};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Settings of the Order service.
#[derive(Debug, Clone)]
pub struct OrdersConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic to publish to.
    pub topic: String,
    /// How long a publish may wait for the broker before the request gets 503.
    pub publish_timeout: Duration,
    /// librdkafka settings passed through to the producer.
    pub kafka: Vec<(String, String)>,
}

impl OrdersConfig {
    /// Defaults: `OrderReceived`, 5 s publish timeout.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: "OrderReceived".into(),
            publish_timeout: Duration::from_secs(5),
            kafka: Vec::new(),
        }
    }

    fn producer(&self) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("partitioner", "murmur2_random")
            // A message not delivered in time fails; the client got 503.
            .set(
                "message.timeout.ms",
                self.publish_timeout.as_millis().to_string(),
            );
        for (k, v) in &self.kafka {
            c.set(k, v);
        }
        c.create()
    }
}

/// The service's state, shared by handlers.
pub struct OrderService {
    cfg: OrdersConfig,
    /// Replaced when the idempotent producer hits a fatal error.
    producer: RwLock<FutureProducer>,
}

impl OrderService {
    /// Creates the producer.
    pub fn new(cfg: OrdersConfig) -> Result<Arc<Self>, rdkafka::error::KafkaError> {
        let producer = cfg.producer()?;
        Ok(Arc::new(Self {
            cfg,
            producer: RwLock::new(producer),
        }))
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a fatal producer error, start a fresh producer for the next requests.
    fn renew_if_fatal(&self, used: &FutureProducer) {
        if used.client().fatal_error().is_some() {
            if let Ok(p) = self.cfg.producer() {
                tracing::warn!("producer failed fatally: replaced");
                *self.producer.write().unwrap_or_else(|p| p.into_inner()) = p;
            }
        }
    }
}

/// The HTTP routes: `POST /orders`, `GET /health`, `GET /metrics`.
pub fn router(service: Arc<OrderService>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/orders", post(post_order))
        .route(
            "/health",
            get(|| async { Json(json!({"status": "alive"})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(service)
}

fn reply(status: StatusCode, body: Value) -> axum::response::Response {
    ::metrics::counter!(ORDERS_REQUESTS, "status" => status.as_u16().to_string()).increment(1);
    (status, Json(body)).into_response()
}

fn bad_request(field: &str, message: impl Into<String>) -> axum::response::Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid order", "field": field, "message": message.into()}),
    )
}

async fn post_order(
    State(svc): State<Arc<OrderService>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut order: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("", "the body must be a JSON object"),
        Err(e) => return bad_request("", format!("invalid JSON: {e}")),
    };
    let order_id = match order.get("orderId") {
        None | Some(Value::Null) => Uuid::new_v4().to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return bad_request("orderId", "orderId must be a non-empty string when given"),
    };
    order["orderId"] = Value::String(order_id.clone());
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let event_id = Uuid::new_v4().to_string();
    let event = json!({
        "eventId": event_id,
        "eventType": ORDER_RECEIVED,
        "version": 1,
        "timestamp": now_rfc3339(),
        "correlationId": correlation_id,
        "data": order,
    });
    // The job's own rules, so what the service accepts the job confirms.
    if let Err(ProcessError::Record { message, .. }) = validate(Some(&order_id), &event) {
        let message = message.replace("data.", "");
        let field = message.split_whitespace().next().unwrap_or("").to_string();
        return bad_request(&field, message);
    }
    let payload = serde_json::to_vec(&event).expect("a JSON value serializes");
    let producer = svc.producer();
    let started = Instant::now();
    let sent = producer
        .send(
            FutureRecord::to(&svc.cfg.topic)
                .key(&order_id)
                .payload(&payload),
            Timeout::After(svc.cfg.publish_timeout),
        )
        .await;
    ::metrics::histogram!(ORDERS_PUBLISH_LATENCY).record(started.elapsed().as_secs_f64());
    match sent {
        Ok(d) => reply(
            StatusCode::ACCEPTED,
            json!({"eventId": event_id, "orderId": order_id, "correlationId": correlation_id, "partition": d.partition, "offset": d.offset}),
        ),
        Err((e, _)) => {
            tracing::warn!(error = %e, order_id, "publish failed: answering 503");
            svc.renew_if_fatal(&producer);
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the broker did not acknowledge the order; it was not published, retry later", "detail": e.to_string()}),
            )
        }
    }
}
