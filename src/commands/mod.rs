//! One file per subcommand.

mod bench;
mod broker;
mod demo;
mod describe;
mod dlq;
mod load;
mod orders;
mod run;
mod samples;
mod topics;

use crate::cli::Command;

/// Runs a subcommand.
pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Broker(args) => broker::broker(args).await,
        Command::Describe(args) => describe::describe(args),
        Command::Orders(crate::cli::OrdersCommand::Serve(args)) => orders::serve(args).await,
        Command::Load(args) => tokio::task::spawn_blocking(move || load::load(args)).await?,
        Command::Dlq(args) => dlq::dlq(args).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Bench(args) => tokio::task::spawn_blocking(move || bench::bench(args)).await?,
        Command::BenchStoreMemory(args) => {
            tokio::task::spawn_blocking(move || bench::store_memory(args)).await?
        }
        Command::Topics(crate::cli::TopicsCommand::Create(args)) => topics::create(args).await,
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// *called*, not when first awaited: call it before slow start-up work, and
/// a signal that arrives meanwhile still stops the command cleanly (instead
/// of the default action killing the process mid-start).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {},
                _ = wait(term) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
