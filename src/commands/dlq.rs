//! `weir dlq list|show|tail|replay`.

use anyhow::Context;
use rdkafka::Offset;
use weir::dlq::{self, DeadLetterRecord, ReplayOptions};

use crate::cli::{DlqArgs, DlqCommand};

fn row(r: &DeadLetterRecord) -> String {
    let (topic, p, o) = r.source();
    let mut msg = r.message();
    if msg.chars().count() > 60 {
        msg = msg.chars().take(57).collect::<String>() + "...";
    }
    let key = r
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_else(|| "-".into());
    let when = chrono::DateTime::from_timestamp_millis(r.timestamp_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    format!(
        "{:<9} {:<19} {:<15} {:<28} {:<14} {msg}",
        format!("{}@{}", r.partition, r.offset),
        when,
        r.kind(),
        format!("{topic}[{p}]@{o}"),
        key
    )
}

/// One record as a JSON line or a table row.
fn print(json: bool, r: &DeadLetterRecord) {
    if json {
        println!("{}", r.to_json());
    } else {
        println!("{}", row(r));
    }
}

fn header() -> String {
    format!(
        "{:<9} {:<19} {:<15} {:<28} {:<14} message",
        "dlq", "failed at (UTC)", "kind", "source", "key"
    )
}

/// `30m`, `2h`, `1d`, `45s` ago, or an RFC 3339 time, as ms since the epoch.
fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .with_context(|| format!("{s:?} is neither RFC 3339 nor an age like 30m, 2h, 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("{s:?}: the unit of an age is s, m, h or d"),
    };
    Ok(chrono::Utc::now().timestamp_millis() - secs * 1000)
}

pub async fn dlq(args: DlqArgs) -> anyhow::Result<()> {
    let brokers = args
        .brokers
        .clone()
        .context("--brokers (or WEIR_BROKERS) is required")?;
    let topic = args.topic.clone();
    tokio::task::spawn_blocking(move || run(&brokers, &topic, args.command)).await?
}

fn run(brokers: &str, topic: &str, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { json, kind } => {
            if !json {
                println!("{}", header());
            }
            let mut n = 0;
            dlq::read(brokers, topic, Offset::Beginning, false, |r| {
                if kind.as_deref().is_none_or(|k| r.kind() == k) {
                    n += 1;
                    print(json, &r);
                }
                true
            })?;
            if !json {
                println!("{n} dead letter(s) in {topic}");
            }
        }
        DlqCommand::Show {
            offset,
            partition,
            json,
        } => {
            let r = dlq::show(brokers, topic, partition, offset)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.to_json())?);
                return Ok(());
            }
            let (t, p, o) = r.source();
            println!("dead letter   {topic}[{}]@{}", r.partition, r.offset);
            println!("kind          {}", r.kind());
            println!("message       {}", r.message());
            println!("source        {t}[{p}]@{o}");
            println!(
                "key           {}",
                r.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_else(|| "(none)".into())
            );
            println!("replay count  {}", r.replay_count());
            println!("headers");
            for (k, v) in &r.headers {
                println!(
                    "  {k}: {}",
                    v.as_ref()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| "(null)".into())
                );
            }
            match r.original() {
                Ok(o) => match o.value {
                    None => println!("original      (null value)"),
                    Some(v) => match serde_json::from_slice::<serde_json::Value>(&v) {
                        Ok(j) => println!("original\n{}", serde_json::to_string_pretty(&j)?),
                        Err(_) => println!(
                            "original      {} bytes: {:?}",
                            v.len(),
                            String::from_utf8_lossy(&v)
                        ),
                    },
                },
                Err(why) => println!("original      not available: {why}"),
            }
        }
        DlqCommand::Tail {
            json,
            from_beginning,
        } => {
            if !json {
                println!("{}", header());
            }
            let from = if from_beginning {
                Offset::Beginning
            } else {
                Offset::End
            };
            dlq::read(brokers, topic, from, true, |r| {
                print(json, &r);
                true
            })?;
        }
        DlqCommand::Replay {
            kind,
            since,
            until,
            from_offset,
            dry_run,
            max_replays,
        } => {
            let opts = ReplayOptions {
                kind,
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                from_offset,
                dry_run,
                max_replays,
            };
            let s = dlq::replay(brokers, topic, &opts)?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!("{topic}: examined {}, {verb} {}, filtered out {}, refused by the loop guard {} (max {max_replays}), not replayable {}", s.examined, s.replayed, s.filtered, s.loop_guard, s.unreplayable);
            for (k, n) in &s.by_kind {
                println!("  kind {k}: {n}");
            }
            for (t, n) in &s.by_topic {
                println!("  to {t}: {n}");
            }
        }
    }
    Ok(())
}
