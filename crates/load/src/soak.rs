//! The soak: thousands of publish/DELETE cycles and publish/vanish cycles (the publisher just
//! stops; the gateway's media timeout ends the session), `--batch` publishers at a time, while
//! sampling the gateway process (RSS, file descriptors, threads from `/proc`, tasks and live
//! publishers from its `/metrics`). What leaks shows up as a column that keeps growing.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::engine::Engine;
use super::stats::proc_sample;
use super::{LoadConfig, LoadError};

/// `whipgate-load soak` options.
#[derive(Clone, Debug, clap::Args)]
pub struct SoakConfig {
    #[command(flatten)]
    pub load: LoadConfig,
    /// Publish/DELETE cycles.
    #[arg(long, default_value_t = 10_000)]
    pub cycles: u32,
    /// Publish/vanish cycles (run the gateway with a short --media-timeout-secs).
    #[arg(long, default_value_t = 2_000)]
    pub vanish_cycles: u32,
    /// Publishers at a time.
    #[arg(long, default_value_t = 100)]
    pub batch: u32,
    /// Seconds of media per cycle once connected.
    #[arg(long, default_value_t = 1.0)]
    pub hold: f64,
    /// The gateway's process id, sampled from /proc.
    #[arg(long)]
    pub pid: u32,
    /// The gateway's metrics URL (for `whipgate_tasks` and `whipgate_live_publishers`).
    #[arg(long)]
    pub metrics_url: String,
    /// Take a sample every this many batches.
    #[arg(long, default_value_t = 5)]
    pub sample_every: u32,
}

/// One row of the soak's table.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    pub elapsed_s: f64,
    pub delete_cycles: u32,
    pub vanish_cycles: u32,
    pub failures: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub tasks: Option<u64>,
    pub live: Option<u64>,
}

/// The soak's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub failures: u64,
}

/// Reads one unlabelled gauge from a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}

struct Sampler {
    http: reqwest::Client,
    cfg: SoakConfig,
    started: Instant,
}

impl Sampler {
    async fn gauges(&self) -> (Option<u64>, Option<u64>) {
        let text = match self.http.get(&self.cfg.metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        (
            gauge(&text, "whipgate_tasks"),
            gauge(&text, "whipgate_live_publishers"),
        )
    }

    async fn sample(&self, delete_cycles: u32, vanish_cycles: u32, failures: u64) -> Sample {
        let proc = proc_sample(self.cfg.pid).unwrap_or_default();
        let (tasks, live) = self.gauges().await;
        Sample {
            elapsed_s: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            delete_cycles,
            vanish_cycles,
            failures,
            rss_kib: proc.rss_kib,
            fds: proc.fds,
            threads: proc.threads,
            tasks,
            live,
        }
    }

    /// Waits until the gateway reports no live publisher (bounded).
    async fn wait_idle(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if self.gauges().await.1 == Some(0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// Prints one sample as a table row on stderr.
fn print_row(s: &Sample) {
    eprintln!(
        "{:>8.1} {:>7} {:>7} {:>6} {:>9} {:>5} {:>7} {:>6} {:>5}",
        s.elapsed_s,
        s.delete_cycles,
        s.vanish_cycles,
        s.failures,
        s.rss_kib,
        s.fds,
        s.threads,
        s.tasks.map_or("-".into(), |t| t.to_string()),
        s.live.map_or("-".into(), |t| t.to_string()),
    );
}

/// Runs the soak.
pub async fn run(mut cfg: SoakConfig) -> Result<SoakReport, LoadError> {
    cfg.load.sink = true;
    cfg.load.publishers = cfg.batch;
    let batch = cfg.batch.max(1);
    let engine = Engine::new(cfg.load.clone())?;
    // Two sets of ingests: vanished sessions may still hold theirs while the next batch runs.
    engine.register(0..2 * batch).await?;
    let sampler = Sampler {
        http: reqwest::Client::new(),
        cfg: cfg.clone(),
        started: Instant::now(),
    };
    let mut report = SoakReport::default();
    eprintln!(" elapsed  delete  vanish  fails   rss_kib   fds threads  tasks  live");
    let first = sampler.sample(0, 0, 0).await;
    print_row(&first);
    report.samples.push(first);
    let (mut deleted, mut vanished, mut n_batches) = (0u32, 0u32, 0u32);
    let hold = Duration::from_secs_f64(cfg.hold.max(0.0));
    while deleted < cfg.cycles || vanished < cfg.vanish_cycles {
        let vanish = deleted >= cfg.cycles;
        let left = if vanish {
            cfg.vanish_cycles - vanished
        } else {
            cfg.cycles - deleted
        };
        let n = left.min(batch);
        let ids = if vanish { batch..batch + n } else { 0..n };
        let b = engine.start(ids).await;
        let created = b.created() as u32;
        b.wait_settled(created, Duration::from_secs(15)).await;
        tokio::time::sleep(hold).await;
        let c = b.counters();
        // Not connected at the end of the hold: refused, failed or never up.
        report.failures += u64::from(n).saturating_sub(c.connected);
        b.finish(&engine, vanish).await;
        if vanish {
            vanished += n;
            // Each vanish batch ends by the gateway's media timeout before the ids come back.
            if !sampler.wait_idle(Duration::from_secs(60)).await {
                report.failures += 1;
            }
        } else {
            deleted += n;
        }
        n_batches += 1;
        if n_batches.is_multiple_of(cfg.sample_every.max(1)) {
            let s = sampler.sample(deleted, vanished, report.failures).await;
            print_row(&s);
            report.samples.push(s);
        }
    }
    sampler.wait_idle(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = sampler.sample(deleted, vanished, report.failures).await;
    print_row(&last);
    report.samples.push(last);
    Ok(report)
}

#[cfg(test)]
mod tests;
