//! `weir run`: the Inventory job, on the embedded broker or a real cluster.

use std::time::Duration;

use anyhow::Context;
use weir::broker::{job_client_defaults, EmbeddedBroker, TopicSpec};
use weir::job::{Job, JobConfig};
use weir::observability::{prometheus, MetricsServer};
use weir_topology::{Guarantee, Topology};

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // First: a SIGTERM while the job starts must still stop it cleanly.
    let signal = super::shutdown_signal();
    let handle = prometheus()?;
    // Bind first: a taken port is reported before anything starts.
    let server = MetricsServer::bind(args.metrics_addr).await?;
    let topics = args.topics.to_topics();

    let embedded = match &args.brokers {
        Some(_) => None,
        None => {
            let specs = vec![
                TopicSpec {
                    name: topics.input.clone(),
                    partitions: args.partitions,
                },
                TopicSpec {
                    name: topics.confirmed.clone(),
                    partitions: args.partitions,
                },
                TopicSpec {
                    name: topics.dead_letters.clone(),
                    partitions: 1,
                },
                // Created here because the embedded broker has no Admin API;
                // on a real cluster Weir creates it itself.
                TopicSpec {
                    name: Topology::changelog_topic(
                        &args.application_id,
                        weir::inventory::DEDUP_STORE,
                    ),
                    partitions: args.partitions,
                },
            ];
            let b = tokio::task::spawn_blocking(move || EmbeddedBroker::start(1, &specs))
                .await?
                .context("starting the embedded broker")?;
            tracing::info!(
                bootstrap = b.bootstrap_servers(),
                "embedded broker started in-process (in memory: nothing is kept after exit; use --brokers for a real cluster)"
            );
            Some(b)
        }
    };
    let brokers = match (&args.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(e)) => e.bootstrap_servers().to_string(),
        (None, None) => unreachable!("an embedded broker exists when --brokers is absent"),
    };

    let mut cfg = JobConfig::new(&brokers);
    cfg.application_id = args.application_id.clone();
    cfg.state_dir = args.state_dir.clone();
    cfg.topics = topics.clone();
    cfg.guarantee = match (args.guarantee, &embedded) {
        (Some(Guarantee::ExactlyOnce), Some(_)) => {
            tracing::warn!("exactly-once on the embedded broker runs the transactional code path, but that broker does not store transactional offset commits: a restart reprocesses everything");
            Guarantee::ExactlyOnce
        }
        (Some(g), _) => g,
        (None, Some(_)) => {
            tracing::info!("embedded broker: at-least-once (it cannot store transactional offset commits); --guarantee exactly-once tries the code path");
            Guarantee::AtLeastOnce
        }
        (None, None) => Guarantee::ExactlyOnce,
    };
    cfg.instance_id = args.instance_id.clone();
    cfg.dedup_retention = Some(args.dedup_retention).filter(|d| !d.is_zero());
    cfg.commit_interval =
        Duration::from_millis(args.commit_interval_ms.unwrap_or(match cfg.guarantee {
            Guarantee::ExactlyOnce => 100,
            Guarantee::AtLeastOnce => 1000,
        }));
    cfg.kafka = match &embedded {
        // Settings for the mock's ways first; the user's -X win.
        Some(_) => job_client_defaults(),
        None => Vec::new(),
    };
    cfg.kafka.extend(args.kafka.iter().cloned());
    cfg.stream_threads = args.stream_threads.into();
    cfg.provenance_headers = args.provenance_headers;
    let job = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Job::start(&cfg))
            .await?
            .context("starting the inventory job")?
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = server.local_addr();
    let server_task = tokio::spawn(server.serve(handle, job.readiness(), async {
        let _ = stop_rx.await;
    }));
    tracing::info!(%addr, "serving /metrics, /health and /ready");

    let samples_done = async {
        if !args.sample_orders {
            return std::future::pending::<anyhow::Result<()>>().await;
        }
        let status = job.handle().status();
        while status.state() != weir_topology::AppState::Running
            || status.assigned_partitions() == 0
        {
            if status.error().is_some() {
                return std::future::pending().await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let published = super::samples::publish(&brokers, &topics.input).await?;
        let (b, t) = (brokers.clone(), topics.clone());
        tokio::task::spawn_blocking(move || {
            super::samples::report(&b, &t, &published, Duration::from_secs(30))
        })
        .await??;
        if args.exit_after_samples {
            Ok(())
        } else {
            tracing::info!("samples done; the job keeps running (Ctrl-C to stop)");
            std::future::pending().await
        }
    };
    let finished = async {
        while !job.handle().is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut outcome = Ok(());
    tokio::select! {
        _ = signal => tracing::info!("signal received: stopping"),
        r = samples_done => outcome = r,
        _ = finished => tracing::error!("the job stopped by itself"),
    }
    let stopped = tokio::task::spawn_blocking(move || job.stop()).await?;
    let _ = stop_tx.send(());
    let _ = server_task.await;
    drop(embedded);
    outcome?;
    stopped.context("the inventory job failed")?;
    Ok(())
}
