//! `weir orders serve`: the Order service.

use std::time::Duration;

use anyhow::Context;
use weir::observability::prometheus;
use weir::orders::{router, OrderService, OrdersConfig};

use crate::cli::OrdersServeArgs;

pub async fn serve(args: OrdersServeArgs) -> anyhow::Result<()> {
    let metrics = prometheus()?;
    let mut cfg = OrdersConfig::new(&args.brokers);
    cfg.topic = args.topic.clone();
    cfg.publish_timeout = Duration::from_millis(args.publish_timeout_ms);
    cfg.kafka = args.kafka.clone();
    let service = OrderService::new(cfg).context("creating the producer")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (choose another --listen)", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, topic = %args.topic, "Order service: POST /orders, GET /health, GET /metrics");
    axum::serve(listener, router(service, metrics))
        .with_graceful_shutdown(super::shutdown_signal())
        .await
        .context("serving HTTP")?;
    Ok(())
}
