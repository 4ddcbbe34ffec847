//! `weir load`: the load generator, with a progress bar and a summary.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use weir::load::{plan, run, LoadConfig};

use crate::cli::LoadArgs;

pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    for (name, r) in [
        ("--duplicate-ratio", args.duplicate_ratio),
        ("--resend-ratio", args.resend_ratio),
        ("--poison-ratio", args.poison_ratio),
    ] {
        anyhow::ensure!(
            (0.0..=10.0).contains(&r),
            "{name} must be between 0 and 10, got {r}"
        );
    }
    anyhow::ensure!(args.orders > 0, "--orders must be at least 1");
    anyhow::ensure!(args.rate >= 0.0, "--rate must be >= 0");
    let cfg = LoadConfig {
        orders: args.orders,
        duplicate_ratio: args.duplicate_ratio,
        resend_ratio: args.resend_ratio,
        poison_ratio: args.poison_ratio,
        rate: args.rate,
        seed: args.seed,
    };
    if let Some(p) = args.partitions {
        anyhow::ensure!(p >= 1, "--partitions must be at least 1");
        super::topics::ensure_topic(&args.brokers, &args.topic, p)?;
    }
    let total = plan(&cfg).len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} sending [{bar:40}] {pos}/{len} records, {per_sec}, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let manifest = run(&cfg, &args.brokers, &args.topic, |n| bar.set_position(n))
        .context("sending the load")?;
    bar.finish_and_clear();
    std::fs::write(&args.manifest, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", args.manifest.display()))?;
    let mut kinds = std::collections::BTreeMap::new();
    for p in &manifest.poison {
        *kinds.entry(p.kind.as_str()).or_insert(0) += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("weir load → {} (seed {})", manifest.topic, manifest.seed);
    println!("  {:<16} {:>10}", "sent", manifest.sent);
    println!("  {:<16} {:>10}", "unique orders", manifest.unique_orders);
    println!("  {:<16} {:>10}", "redeliveries", manifest.redeliveries);
    println!("  {:<16} {:>10}", "resends", manifest.resends);
    println!(
        "  {:<16} {:>10}  ({})",
        "poison",
        manifest.poison.len(),
        kinds.join(", ")
    );
    let unplaced = manifest.poison.iter().filter(|p| p.offset < 0).count();
    if unplaced > 0 {
        println!(
            "  {:<16} {:>10}  (poison the broker acknowledged without an offset: a retry it had already stored)",
            "unplaced poison", unplaced
        );
    }
    println!("  {:<16} {:>10.2} s", "elapsed", manifest.elapsed_seconds);
    println!(
        "  {:<16} {:>10.0} records/s",
        "rate achieved",
        manifest.sent as f64 / manifest.elapsed_seconds.max(1e-9)
    );
    println!("  {:<16} {}", "manifest", args.manifest.display());
    Ok(())
}
