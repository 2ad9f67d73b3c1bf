//! Loss repair of what a publisher sends, sans-IO: which sequence numbers arrived (a
//! duplicate is dropped, a late one fills its hole), which holes to ask for again by NACK
//! (RFC 4585 generic NACK) and when, and when to give a hole up. The session feeds it every
//! packet (retransmissions already unwrapped from RTX, RFC 4588) and the time, sends the
//! NACKs it asks for, and sends a PLI when a video hole is given up, so the consumer
//! recovers at the next keyframe instead of decoding around the hole.
//!
//! Timing: a hole is NACKed as soon as it is seen (the packet after it arrived), then again
//! after a retry interval made from the repair round trips measured so far (smoothed round trip
//! plus two deviations, at least 5 ms more, 10-400 ms: a lost retransmission costs one round
//! trip and a little, not TCP's four deviations), at most [`MAX_NACKS`] times, and
//! given up [`REPAIR_WINDOW`] after it was seen. Memory is bounded: [`WINDOW`] sequence
//! numbers and [`MAX_HOLES`] holes per stream, [`MAX_STREAMS`] streams per session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::codec::MediaKind;

/// Sequence numbers remembered per stream (duplicates older than this are not recognised;
/// packets that old are dropped as stale).
pub const WINDOW: u16 = 1024;
/// A forward jump larger than this is a restart of the stream's numbering, not a loss.
const MAX_GAP: u16 = 512;
/// Holes tracked per stream; beyond this the oldest is given up.
const MAX_HOLES: usize = 512;
/// Streams tracked per session (simulcast layers, audio); the least recent is forgotten.
const MAX_STREAMS: usize = 8;
/// How long a hole may stay open before it is given up.
pub const REPAIR_WINDOW: Duration = Duration::from_millis(1000);
/// NACKs per hole at most.
pub const MAX_NACKS: u8 = 10;
/// Bounds of the interval between two NACKs for one hole.
const MIN_RETRY: Duration = Duration::from_millis(10);
/// The least margin over the smoothed round trip before asking again.
const MIN_SLACK: Duration = Duration::from_millis(5);
const MAX_RETRY: Duration = Duration::from_millis(400);
/// The round trip assumed before the first measurement.
const INITIAL_RTT: Duration = Duration::from_millis(50);
/// Shortest time between two PLIs sent because a hole was given up (a publisher that never
/// answers NACKs, as whipgate-load, loses a packet every few hundred ms at 5 % loss: a keyframe
/// each time would only add to the loss).
pub const PLI_INTERVAL: Duration = Duration::from_millis(1000);

/// What became of one arriving packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New: forward it.
    New,
    /// It fills a hole that was open for this long: forward it.
    Filled(Duration),
    /// Already received (a second retransmission, an RTX probe repeating a packet): drop it.
    Duplicate,
}

#[derive(Clone, Copy, Debug)]
struct Hole {
    seq: u16,
    since: Instant,
    nacks: u8,
    last_nack: Option<Instant>,
    next: Instant,
}

/// One received stream's sequence log.
#[derive(Debug)]
struct StreamLog {
    ssrc: u32,
    kind: MediaKind,
    /// Whether holes are asked for by NACK (the publisher offered `nack` for the codec).
    nack: bool,
    highest: Option<u16>,
    /// One bit per sequence number (`seq % WINDOW`), valid for the `WINDOW` numbers up to
    /// `highest`: received.
    received: Box<[u64]>,
    /// Received and padding only (a probe on the media SSRC of a publisher without RTX).
    padding: Box<[u64]>,
    /// Open holes, oldest first (the order they were seen in is sequence order).
    holes: VecDeque<Hole>,
    last_seen: Instant,
}

fn bit(seq: u16) -> (usize, u64) {
    let i = usize::from(seq % WINDOW);
    (i / 64, 1u64 << (i % 64))
}

impl StreamLog {
    fn new(ssrc: u32, kind: MediaKind, nack: bool, now: Instant) -> Self {
        let words = usize::from(WINDOW) / 64;
        StreamLog {
            ssrc,
            kind,
            nack,
            highest: None,
            received: vec![0; words].into_boxed_slice(),
            padding: vec![0; words].into_boxed_slice(),
            holes: VecDeque::new(),
            last_seen: now,
        }
    }

    fn get(map: &[u64], seq: u16) -> bool {
        let (w, b) = bit(seq);
        map[w] & b != 0
    }

    fn set(&mut self, seq: u16, padding: bool) {
        let (w, b) = bit(seq);
        self.received[w] |= b;
        if padding {
            self.padding[w] |= b;
        } else {
            self.padding[w] &= !b;
        }
    }

