//! Stream continuity: what a consumer sees stays one RTP stream per kind and ingest, across
//! publisher reconnects (and SSRC changes).
//!
//! Each ingest owns one output SSRC per kind. The first packet of a new input (new session or
//! new publisher SSRC) re-bases sequence numbers and timestamps so that they continue where the
//! previous input left off (timestamps advanced by the wall-clock gap), so a running FFmpeg
//! keeps decoding instead of seeing a new stream. The state is per ingest and shared by its
//! successive sessions; a packet locks it briefly (uncontended: one session at a time).

mod durable;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub use durable::{
    LastOut, OutputState, RESTORE_FIXED_MARGIN, RESTORE_MAX_JUMP, RESTORE_WINDOW, restart_margin,
};

/// Skipped packets remembered one by one; older ones are folded into the offset.
const SKIP_WINDOW: u16 = 0x1000;

/// One kind's output stream.
#[derive(Debug, Clone)]
pub struct OutputStream {
    /// SSRC the consumer sees.
    pub ssrc: u32,
    input: Option<Input>,
    last: Option<Last>,
    /// Downtime before `last.at` that an `Instant` cannot express (restored after a reboot
    /// shorter than the gap): added to the next re-base's gap, then cleared.
    carry: Duration,
    /// The NTP <-> RTP line of the last Sender Report sent to the consumer, and the clock
    /// rate of the stream: a new input's reports are shifted onto this line (see
    /// [`OutputStream::map_report`]).
    report_line: Option<ReportLine>,
}

/// One point of the consumer's NTP <-> RTP time line.
#[derive(Debug, Clone, Copy)]
struct ReportLine {
    ntp: u64,
    rtp: u32,
    clock_rate: u32,
}

/// The input currently mapped onto the output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Input {
    session: Uuid,
    ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// Added to this input's Sender Report NTP times (NTP units, wrapping): chosen at its first
    /// report so that the consumer's NTP <-> RTP line continues across the re-base.
    ntp_offset: Option<u64>,
    /// Recent input sequence numbers that were not forwarded (padding-only packets): later
    /// packets move down by one for each, so the consumer sees no gap.
    skipped: VecDeque<u16>,
    newest: u16,
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

/// One input packet: who sent it and its header fields.
#[derive(Debug, Clone, Copy)]
pub struct InputPacket {
    /// The publishing session.
    pub session: Uuid,
    /// Publisher SSRC.
    pub ssrc: u32,
    /// Publisher sequence number.
    pub seq: u16,
    /// Publisher RTP timestamp.
    pub ts: u32,
    /// Clock rate, to turn a reconnect gap into timestamp ticks.
    pub clock_rate: u32,
}

impl OutputStream {
    /// A fresh output stream with a random SSRC.
    pub fn new() -> Self {
        OutputStream {
            ssrc: (Uuid::new_v4().as_u128() & 0xffff_ffff) as u32,
            input: None,
            last: None,
            carry: Duration::ZERO,
            report_line: None,
        }
    }

    /// Whether this process forwarded packets on this stream (a stream read back from a
    /// checkpoint and not used since has nothing new to checkpoint).
    pub fn forwarded_here(&self) -> bool {
        self.input.is_some()
    }

