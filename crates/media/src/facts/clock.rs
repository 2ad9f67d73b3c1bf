//! Rates from RTP timestamps: frame rate over a window of recent frame starts, the keyframe
//! interval, and the reordering signal of B-frames. Timestamps are unwrapped to 64 bits so
//! the 32-bit wrap (every 13 hours at 90 kHz) changes nothing.

use std::time::Duration;

/// Frame starts kept for the frame rate: two seconds at 30 fps, one at 60.
const FRAME_WINDOW: usize = 64;
/// Fewer frames than this give no rate yet.
const MIN_FRAMES: usize = 5;
/// Backward steps needed before reordering counts as B-frames.
const REORDER_EVIDENCE: u32 = 2;

/// Unwraps RTP timestamps and remembers the start timestamps of recent frames.
#[derive(Debug)]
pub(super) struct FrameClock {
    last: Option<(u32, i64)>,
    highest_seq: Option<u16>,
    frame_ts: Option<u32>,
    starts: [i64; FRAME_WINDOW],
    count: usize,
    next: usize,
}

impl Default for FrameClock {
    fn default() -> Self {
        FrameClock {
            last: None,
            highest_seq: None,
            frame_ts: None,
            starts: [0; FRAME_WINDOW],
            count: 0,
            next: 0,
        }
    }
}

impl FrameClock {
    /// Takes a packet; returns its unwrapped timestamp. A packet newer than every one before
    /// (by sequence number: retransmissions and late packets do not count) with a timestamp
    /// other than the current frame's starts a frame.
    pub(super) fn observe(&mut self, seq: u16, ts: u32) -> i64 {
        let ext = match self.last {
            // The signed difference: a frame or a reordered packet moves a little either way.
            Some((prev, prev_ext)) => prev_ext + i64::from(ts.wrapping_sub(prev) as i32),
            None => i64::from(ts),
        };
        self.last = Some((ts, ext));
        let newest = self
            .highest_seq
            .is_none_or(|h| (1..0x8000).contains(&seq.wrapping_sub(h)));
        if newest {
            self.highest_seq = Some(seq);
            if self.frame_ts != Some(ts) {
                self.frame_ts = Some(ts);
                self.starts[self.next] = ext;
                self.next = (self.next + 1) % FRAME_WINDOW;
                self.count = (self.count + 1).min(FRAME_WINDOW);
            }
        }
        ext
    }

    /// Frames per second over the window: frames between the earliest and latest start
    /// (B-frames reorder starts, so the span is taken from the extremes, not the ends).
    pub(super) fn fps(&self, clock_rate: u32) -> Option<f64> {
        if self.count < MIN_FRAMES {
            return None;
        }
        let starts = &self.starts[..self.count];
        let span = starts.iter().max()? - starts.iter().min()?;
        if span <= 0 {
            return None;
        }
        let fps = (self.count - 1) as f64 * f64::from(clock_rate) / span as f64;
        // Two decimals: the rate is an estimate, not a measurement to the microhertz.
        Some((fps * 100.0).round() / 100.0)
    }
}

/// How many recent keyframe intervals the reported interval looks at.
const KEYFRAME_WINDOW: usize = 4;

/// The publisher's keyframe interval: the longest of the last few intervals between
/// keyframes. A keyframe forced by a PLI (at session start, on a consumer's request) splits one
/// natural interval into two short ones; the longest recent interval is the encoder's cadence.
#[derive(Debug, Default)]
pub(super) struct KeyframeClock {
    last: Option<i64>,
    intervals: [i64; KEYFRAME_WINDOW],
    next: usize,
}

impl KeyframeClock {
    /// Takes the unwrapped timestamp of a packet that starts a keyframe (several packets of
    /// one keyframe share it).
    pub(super) fn observe(&mut self, ext: i64) {
        match self.last {
            Some(last) if ext > last => {
                self.intervals[self.next % KEYFRAME_WINDOW] = ext - last;
                self.next = self.next.wrapping_add(1);
                self.last = Some(ext);
            }
            Some(_) => {}
            None => self.last = Some(ext),
        }
    }

    /// The longest recent interval, once there are two: the first interval of a session is
    /// usually cut short by the keyframe its first PLI forces, and alone it would read as the
    /// cadence ("a keyframe every 0.1 s").
    pub(super) fn interval(&self, clock_rate: u32) -> Option<Duration> {
        if self.next < 2 {
            return None;
        }
        let ticks = u64::try_from(self.intervals.iter().copied().max()?)
            .ok()
            .filter(|&t| t > 0)?;
        Some(Duration::from_micros(
            ticks.saturating_mul(1_000_000) / u64::from(clock_rate.max(1)),
        ))
    }
}

/// Sees RTP timestamps go backwards between packets with consecutive sequence numbers.
#[derive(Debug, Default)]
pub(super) struct ReorderDetector {
    previous: Option<(u16, u32)>,
    backward_steps: u32,
}

impl ReorderDetector {
    /// Takes a packet; true once reordering has been seen often enough.
    pub(super) fn observe(&mut self, seq: u16, ts: u32) -> bool {
        if let Some((prev_seq, prev_ts)) = self.previous
            && seq == prev_seq.wrapping_add(1)
            && (ts.wrapping_sub(prev_ts) as i32) < 0
        {
            self.backward_steps = self.backward_steps.saturating_add(1);
        }
        self.previous = Some((seq, ts));
        self.backward_steps >= REORDER_EVIDENCE
    }
}

#[cfg(test)]
mod tests;
