//! `whipgate-load`: drive N WHIP publishers at a gateway and report what arrived
//! (`whipgate-load -n 500 --grpc http://127.0.0.1:50051`), run a bare UDP relay for the
//! benchmark's floor (`whipgate-load relay`), or soak a gateway (`whipgate-load soak`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use whipgate_load::{LoadConfig, Report, relay::Relay, soak};

#[derive(Parser)]
#[command(
    name = "whipgate-load",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadConfig,
}

// Parsed once at start: the size of the larger variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// A bare UDP relay (recv -> send) for the benchmark's floor; prints its ports as JSON.
    Relay {
        /// Where video and audio go: "VIDEO_ADDR,AUDIO_ADDR".
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<SocketAddr>,
        #[arg(long, default_value = "127.0.0.1")]
        bind_ip: IpAddr,
        /// Exit after this many seconds.
        #[arg(long, default_value_t = 3600.0)]
        duration: f64,
    },
    /// Publish/DELETE and publish/vanish cycles while sampling the gateway process.
    Soak(Box<soak::SoakConfig>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,rtc=error,rtc_dtls=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Relay {
            to,
            bind_ip,
            duration,
        }) => {
            let [video_to, audio_to] = to[..] else {
                anyhow::bail!("--to wants two addresses: VIDEO,AUDIO");
            };
            let relay = Relay::start(bind_ip, video_to, audio_to).context("starting the relay")?;
            let [video, audio] = relay.addrs();
            println!(
                "{}",
                serde_json::json!({ "video": video.to_string(), "audio": audio.to_string(), "pid": std::process::id() })
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(duration)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("relay forwarded {} datagrams", relay.forwarded());
        }
        Some(Command::Soak(cfg)) => {
            let json = cfg.load.json;
            let report = soak::run(*cfg).await.context("soak")?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            }
        }
        None => {
            let cfg = cli.load;
            let json = cfg.json;
            let report = whipgate_load::run(cfg).await.context("load run")?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print_summary(&report);
            }
        }
    }
    Ok(())
}

fn print_summary(r: &Report) {
    println!(
        "publishers      {} requested, {} created (201), {} connected, {} failed",
        r.publishers, r.created, r.connected, r.failed
    );
    if r.post_retries > 0 {
        println!(
            "POST retries    {} (429/503 with Retry-After)",
            r.post_retries
        );
    }
    if !r.post_errors.is_empty() {
        println!("POST errors     {:?}", r.post_errors);
    }
    println!(
        "handshake       POST->201 p50 {:.1} ms, p99 {:.1} ms; POST->connected p50 {:.1} ms, p99 {:.1} ms; {:.0} setups/s",
        r.handshake.p50_ms,
        r.handshake.p99_ms,
        r.connect.p50_ms,
        r.connect.p99_ms,
        r.setups_per_second
    );
    println!(
        "sent ({:.1} s)    {} video + {} audio packets, {} send errors, {} keyframe requests, {} NACKs; generator {:.2} cores",
        r.window_s,
        r.sent.video_packets,
        r.sent.audio_packets,
        r.sent.send_errors,
        r.sent.keyframe_requests,
        r.sent.nacks,
        r.generator_cores
    );
    if let Some(s) = &r.sink {
        println!(
            "sink            {} packets from {} SSRCs, {} lost ({:.3} %), {} kernel drops, {} keyframes; sink {:.2} cores",
            s.packets, s.ssrcs, s.lost, s.loss_percent, s.kernel_drops, s.keyframes, r.sink_cores
        );
        println!(
            "latency         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms
        );
    }
}
