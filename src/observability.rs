//! `/metrics`, `/health` and `/ready` on one address.
//!
//! The Prometheus recorder is process-wide (the `metrics` facade has one
//! global recorder), installed once; the HTTP server is started and stopped
//! with the job, its shutdown injected as a future.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Errors of the observability server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservabilityError {
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr} for /metrics: {source} (choose another --metrics-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("metrics server: {0}")]
    Serve(std::io::Error),
}

/// Counter `{status}`: Order service HTTP requests by status code.
pub const ORDERS_REQUESTS: &str = "weir_orders_http_requests_total";
/// Histogram (seconds): Order service publish latency (send to broker ack).
pub const ORDERS_PUBLISH_LATENCY: &str = "weir_orders_publish_latency_seconds";

/// Latency buckets (seconds): 50 µs to 10 s, so percentiles work from
/// sub-millisecond processing to slow commits.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn prometheus() -> Result<PrometheusHandle, ObservabilityError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            weir_topology::metrics::describe();
            metrics::describe_counter!(ORDERS_REQUESTS, "Order service HTTP requests by status");
            metrics::describe_histogram!(
                ORDERS_PUBLISH_LATENCY,
                metrics::Unit::Seconds,
                "Order service publish latency (send to broker acknowledgement)"
            );
            Ok(handle)
        })
        .clone()
        .map_err(ObservabilityError::Recorder)
}

/// What `/ready` answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// 200 when true, 503 when false.
    pub ready: bool,
    /// The JSON body: why.
    pub detail: serde_json::Value,
}

/// Computes readiness on each request.
pub type ReadinessProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    ready: ReadinessProbe,
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.handle.render(),
    )
}

async fn health_handler() -> impl IntoResponse {
    Json(serde_json::json!({"status": "alive"}))
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    let r = (s.ready)();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r.detail))
}

/// A bound, not yet serving, metrics listener (binding first lets the caller
/// report a taken port before starting anything else).
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> Result<Self, ObservabilityError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ObservabilityError::Bind { addr, source })?;
        Ok(Self { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        handle: PrometheusHandle,
        ready: ReadinessProbe,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ObservabilityError> {
        let upkeep = {
            let handle = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    handle.run_upkeep();
                }
            })
        };
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/health", get(health_handler))
            .route("/ready", get(ready_handler))
            .with_state(AppState { handle, ready });
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ObservabilityError::Serve);
        upkeep.abort();
        result
    }
}
