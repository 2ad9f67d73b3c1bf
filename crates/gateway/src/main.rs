//! The `whipgate` binary: parse configuration, init logging, run until SIGINT/SIGTERM;
//! SIGHUP re-reads the TLS certificates and the signed-token keys.
//! `whipgate ctl ...` is the control-plane client instead ([`whipgate_ctl`]).

use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use whipgate::{Config, Gateway};

/// Log filter without `RUST_LOG`. webrtc-rs logs each session's state changes at info (six
/// lines per publisher, written while its offer is answered); whipgate logs sessions itself.
/// Its ICE agent warns about checks it discards (an old ufrag's after an ICE restart, an
/// answer to a check it no longer tracks): chatter, not faults; a session that ICE really
/// fails ends with its reason in whipgate's own log.
const DEFAULT_LOG: &str = "info,rtc=warn,rtc_ice=error";

/// jemalloc instead of glibc's malloc. Answering an offer is allocation-heavy (about 40 % of
/// webrtc-rs' offer/answer is malloc/free), and a fresh glibc arena page-faults on first use.
/// In alternated runs on fresh gateways, 50 POSTs at once: p50 9.2 -> 7.6 ms, the gateway's
/// own mean 3.7 -> 2.6 ms; RSS per session lower at 50 publishers (238 -> 202 KiB).
#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "ctl") {
        args.next();
        std::process::exit(whipgate_ctl::main(args).await);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line with the whole cause chain (it names the flag, address or file), and
            // no backtrace even with RUST_BACKTRACE set: a refused start is not a crash.
            eprintln!("whipgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Configuration -> bind -> run until a signal.
async fn run() -> anyhow::Result<()> {
    let config = Config::from_cli()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let gateway = Gateway::bind(config).await.context("starting")?;
    let bound = gateway.bound();
    // Before the ready line: a SIGHUP from then on reloads instead of killing the process.
    let reload = reload_on_sighup(gateway.reloader());
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
    reload.abort();
    Ok(())
}

/// Reloads the TLS certificates and the signed-token keys on each SIGHUP (a bad file keeps
/// what was loaded, logged by the handle), for `systemctl reload`.
#[cfg(unix)]
fn reload_on_sighup(reload: whipgate::Reloader) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered here, not in the task, so it is in place when this returns.
    let hangups = signal(SignalKind::hangup());
    tokio::spawn(async move {
        let mut hangups = match hangups {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "listening for SIGHUP");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading TLS certificates and signed-token keys");
            // Failures are logged; what was loaded stays.
            let _ = reload.reload();
        }
    })
}

#[cfg(not(unix))]
fn reload_on_sighup(reload: whipgate::Reloader) -> tokio::task::JoinHandle<()> {
    drop(reload);
    tokio::spawn(async {})
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
