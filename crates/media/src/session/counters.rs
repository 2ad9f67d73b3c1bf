//! What a session counts as it goes, lock-free, for whoever reads it (the gateway's registry
//! for its views and statistics), and the per-ingest limits it enforces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-ingest limits; `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// A session above this over one stats interval is closed (reason: bitrate cap).
    pub max_bitrate_bps: Option<u64>,
    /// Sessions are closed after this long.
    pub max_session: Option<Duration>,
}

/// Counters a session's media task updates and the registry reads (lock-free).
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Video RTP packets received.
    pub video_packets: AtomicU64,
    /// Video RTP payload+header bytes received.
    pub video_bytes: AtomicU64,
    /// Audio RTP packets received.
    pub audio_packets: AtomicU64,
    /// Audio RTP bytes received.
    pub audio_bytes: AtomicU64,
    /// Packets sent to a UDP target.
    pub packets_forwarded: AtomicU64,
    /// Packets lost as seen by the receiver statistics.
    pub packets_lost: AtomicU64,
    /// NACKs sent to the publisher.
    pub nacks_sent: AtomicU64,
    /// PLIs sent to the publisher.
    pub plis_sent: AtomicU64,
    /// Video keyframes received.
    pub keyframes: AtomicU64,
    /// Holes in a received stream filled later (a retransmission, a RED copy).
    pub packets_repaired: AtomicU64,
    /// Holes given up (media lost for good; the consumer's stream has a gap there).
    pub packets_unrepaired: AtomicU64,
    /// Packets received twice and dropped (repeated retransmissions, RTX probes).
    pub duplicates_dropped: AtomicU64,
    /// Audio packets restored from a redundant RED block.
    pub red_recovered: AtomicU64,
}

/// A copy of [`SessionCounters`] at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// See [`SessionCounters`].
    pub video_packets: u64,
    /// See [`SessionCounters`].
    pub video_bytes: u64,
    /// See [`SessionCounters`].
    pub audio_packets: u64,
    /// See [`SessionCounters`].
    pub audio_bytes: u64,
    /// See [`SessionCounters`].
    pub packets_forwarded: u64,
    /// See [`SessionCounters`].
    pub packets_lost: u64,
    /// See [`SessionCounters`].
    pub nacks_sent: u64,
    /// See [`SessionCounters`].
    pub plis_sent: u64,
    /// See [`SessionCounters`].
    pub keyframes: u64,
    /// See [`SessionCounters`].
    pub packets_repaired: u64,
    /// See [`SessionCounters`].
    pub packets_unrepaired: u64,
    /// See [`SessionCounters`].
    pub duplicates_dropped: u64,
    /// See [`SessionCounters`].
    pub red_recovered: u64,
}

impl SessionCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            video_packets: r(&self.video_packets),
            video_bytes: r(&self.video_bytes),
            audio_packets: r(&self.audio_packets),
            audio_bytes: r(&self.audio_bytes),
            packets_forwarded: r(&self.packets_forwarded),
            packets_lost: r(&self.packets_lost),
            nacks_sent: r(&self.nacks_sent),
            plis_sent: r(&self.plis_sent),
            keyframes: r(&self.keyframes),
            packets_repaired: r(&self.packets_repaired),
            packets_unrepaired: r(&self.packets_unrepaired),
            duplicates_dropped: r(&self.duplicates_dropped),
            red_recovered: r(&self.red_recovered),
        }
    }
}

impl CountersSnapshot {
    /// Bytes received, both kinds.
    pub fn total_bytes(&self) -> u64 {
        self.video_bytes + self.audio_bytes
    }
}
