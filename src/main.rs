//! The `whipgate` binary: parse configuration, init logging, run until SIGINT/SIGTERM.
//! `whipgate ctl ...` is the control-plane client instead ([`whipgate::ctl`]).

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use whipgate::Gateway;
use whipgate::config::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "ctl") {
        args.next();
        std::process::exit(whipgate::ctl::main(args).await);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Cli::parse()
        .into_config()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let gateway = Gateway::bind(config).await.context("binding listeners")?;
    let bound = gateway.bound();
    // One machine-readable line on stdout, for scripts that start whipgate on port 0.
    println!(
        "{}",
        serde_json::json!({
            "http": bound.http.to_string(),
            "grpc": bound.grpc.to_string(),
            "udp": bound.udp.to_string(),
            "tcp": bound.tcp.map(|a| a.to_string()),
        })
    );
    gateway.run(shutdown_signal()).await.context("running")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "listening for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "listening for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