    fn clear(&mut self, seq: u16) {
        let (w, b) = bit(seq);
        self.received[w] &= !b;
        self.padding[w] &= !b;
    }

    fn reset(&mut self, seq: u16, padding: bool) -> Vec<Hole> {
        self.received.fill(0);
        self.padding.fill(0);
        self.highest = Some(seq);
        self.set(seq, padding);
        self.holes.drain(..).collect()
    }

    /// Records an arrival at `now`; holes given up on the way (pushed out of the window or
    /// over the bound) go to `gave_up`.
    fn arrive(
        &mut self,
        seq: u16,
        padding: bool,
        now: Instant,
        gave_up: &mut Vec<Hole>,
        filled: &mut Option<Hole>,
    ) -> Arrival {
        self.last_seen = now;
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.set(seq, padding);
            return Arrival::New;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return Arrival::Duplicate;
        }
        if ahead < 0x8000 {
            if ahead > MAX_GAP {
                // The numbering restarted (or jumped): nothing to ask for.
                gave_up.extend(self.reset(seq, padding));
                return Arrival::New;
            }
            for step in 1..=ahead {
                let s = highest.wrapping_add(step);
                self.clear(s);
                if step < ahead {
                    self.holes.push_back(Hole {
                        seq: s,
                        since: now,
                        nacks: 0,
                        last_nack: None,
                        next: now,
                    });
                }
            }
            self.highest = Some(seq);
            self.set(seq, padding);
            // Holes pushed out of the window, or over the bound, are given up.
            while let Some(front) = self.holes.front() {
                let behind = seq.wrapping_sub(front.seq);
                if behind < WINDOW && self.holes.len() <= MAX_HOLES {
                    break;
                }
                gave_up.extend(self.holes.pop_front());
            }
            return Arrival::New;
        }
        let behind = highest.wrapping_sub(seq);
        if behind >= WINDOW {
            // Far behind everything remembered: a restart of the numbering as well.
            gave_up.extend(self.reset(seq, padding));
            return Arrival::New;
        }
        if Self::get(&self.received, seq) {
            return Arrival::Duplicate;
        }
        self.set(seq, padding);
        match self.holes.iter().position(|h| h.seq == seq) {
            Some(i) => {
                let Some(hole) = self.holes.remove(i) else {
                    return Arrival::New;
                };
                *filled = Some(hole);
                Arrival::Filled(now.saturating_duration_since(hole.since))
            }
            // Behind the window's holes already given up: late, but new to the consumer.
            None => Arrival::New,
        }
    }

    /// Whether a hole given up was probably a padding-only probe: a neighbour is one.
    fn probably_padding(&self, seq: u16) -> bool {
        Self::get(&self.padding, seq.wrapping_sub(1))
            || Self::get(&self.padding, seq.wrapping_add(1))
    }
}

/// What is due at a given time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// NACKs to send: media SSRC and the sequence numbers to ask for.
    pub nacks: Vec<(u32, Vec<u16>)>,
    /// Holes given up per stream: SSRC, kind, and how many of them were media (not
    /// probably a padding-only probe).
    pub gave_up: Vec<GaveUp>,
}

/// Holes given up on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp {
    pub ssrc: u32,
    pub kind: MediaKind,
    /// Holes that were media.
    pub media: u64,
    /// Holes next to padding-only probes (a publisher without RTX): probably probes.
    pub probes: u64,
}

/// Loss repair of one session's received streams.
#[derive(Debug)]
pub struct Repair {
    streams: Vec<StreamLog>,
    /// Smoothed repair round trip (NACK sent -> retransmission arrived) and its deviation.
    srtt: Duration,
    rttvar: Duration,
    measured: bool,
    last_pli: Option<Instant>,
    /// Holes found given up while handling arrivals, reported by the next `poll`.
    pending: Vec<(u32, MediaKind, Vec<Hole>, u64)>,
    /// The latest time seen (arrivals and timers): the session's clock for `poll`.
    now: Option<Instant>,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            streams: Vec::new(),
            srtt: INITIAL_RTT,
            rttvar: INITIAL_RTT / 2,
            measured: false,
            last_pli: None,
            pending: Vec::new(),
            now: None,
        }
    }
}

impl Repair {
    /// Moves the clock to `now` (never backwards).
    pub fn advance(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
    }

    /// The latest time seen, if any.
    pub fn now(&self) -> Option<Instant> {
        self.now
    }

