//! The `weir` binary: parse arguments, set up tracing, call into the library.
//! The only place that uses `anyhow`.

mod cli;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc for every allocation in the process, RocksDB's and librdkafka's
/// included (unprefixed `malloc`). Measured (state/benches/memory.rs): with
/// glibc's allocator a dedup store's process grew from 47 MiB at 1,000,000
/// keys to 82 MiB at 10,000,000 (1.73×), 25 MiB of it freed compaction
/// memory the heap kept; with jemalloc and the settings below, 38 → 46 MiB.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: a background thread hands freed pages back to the
/// OS after a second (the default keeps them ten seconds and only purges
/// on allocation), so RSS follows what is live.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[export_name = "malloc_conf"]
static MALLOC_CONF: &[u8; 63] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter {:?} ({e}); using info", cli.log);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
