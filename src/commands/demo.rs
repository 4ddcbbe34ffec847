//! `weir demo`: the broker, the job and the Order service in one process,
//! a few orders posted over HTTP, and what landed where.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::broker::{EmbeddedBroker, TopicSpec};
use weir::inventory::InventoryTopics;
use weir::job::{Job, JobConfig};
use weir::observability::{prometheus, MetricsServer};
use weir::orders::{router, OrderService, OrdersConfig};
use weir_topology::Topology;

use crate::cli::DemoArgs;

/// POSTs JSON over plain HTTP/1.1; returns (status, body).
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    correlation: &str,
) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Correlation-Id: {correlation}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).await?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((
        status,
        resp.split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or_default(),
    ))
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let signal = super::shutdown_signal();
    let handle = prometheus()?;
    let metrics_server = MetricsServer::bind(args.metrics_addr).await?;
    let metrics_addr = metrics_server.local_addr();
    let orders_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (choose another --listen)", args.listen))?;
    let orders_addr = orders_listener.local_addr()?;
    let topics = InventoryTopics::default();
    let specs = vec![
        TopicSpec {
            name: topics.input.clone(),
            partitions: 4,
        },
        TopicSpec {
            name: topics.confirmed.clone(),
            partitions: 4,
        },
        TopicSpec {
            name: topics.dead_letters.clone(),
            partitions: 1,
        },
        TopicSpec {
            name: Topology::changelog_topic("inventory", weir::inventory::DEDUP_STORE),
            partitions: 4,
        },
    ];
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(1, &specs)).await??;
    let brokers = broker.bootstrap_servers().to_string();
    let mut cfg = JobConfig::new(&brokers);
    cfg.state_dir = args.state_dir.clone();
    // The embedded broker cannot store transactional offset commits.
    cfg.guarantee = weir_topology::Guarantee::AtLeastOnce;
    let job = tokio::task::spawn_blocking(move || Job::start(&cfg))
        .await?
        .context("starting the job")?;
    let service = OrderService::new(OrdersConfig::new(&brokers))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx1 = stop_rx.clone();
    let mut rx2 = stop_rx;
    let metrics_task =
        tokio::spawn(
            metrics_server.serve(handle.clone(), job.readiness(), async move {
                let _ = rx1.changed().await;
            }),
        );
    let orders_task = tokio::spawn(async move {
        axum::serve(orders_listener, router(service, handle))
            .with_graceful_shutdown(async move {
                let _ = rx2.changed().await;
            })
            .await
    });
    println!("embedded broker   {brokers}");
    println!("Order service     http://{orders_addr}/orders");
    println!("job metrics       http://{metrics_addr}/metrics");
    let status = job.handle().status();
    while status.state() != weir_topology::AppState::Running || status.assigned_partitions() == 0 {
        anyhow::ensure!(
            status.error().is_none(),
            "the job failed: {:?}",
            status.error()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let order = |id: &str, qty: i64| {
        format!(
            r#"{{"orderId":"{id}","customerId":"c-42","items":[{{"productId":"p-1","quantity":{qty},"price":12.5}}],"currency":"EUR"}}"#
        )
    };
    let posts = [
        ("new order", order("demo-1", 2)),
        ("new order", order("demo-2", 1)),
        ("the same order again", order("demo-1", 2)),
        ("invalid: quantity 0", order("demo-3", 0)),
        (
            "new order, no orderId",
            r#"{"customerId":"c-7","items":[{"productId":"p-9","quantity":3,"price":4}]}"#
                .to_string(),
        ),
    ];
    println!("\nPOST /orders");
    for (i, (what, body)) in posts.iter().enumerate() {
        let (code, resp) = post(orders_addr, "/orders", body, &format!("demo-{i}")).await?;
        println!("  {code}  {what:<24} {resp}");
    }
    // A producer that bypasses the service: the job dead-letters its bytes.
    super::samples::publish_raw(&brokers, &topics.input, "legacy-1", b"order=1;qty=2").await?;
    println!(
        "  (a legacy producer bypassing the service also wrote undecodable bytes for key legacy-1)"
    );

    let (b, t) = (brokers.clone(), topics.clone());
    let (confirmed, dead) = tokio::task::spawn_blocking(move || {
        super::samples::collect(&b, &t, 3, 1, Duration::from_secs(30))
    })
    .await??;
    println!("\n{} ({}):", topics.confirmed, confirmed.len());
    for (key, v) in &confirmed {
        println!(
            "  {key:<38} eventId {}  causationId {}",
            v["eventId"].as_str().unwrap_or("?"),
            v["causationId"].as_str().unwrap_or("?")
        );
    }
    println!("{} ({}):", topics.dead_letters, dead.len());
    for (key, v) in &dead {
        println!(
            "  {key:<38} {}: {}",
            v["error"]["kind"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or("?")
        );
    }
    let outcome = if args.exit_after_summary {
        Ok(())
    } else {
        println!("\nServing until Ctrl-C.");
        signal.await;
        Ok(())
    };
    let _ = stop_tx.send(true);
    let _ = orders_task.await;
    let _ = metrics_task.await;
    tokio::task::spawn_blocking(move || job.stop())
        .await?
        .context("stopping the job")?;
    drop(broker);
    outcome
}
