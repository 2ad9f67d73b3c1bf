//! whipgate benchmarks: forwarding cost, memory per session, publish latency.
//!
//! Runs the release `whipgate` binary as a child process (so its CPU and memory are its own),
//! publishes with real webrtc-rs publishers from this process, and compares the gateway's CPU
//! per forwarded packet with a reference measured in the same run: a plain UDP relay (this
//! binary re-executed with `--relay`) forwarding the same packet rate without WebRTC.
//!
//! ```text
//! cargo bench --bench forward              # defaults: 16 publishers, 10 s
//! cargo bench --bench forward -- --publishers 32 --seconds 20
//! ```

#[path = "../tests/it/publisher.rs"]
#[allow(dead_code, unreachable_pub)]
mod publisher;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use publisher::{MediaRate, Publisher, Video};
use tokio::net::UdpSocket;
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

const VIDEO_PAYLOAD: usize = 1100;
const VIDEO_INTERVAL: Duration = Duration::from_millis(5); // 200 packets/s per publisher

struct Args {
    publishers: usize,
    seconds: u64,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| -> Option<u64> {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    Args {
        publishers: value("--publishers").map_or(16, |v| v as usize),
        seconds: value("--seconds").unwrap_or(10).max(2),
    }
}

/// A child process killed on drop.
/// A child process and its scratch data dir: killed, reaped and removed on drop.
struct Proc(Child, Option<tempfile::TempDir>);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // The data dir goes only once the process is gone.
        drop(self.1.take());
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit(')').next().context("stat format")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// Counts datagrams arriving at a socket.
async fn sink() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while socket.recv_from(&mut buf).await.is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok((addr, count))
}

