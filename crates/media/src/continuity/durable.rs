//! Output streams across gateway restarts: what is checkpointed, and how a restored stream
//! continues so that a consumer that kept running never sees it go backwards.
//!
//! The packet path writes nothing: the store checkpoints each stream's SSRC, last sequence
//! number, last timestamp and when it was sent (wall clock), plus the packet rate observed
//! between checkpoints. Packets sent after the last checkpoint are unknown, so a restored stream
//! jumps its sequence numbers forward by a margin: the observed rate times the time since the
//! checkpoint (at most [`RESTORE_WINDOW`]) plus [`RESTORE_FIXED_MARGIN`], never more than
//! [`RESTORE_MAX_JUMP`] (a larger jump would look like going backwards, modulo 2^16).
//! Timestamps advance by the wall-clock gap since the checkpointed packet, as on any reconnect.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Last, OutputStream};

/// Packets always added to a restored stream's sequence numbers.
pub const RESTORE_FIXED_MARGIN: u16 = 100;
/// Longest stretch after a checkpoint the rate-based margin covers. Checkpoints run every
/// second, so a gateway that died was at most about a second past its last one; the window is
/// generous for a stalled disk.
pub const RESTORE_WINDOW: Duration = Duration::from_secs(10);
/// Upper bound of the jump: a quarter of the sequence space.
pub const RESTORE_MAX_JUMP: u16 = 0x4000;

/// The last packet an output stream sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOut {
    /// Output sequence number.
    pub seq: u16,
    /// Output RTP timestamp.
    pub ts: u32,
    /// When it was sent, Unix milliseconds.
    pub at_unix_ms: u64,
}

/// An output stream's durable state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputState {
    /// SSRC the consumer sees.
    pub ssrc: u32,
    /// The newest packet sent, if any.
    #[serde(default)]
    pub last: Option<LastOut>,
    /// Output packets per second observed between the last two checkpoints that saw traffic.
    #[serde(default)]
    pub packets_per_sec: f64,
}

impl OutputState {
    /// Packets per second between `previous` and `self` (same stream, both with traffic).
    pub fn rate_since(&self, previous: &OutputState) -> Option<f64> {
        let (now, before) = (self.last?, previous.last?);
        let packets = now.seq.wrapping_sub(before.seq);
        let millis = now.at_unix_ms.checked_sub(before.at_unix_ms)?;
        (self.ssrc == previous.ssrc && packets > 0 && packets < 0x8000 && millis > 0)
            .then(|| f64::from(packets) * 1000.0 / millis as f64)
    }
}

/// Sequence numbers a restored stream skips: `rate × min(since_checkpoint, window) + fixed`,
/// at most [`RESTORE_MAX_JUMP`].
pub fn restart_margin(packets_per_sec: f64, since_checkpoint: Duration) -> u16 {
    let window = since_checkpoint.min(RESTORE_WINDOW).as_secs_f64();
    let rate = if packets_per_sec.is_finite() {
        packets_per_sec.max(0.0)
    } else {
        0.0
    };
    let by_rate = (rate * window).ceil().min(f64::from(RESTORE_MAX_JUMP)) as u16;
    by_rate
        .saturating_add(RESTORE_FIXED_MARGIN)
        .min(RESTORE_MAX_JUMP)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OutputStream {
    /// The durable state at `now` (`wall` is the same instant on the wall clock); the packet
    /// rate is left at 0 for the checkpointer to fill in.
    pub fn state(&self, now: Instant, wall: SystemTime) -> OutputState {
        OutputState {
            ssrc: self.ssrc,
            last: self.last.map(|l| LastOut {
                seq: l.seq,
                ts: l.ts,
                at_unix_ms: unix_ms(wall - now.saturating_duration_since(l.at)),
            }),
            packets_per_sec: 0.0,
        }
    }

    /// A stream continuing `state`, checkpointed at `checkpoint_at`, in a new process: same
    /// SSRC; the next input re-bases past the margin, with timestamps advanced by the gap.
    pub fn restore(
        state: &OutputState,
        checkpoint_at: SystemTime,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut stream = OutputStream {
            ssrc: state.ssrc,
            ..OutputStream::new()
        };
        if let Some(last) = state.last {
            let since_checkpoint = wall.duration_since(checkpoint_at).unwrap_or_default();
            let margin = restart_margin(state.packets_per_sec, since_checkpoint);
            let sent_at = UNIX_EPOCH + Duration::from_millis(last.at_unix_ms);
            let gap = wall.duration_since(sent_at).unwrap_or_default();
            let (at, carry) = match now.checked_sub(gap) {
                Some(at) => (at, Duration::ZERO),
                // Less uptime than downtime (the host rebooted): carry the rest.
                None => (now, gap),
            };
            stream.last = Some(Last {
                seq: last.seq.wrapping_add(margin),
                ts: last.ts,
                at,
            });
            stream.carry = carry;
        }
        stream
    }
}

#[cfg(test)]
mod tests;
