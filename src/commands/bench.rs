//! `weir bench`: runs the benchmark and writes results.md and results.json.

use std::time::Duration;

use anyhow::Context;
use weir::bench::{markdown, memory, run, topics, BenchConfig};
use weir::broker::{job_client_defaults, EmbeddedBroker, TopicSpec};

use crate::cli::{BenchArgs, BenchStoreMemoryArgs};

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.orders > 0, "--orders must be at least 1");
    // ~340 bytes a record, 1.21 records an order; the embedded broker keeps ~5 MiB a partition.
    let bytes = args.orders as f64 * 1.21 * 340.0;
    let partitions = args.partitions.unwrap_or(match args.brokers {
        Some(_) => 8,
        None => ((bytes / (3.0 * 1048576.0)).ceil() as i32).max(8),
    });
    let work = tempfile::tempdir().context("creating a work directory")?;
    let mut cfg = BenchConfig {
        steps: args.steps.clone(),
        brokers: String::new(),
        broker_name: String::new(),
        broker_in_process: false,
        orders: args.orders,
        partitions,
        work_dir: work.path().to_path_buf(),
        timeout: Duration::from_secs(args.timeout_secs),
        weir_exe: std::env::current_exe().context("finding the weir executable")?,
        latency_rate: args.latency_rate,
        latency_seconds: args.latency_seconds,
        job_kafka: Vec::new(),
        stream_threads: args.stream_threads.into(),
        commit_interval: args.commit_interval_ms.map(Duration::from_millis),
        memory_keys: args.memory_keys.clone(),
        memory_lookups: args.memory_lookups,
    };
    let broker_steps = args.steps.iter().any(|s| s.needs_broker());
    let _embedded = match &args.brokers {
        _ if !broker_steps => None,
        Some(b) => {
            cfg.brokers = b.clone();
            cfg.broker_name = format!("Kafka at {b}");
            let mut create = std::process::Command::new(std::env::current_exe()?);
            create.args(["topics", "create", "--brokers", b]);
            for (t, p) in topics(&cfg)
                .into_iter()
                .filter(|(t, _)| !t.ends_with("-changelog"))
            {
                create.args(["--topic", &format!("{t}:{p}")]);
            }
            anyhow::ensure!(
                create.status()?.success(),
                "creating the benchmark topics failed"
            );
            None
        }
        None => {
            let specs: Vec<TopicSpec> = topics(&cfg)
                .into_iter()
                .map(|(name, partitions)| TopicSpec { name, partitions })
                .collect();
            let b = EmbeddedBroker::start(1, &specs)?;
            cfg.brokers = b.bootstrap_servers().to_string();
            cfg.broker_name = "the embedded broker (librdkafka mock cluster, in-process)".into();
            cfg.broker_in_process = true;
            // Without these the latency figures and every restart (the
            // restore step restarts a job) would measure the mock's ways.
            cfg.job_kafka = job_client_defaults();
            Some(b)
        }
    };
    cfg.job_kafka.extend(args.kafka.iter().cloned());
    if broker_steps {
        eprintln!(
            "weir bench: {} orders, {partitions} partitions, on {}",
            args.orders, cfg.broker_name
        );
    } else {
        eprintln!("weir bench: no broker step");
    }
    let report = run(&cfg, &|step| eprintln!("  … {step}")).context("running the benchmark")?;
    let md = markdown(&report);
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("results.md"), &md)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}

/// One size of the memory step (the child process `weir bench` starts):
/// the figures as one JSON line on stdout.
pub fn store_memory(args: BenchStoreMemoryArgs) -> anyhow::Result<()> {
    let row = memory::fill_and_measure(args.keys, args.lookups, &args.dir)
        .with_context(|| format!("filling a store with {} keys", args.keys))?;
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}
