//! A worker: one task servicing its share of the publishers. It wakes when the earliest of
//! them has something due (a frame, an audio packet, an `rtc` timeout), but at most every
//! [`POLL`] to pick up datagrams, and never more often than every [`MIN_SLEEP`], so work is
//! batched: the wake-up rate does not grow with the number of publishers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::publisher::{Phase, Publisher, Tally};
use super::stats::Histogram;

const POLL: Duration = Duration::from_millis(5);
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// Live counters shared by every worker of a batch (updated once per wake-up).
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) video_packets: AtomicU64,
    pub(crate) audio_packets: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) keyframe_requests: AtomicU64,
    pub(crate) nacks: AtomicU64,
}

impl Live {
    fn add(&self, t: &Tally) {
        let add = |a: &AtomicU64, v: u64| {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.video_packets, t.video_packets);
        add(&self.audio_packets, t.audio_packets);
        add(&self.bytes, t.bytes);
        add(&self.send_errors, t.send_errors);
        add(&self.keyframe_requests, t.keyframe_requests);
        add(&self.nacks, t.nacks);
    }
}

/// What a worker is told.
pub(crate) enum Command {
    Add(Box<Publisher>),
    /// Stop: close every publisher politely, or (`vanish`) just stop sending.
    Stop {
        vanish: bool,
    },
}

/// Runs until told to stop; returns the connect times (POST -> connected) it saw.
pub(crate) async fn run(mut rx: mpsc::UnboundedReceiver<Command>, live: Arc<Live>) -> Histogram {
    let mut publishers: Vec<Publisher> = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut connect = Histogram::default();
    let mut stop = None;
    loop {
        let now = Instant::now();
        let mut tally = Tally::default();
        let mut next = now + POLL;
        for p in &mut publishers {
            let before = p.phase;
            if let Some(due) = p.service(now, &mut buf, &mut tally) {
                next = next.min(due);
            }
            match (before, p.phase) {
                (Phase::Connecting, Phase::Connected) => {
                    live.connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(after) = p.connected_after {
                        connect.record(after.as_micros() as u64);
                    }
                }
                (Phase::Connecting, Phase::Failed) => {
                    live.failed.fetch_add(1, Ordering::Relaxed);
                }
                (Phase::Connected, Phase::Failed) => {
                    live.failed.fetch_add(1, Ordering::Relaxed);
                    live.connected.fetch_sub(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        publishers.retain(|p| p.phase != Phase::Failed);
        live.add(&tally);
        if let Some(vanish) = stop {
            let mut tally = Tally::default();
            for p in publishers.drain(..) {
                p.close(vanish, &mut tally);
            }
            live.add(&tally);
            return connect;
        }
        let sleep = next.max(now + MIN_SLEEP);
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Add(p)) => add(&mut publishers, *p, &live),
                Some(Command::Stop { vanish }) => stop = Some(vanish),
                None => stop = Some(true),
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(sleep)) => {}
        }
        // Take everything else queued without waiting.
        while let Ok(command) = rx.try_recv() {
            match command {
                Command::Add(p) => add(&mut publishers, *p, &live),
                Command::Stop { vanish } => stop = Some(vanish),
            }
        }
    }
}

/// Takes a publisher on; one that starts connected (plain RTP) is counted at once.
fn add(publishers: &mut Vec<Publisher>, p: Publisher, live: &Live) {
    if p.phase == Phase::Connected {
        live.connected.fetch_add(1, Ordering::Relaxed);
    }
    publishers.push(p);
}
