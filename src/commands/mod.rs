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
        Command::Topics(crate::cli::TopicsCommand::Create(args)) => topics::create(args).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
