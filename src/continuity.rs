//! Stream continuity: what a consumer sees stays one RTP stream per kind and ingest, across
//! publisher reconnects (and SSRC changes).
//!
//! Each ingest owns one output SSRC per kind. The first packet of a new input (new session or
//! new publisher SSRC) re-bases sequence numbers and timestamps so that they continue where the
//! previous input left off (timestamps advanced by the wall-clock gap), so a running FFmpeg
//! keeps decoding instead of seeing a new stream. The state is per ingest and shared by its
//! successive sessions; a packet locks it briefly (uncontended: one session at a time).

use std::time::{Duration, Instant};

use uuid::Uuid;

/// One kind's output stream.
#[derive(Debug, Clone, Copy)]
pub struct OutputStream {
    /// SSRC the consumer sees.
    pub ssrc: u32,
    input: Option<Input>,
    last: Option<Last>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Input {
    session: Uuid,
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u16,
    ts: u32,
    at: Instant,
}

/// Output header fields for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// Output SSRC.
    pub ssrc: u32,
    /// Output sequence number.
    pub seq: u16,
    /// Output RTP timestamp.
    pub ts: u32,
}

impl OutputStream {
    /// A fresh output stream with a random SSRC.
    pub fn new() -> Self {
        OutputStream {
            ssrc: (Uuid::new_v4().as_u128() & 0xffff_ffff) as u32,
            input: None,
            last: None,
        }
    }

    /// Maps one input packet. `clock_rate` converts a reconnect gap into timestamp ticks.
    pub fn map(
        &mut self,
        session: Uuid,
        ssrc: u32,
        seq: u16,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Mapped {
        let input = match self.input {
            Some(input) if input.session == session && input.ssrc == ssrc => input,
            _ => {
                let input = self.rebase(session, ssrc, seq, ts, clock_rate, now);
                self.input = Some(input);
                input
            }
        };
        let out = Mapped {
            ssrc: self.ssrc,
            seq: seq.wrapping_add(input.seq_offset),
            ts: ts.wrapping_add(input.ts_offset),
        };
        // Retransmissions and reordering never move "last" backwards.
        let newer = self
            .last
            .is_none_or(|l| (1..0x8000).contains(&out.seq.wrapping_sub(l.seq)));
        if newer {
            self.last = Some(Last {
                seq: out.seq,
                ts: out.ts,
                at: now,
            });
        }
        out
    }

    /// Maps an RTCP Sender Report's SSRC and RTP time; `None` if it is not the current input.
    pub fn map_report(&self, session: Uuid, ssrc: u32, rtp_time: u32) -> Option<(u32, u32)> {
        let input = self
            .input
            .filter(|i| i.session == session && i.ssrc == ssrc)?;
        Some((self.ssrc, rtp_time.wrapping_add(input.ts_offset)))
    }

    fn rebase(
        &self,
        session: Uuid,
        ssrc: u32,
        seq: u16,
        ts: u32,
        clock_rate: u32,
        now: Instant,
    ) -> Input {
        let Some(last) = self.last else {
            // First input ever: keep the publisher's numbering.
            return Input {
                session,
                ssrc,
                seq_offset: 0,
                ts_offset: 0,
            };
        };
        // At least one 20 ms frame between the old and the new input.
        let gap = now
            .saturating_duration_since(last.at)
            .max(Duration::from_millis(20));
        let ticks = (gap.as_secs_f64() * f64::from(clock_rate)) as u64 as u32;
        Input {
            session,
            ssrc,
            seq_offset: last.seq.wrapping_add(1).wrapping_sub(seq),
            ts_offset: last.ts.wrapping_add(ticks).wrapping_sub(ts),
        }
    }
}

impl Default for OutputStream {
    fn default() -> Self {
        Self::new()
    }
}

/// An ingest's output streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Continuity {
    /// Video output stream.
    pub video: OutputStream,
    /// Audio output stream.
    pub audio: OutputStream,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_continues_sequence_numbers_and_timestamps() {
        let mut out = OutputStream::new();
        let t0 = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = out.map(a, 111, 500, 9000, 90_000, t0);
        assert_eq!(
            (first.seq, first.ts),
            (500, 9000),
            "first input keeps its numbering"
        );
        out.map(a, 111, 501, 12_000, 90_000, t0);
        // The publisher reconnects: new session, new SSRC, its own numbering.
        let later = t0 + Duration::from_secs(1);
        let next = out.map(b, 222, 7, 100, 90_000, later);
        assert_eq!(next.ssrc, first.ssrc);
        assert_eq!(next.seq, 502);
        assert_eq!(next.ts, 12_000 + 90_000);
        assert_eq!(out.map(b, 222, 8, 3100, 90_000, later).seq, 503);
    }

    #[test]
    fn retransmissions_do_not_move_the_stream_backwards() {
        let mut out = OutputStream::new();
        let t = Instant::now();
        let s = Uuid::new_v4();
        out.map(s, 1, 10, 0, 90_000, t);
        out.map(s, 1, 12, 0, 90_000, t);
        assert_eq!(
            out.map(s, 1, 11, 0, 90_000, t).seq,
            11,
            "late packet keeps its place"
        );
        let next = out.map(Uuid::new_v4(), 2, 0, 0, 90_000, t);
        assert_eq!(
            next.seq, 13,
            "continues after the newest, not the latest arrival"
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut out = OutputStream::new();
        let t = Instant::now();
        out.map(Uuid::new_v4(), 1, u16::MAX, 0, 48_000, t);
        assert_eq!(out.map(Uuid::new_v4(), 2, 100, 0, 48_000, t).seq, 0);
    }

    #[test]
    fn sender_reports_follow_the_current_input_only() {
        let mut out = OutputStream::new();
        let s = Uuid::new_v4();
        out.map(s, 5, 1, 1000, 48_000, Instant::now());
        assert_eq!(out.map_report(s, 5, 1000), Some((out.ssrc, 1000)));
        assert_eq!(out.map_report(s, 6, 1000), None);
    }
}