    /// Maps one forwarded input packet.
    pub fn map(&mut self, packet: InputPacket, now: Instant) -> Mapped {
        let ssrc = self.ssrc;
        let input = self.input_for(packet, now);
        // Positions relative to the newest input number: one reference for every skipped
        // number, so two consecutive packets never disagree about which came before them.
        let newest = input.newest;
        let at = |seq: u16| seq.wrapping_sub(newest) as i16;
        let skipped_before = input
            .skipped
            .iter()
            .filter(|&&s| at(s) < at(packet.seq))
            .count() as u16;
        let out = Mapped {
            ssrc,
            seq: packet
                .seq
                .wrapping_add(input.seq_offset)
                .wrapping_sub(skipped_before),
            ts: packet.ts.wrapping_add(input.ts_offset),
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

    /// Records an input packet that is not forwarded (padding only), closing its gap.
    pub fn skip(&mut self, packet: InputPacket, now: Instant) {
        self.input_for(packet, now).skipped.push_back(packet.seq);
    }

    /// Maps an RTCP Sender Report's SSRC, RTP time and NTP time; `None` if it is not the
    /// current input.
    ///
    /// Consumers (FFmpeg's RTP demuxer) re-anchor their timestamps at every Sender Report. The
    /// re-base of a new input estimates the gap from arrival times, which the new publisher's
    /// own NTP <-> RTP relation contradicts by a few milliseconds either way: forwarded
    /// verbatim, its first report would move the consumer's timestamps backwards. So the NTP
    /// times of an input after the first are shifted onto the line of the reports already
    /// sent, which keeps one consistent time line for the consumer.
    pub fn map_report(
        &mut self,
        session: Uuid,
        ssrc: u32,
        rtp_time: u32,
        ntp_time: u64,
        clock_rate: u32,
    ) -> Option<(u32, u32, u64)> {
        let line = self.report_line;
        let input = self
            .input
            .as_mut()
            .filter(|i| i.session == session && i.ssrc == ssrc)?;
        let rtp = rtp_time.wrapping_add(input.ts_offset);
        let offset = *input.ntp_offset.get_or_insert_with(|| match line {
            Some(line) if line.clock_rate == clock_rate && clock_rate > 0 => {
                // Where the consumer's line puts this RTP time, in NTP units (2^32 per second).
                let ticks = i64::from(rtp.wrapping_sub(line.rtp) as i32);
                let delta = (i128::from(ticks) << 32) / i128::from(clock_rate);
                let expected = line.ntp.wrapping_add(delta as i64 as u64);
                expected.wrapping_sub(ntp_time)
            }
            _ => 0,
        });
        let ntp = ntp_time.wrapping_add(offset);
        self.report_line = Some(ReportLine {
            ntp,
            rtp,
            clock_rate,
        });
        Some((self.ssrc, rtp, ntp))
    }

    /// The current input, re-based first when the packet starts a new one; tracks the newest
    /// input sequence number and folds old skips into the offset.
    fn input_for(&mut self, packet: InputPacket, now: Instant) -> &mut Input {
        let same = self
            .input
            .as_ref()
            .is_some_and(|i| i.session == packet.session && i.ssrc == packet.ssrc);
        if !same {
            let rebased = self.rebase(packet, now);
            self.input = Some(rebased);
            self.carry = Duration::ZERO;
        }
        let input = self.input.get_or_insert_with(|| Input {
            session: packet.session,
            ssrc: packet.ssrc,
            seq_offset: 0,
            ts_offset: 0,
            ntp_offset: None,
            skipped: VecDeque::new(),
            newest: packet.seq,
        });
        if (1..0x8000).contains(&packet.seq.wrapping_sub(input.newest)) {
            input.newest = packet.seq;
        }
        // Skipped numbers far enough behind the newest are behind every packet still to come:
        // fold them into the offset (all of them, wherever they sit in arrival order, before
        // the newest moves far enough for them to look ahead again).
        let newest = input.newest;
        let before = input.skipped.len();
        input
            .skipped
            .retain(|&s| !(SKIP_WINDOW..=0x8000).contains(&newest.wrapping_sub(s)));
        let folded = (before - input.skipped.len()) as u16;
        input.seq_offset = input.seq_offset.wrapping_sub(folded);
        input
    }

    fn rebase(&self, packet: InputPacket, now: Instant) -> Input {
        let (seq_offset, ts_offset) = match self.last {
            // First input ever: keep the publisher's numbering.
            None => (0, 0),
            Some(last) => {
                // At least one 20 ms frame between the old and the new input.
                let gap = (now.saturating_duration_since(last.at) + self.carry)
                    .max(Duration::from_millis(20));
                let ticks = (gap.as_secs_f64() * f64::from(packet.clock_rate)) as u64 as u32;
                (
                    last.seq.wrapping_add(1).wrapping_sub(packet.seq),
                    last.ts.wrapping_add(ticks).wrapping_sub(packet.ts),
                )
            }
        };
        Input {
            session: packet.session,
            ssrc: packet.ssrc,
            seq_offset,
            ts_offset,
            ntp_offset: None,
            skipped: VecDeque::new(),
            newest: packet.seq,
        }
    }
}

impl Default for OutputStream {
    fn default() -> Self {
        Self::new()
    }
}

/// An ingest's output streams.
#[derive(Debug, Clone, Default)]
pub struct Continuity {
    /// Video output stream.
    pub video: OutputStream,
    /// Audio output stream.
    pub audio: OutputStream,
}

#[cfg(test)]
mod tests;