fn start_gateway() -> Result<(Proc, serde_json::Value)> {
    // WHIPGATE_BENCH_BIN measures another build (e.g. the previous release) in the same way.
    let exe = std::env::var("WHIPGATE_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_whipgate").into());
    // A scratch data dir, by environment so that builds without persistence ignore it.
    let data = tempfile::tempdir()?;
    let mut child = Command::new(&exe)
        .env("WHIPGATE_DATA_DIR", data.path())
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--udp-listen",
            "127.0.0.1:0",
        ])
        .args(["--max-publishers", "10000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((Proc(child, Some(data)), serde_json::from_str(&line)?))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench_gateway(a: &Args) -> Result<(f64, f64)> {
    let (gateway, bound) = start_gateway()?;
    let pid = gateway.0.id();
    let http = format!("http://{}", bound["http"].as_str().context("http")?);
    let mut grpc = IngestControlClient::connect(format!(
        "http://{}",
        bound["grpc"].as_str().context("grpc")?
    ))
    .await?;
    let client = reqwest::Client::new();
    let (video_sink, forwarded) = sink().await?;
    let rss_idle = rss_kib(pid)?;

    // Publish latency, sequentially, and keep every publisher connected.
    let mut publishers = Vec::new();
    let (mut to_answer, mut to_connected) = (Vec::new(), Vec::new());
    for i in 0..a.publishers {
        let id = format!("bench{i}");
        grpc.register_ingest(pb::RegisterIngestRequest {
            ingest_id: id.clone(),
            video_target: video_sink.to_string(),
            ..Default::default()
        })
        .await?;
        let (mut p, offer) = Publisher::new(Some(Video::H264), false).await?;
        let t0 = Instant::now();
        let r = client
            .post(format!("{http}/whip/{id}"))
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await?;
        if r.status() != 201 {
            bail!("publish {id}: {}", r.status());
        }
        let answer = r.text().await?;
        to_answer.push(t0.elapsed().as_secs_f64() * 1000.0);
        p.set_answer(answer).await?;
        p.connected(Duration::from_secs(10)).await?;
        to_connected.push(t0.elapsed().as_secs_f64() * 1000.0);
        publishers.push(p);
    }
    let rss_connected = rss_kib(pid)?;
    to_answer.sort_by(f64::total_cmp);
    to_connected.sort_by(f64::total_cmp);
    println!("publish latency over {} publishes:", a.publishers);
    println!(
        "  POST -> 201        median {:6.2} ms   p95 {:6.2} ms",
        percentile(&to_answer, 0.5),
        percentile(&to_answer, 0.95)
    );
    println!(
        "  POST -> connected  median {:6.2} ms   p95 {:6.2} ms",
        percentile(&to_connected, 0.5),
        percentile(&to_connected, 0.95)
    );
    println!(
        "memory: {rss_idle} KiB idle, {rss_connected} KiB with {} sessions -> {:.0} KiB per session",
        a.publishers,
        (rss_connected.saturating_sub(rss_idle)) as f64 / a.publishers as f64
    );

    let rate = MediaRate {
        video_interval: VIDEO_INTERVAL,
        video_payload: VIDEO_PAYLOAD,
        padding_every: None,
    };
    for p in &mut publishers {
        p.start_media_with(rate).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up, excluded from the measurement
    let (cpu0, n0, t0) = (
        cpu_seconds(pid)?,
        forwarded.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let (cpu1, n1, elapsed) = (
        cpu_seconds(pid)?,
        forwarded.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let packets = (n1 - n0) as f64;
    let pps = packets / elapsed.as_secs_f64();
    let cpu = cpu1 - cpu0;
    let rss_loaded = rss_kib(pid)?;
    println!(
        "gateway: {pps:8.0} packets/s forwarded, CPU {:5.1}% of a core, {:6.2} us CPU per packet, RSS {rss_loaded} KiB",
        cpu / elapsed.as_secs_f64() * 100.0,
        cpu / packets * 1e6
    );
    for p in publishers {
        p.close().await;
    }
    Ok((pps, cpu / packets * 1e6))
}

/// The reference: a plain UDP relay process forwarding the same packet rate.
async fn bench_relay(pps_target: f64, seconds: u64) -> Result<f64> {
    let (out_sink, forwarded) = sink().await?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(&exe)
        .args(["--relay", &out_sink.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let relay = Proc(child, None);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let relay_addr: SocketAddr = line.trim().parse()?;
    let pid = relay.0.id();
    let sender = UdpSocket::bind("127.0.0.1:0").await?;
    let packet = vec![0x80u8; 12 + VIDEO_PAYLOAD + 1];
    let interval = Duration::from_secs_f64(1.0 / pps_target.max(1.0));
    let stop = Instant::now() + Duration::from_secs(seconds + 1);
    let measure = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, n0, t0) = (
            cpu_seconds(pid)?,
            forwarded.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(seconds - 1)).await;
        let (cpu1, n1) = (cpu_seconds(pid)?, forwarded.load(Ordering::Relaxed));
        let packets = (n1 - n0) as f64;
        let us = (cpu1 - cpu0) / packets * 1e6;
        println!(
            "reference UDP relay: {:8.0} packets/s, {:6.2} us CPU per packet",
            packets / t0.elapsed().as_secs_f64(),
            us
        );
        anyhow::Ok(us)
    });
    let mut tick = tokio::time::interval(interval);
    while Instant::now() < stop {
        tick.tick().await;
        sender.send_to(&packet, relay_addr).await?;
    }
    let us = measure.await??;
    drop(relay);
    Ok(us)
}

/// `--relay <target>`: receive on an ephemeral port, print it, forward everything to target.
fn relay(target: &str) -> Result<()> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    println!("{}", socket.local_addr()?);
    let target: SocketAddr = target.parse()?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], target)?;
    }
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(i) = argv.iter().position(|a| a == "--relay") {
        return relay(argv.get(i + 1).context("--relay <target>")?);
    }
    if !argv.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets too: only `cargo bench` measures.
        println!("forward benchmark: run it with `cargo bench --bench forward`");
        return Ok(());
    }
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!(
            "whipgate forward benchmark: {} H264 publishers x {} packets/s x {} B, {} s",
            a.publishers,
            (1.0 / VIDEO_INTERVAL.as_secs_f64()) as u64,
            VIDEO_PAYLOAD,
            a.seconds
        );
        let (pps, gateway_us) = bench_gateway(&a).await?;
        let relay_us = bench_relay(pps, a.seconds).await?;
        println!("ratio: whipgate spends {:.1}x the CPU per packet of a plain UDP relay (SRTP decrypt, RTCP, interceptors, rewrite)", gateway_us / relay_us);
        anyhow::Ok(())
    })
}