    /// Whether packet `seq` of stream `ssrc` was received (within the window).
    pub fn has(&self, ssrc: u32, seq: u16) -> bool {
        self.streams.iter().any(|s| {
            s.ssrc == ssrc
                && s.highest.is_some_and(|h| h.wrapping_sub(seq) < WINDOW)
                && StreamLog::get(&s.received, seq)
        })
    }

    /// Records packet `seq` of stream `ssrc` arriving at `now` (`padding`: padding only;
    /// `nack`: holes of this stream are asked for by NACK).
    pub fn arrive(
        &mut self,
        kind: MediaKind,
        ssrc: u32,
        seq: u16,
        padding: bool,
        nack: bool,
        now: Instant,
    ) -> Arrival {
        self.advance(now);
        let i = match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => i,
            None => {
                if self.streams.len() >= MAX_STREAMS
                    && let Some(oldest) = self
                        .streams
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_seen)
                        .map(|(i, _)| i)
                {
                    self.streams.swap_remove(oldest);
                }
                self.streams.push(StreamLog::new(ssrc, kind, nack, now));
                self.streams.len() - 1
            }
        };
        let (mut gave_up, mut filled) = (Vec::new(), None);
        let stream = &mut self.streams[i];
        let arrival = stream.arrive(seq, padding, now, &mut gave_up, &mut filled);
        if !gave_up.is_empty() {
            let probes = gave_up
                .iter()
                .filter(|h| stream.probably_padding(h.seq))
                .count() as u64;
            self.pending.push((ssrc, kind, gave_up, probes));
        }
        // The round trip of a hole NACKed exactly once (Karn: a hole asked for twice says
        // nothing about which request was answered).
        if let Some(Hole {
            nacks: 1,
            last_nack: Some(at),
            ..
        }) = filled
        {
            self.sample(now.saturating_duration_since(at));
        }
        arrival
    }

    fn sample(&mut self, rtt: Duration) {
        if !self.measured {
            self.measured = true;
            self.srtt = rtt;
            self.rttvar = rtt / 2;
            return;
        }
        let delta = rtt.abs_diff(self.srtt);
        self.rttvar = (self.rttvar * 3 + delta) / 4;
        self.srtt = (self.srtt * 7 + rtt) / 8;
    }

    /// The interval between two NACKs for one hole.
    pub fn retry_interval(&self) -> Duration {
        (self.srtt + (self.rttvar * 2).max(MIN_SLACK)).clamp(MIN_RETRY, MAX_RETRY)
    }

    /// The earliest time something is due (a NACK or a give-up), if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for stream in &self.streams {
            for hole in &stream.holes {
                let at = if stream.nack && hole.nacks < MAX_NACKS {
                    hole.next.min(hole.since + REPAIR_WINDOW)
                } else {
                    hole.since + REPAIR_WINDOW
                };
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    /// What is due at `now`: NACKs to send (recorded as sent) and holes given up.
    pub fn poll(&mut self, now: Instant) -> Due {
        let retry = self.retry_interval();
        let mut due = Due::default();
        for (ssrc, kind, holes, probes) in self.pending.drain(..) {
            due.gave_up.push(GaveUp {
                ssrc,
                kind,
                media: holes.len() as u64 - probes,
                probes,
            });
        }
        for stream in &mut self.streams {
            let mut nacks = Vec::new();
            let (mut media, mut probes) = (0, 0);
            let mut kept = VecDeque::with_capacity(stream.holes.len());
            while let Some(mut hole) = stream.holes.pop_front() {
                if now >= hole.since + REPAIR_WINDOW {
                    if stream.probably_padding(hole.seq) {
                        probes += 1;
                    } else {
                        media += 1;
                    }
                    continue;
                }
                if stream.nack && hole.nacks < MAX_NACKS && now >= hole.next {
                    hole.nacks += 1;
                    hole.last_nack = Some(now);
                    hole.next = now + retry;
                    nacks.push(hole.seq);
                }
                kept.push_back(hole);
            }
            stream.holes = kept;
            if !nacks.is_empty() {
                due.nacks.push((stream.ssrc, nacks));
            }
            if media + probes > 0 {
                due.gave_up.push(GaveUp {
                    ssrc: stream.ssrc,
                    kind: stream.kind,
                    media,
                    probes,
                });
            }
        }
        due
    }

    /// Whether a PLI for a given-up hole may go at `now` (at most one per [`PLI_INTERVAL`]);
    /// records it when it may.
    pub fn may_send_pli(&mut self, now: Instant) -> bool {
        let may = self
            .last_pli
            .is_none_or(|at| now.saturating_duration_since(at) >= PLI_INTERVAL);
        if may {
            self.last_pli = Some(now);
        }
        may
    }
}

#[cfg(test)]
mod tests;
