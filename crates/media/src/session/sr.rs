//! RTCP Sender Reports for publishers that send none (OBS does not): without them a consumer
//! of the forwarded RTP cannot align audio and video.
//!
//! Both output streams of a session are put on one NTP clock, the gateway's wall clock: each
//! stream keeps a reference packet (arrival instant, output RTP timestamp) and a report says
//! "at NTP time `now`, the stream's RTP clock reads `ts + (now - arrival) * rate`". The
//! reference is the packet that arrived least late for its timestamp over the last window
//! (the first packet of a frame, the one with the least network and pacing delay), so the
//! mapping of audio and video differs only by how differently they were delayed on the
//! way, not by the burst of packets a video frame makes. Windows of a few seconds follow
//! clock drift between publisher and gateway.
//!
//! Reports are due every second (RFC 3550 §6.4.1 allows a fixed interval for a sender
//! this size), and only when the publisher has sent no Sender Report of its own for a while:
//! its reports carry the capture clock, which is better, and are forwarded as before. The
//! rule holds for the session as a whole, so a consumer never gets audio on one NTP clock
//! and video on another. Nothing here does I/O; `now` is always passed in.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::rtcp::sender_report::SenderReport;

use crate::codec::MediaKind;

/// Time between synthesized reports of a stream.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A publisher Sender Report this recent suppresses synthesis (libwebrtc sends audio SRs
/// every 5 s, so the hold is longer than that).
const PUBLISHER_HOLD: Duration = Duration::from_secs(12);
/// Wait this long after the first packet for the publisher's own reports.
const GRACE: Duration = Duration::from_secs(3);
/// A stream that sent nothing for this long is no longer a sender (RFC 3550 §6.3.8).
const SENDER_TIMEOUT: Duration = Duration::from_secs(5);
/// Length of one reference window.
const WINDOW: Duration = Duration::from_secs(4);
/// A packet this much later than the reference means the mapping moved (an input switch
/// re-based the output timestamps, or the path changed): start over from it.
const LATE_RESET: Duration = Duration::from_millis(500);

/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Ties the monotonic clock of packet arrivals to the wall clock, once per session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    /// The pair (monotonic, wall-clock) at one moment.
    pub(crate) fn new(instant: Instant, system: SystemTime) -> Self {
        WallClock { instant, system }
    }

    /// 64-bit NTP timestamp (RFC 3550 §4) of a monotonic instant.
    pub(crate) fn ntp(&self, at: Instant) -> u64 {
        let system = match at.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - self.instant.duration_since(at),
        };
        let since_unix = system.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET;
        let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        (seconds << 32) | fraction
    }
}

/// A Sender Report to send for one output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// Audio or video.
    pub(crate) kind: MediaKind,
    /// Output SSRC.
    pub(crate) ssrc: u32,
    /// Wall-clock time of the report (NTP format).
    pub(crate) ntp_time: u64,
    /// The output stream's RTP timestamp at that time.
    pub(crate) rtp_time: u32,
    /// Packets forwarded on the output stream in this session.
    pub(crate) packet_count: u32,
    /// Payload octets forwarded on the output stream in this session.
    pub(crate) octet_count: u32,
}

impl Report {
    /// The RTCP packet (no reception report blocks: the gateway receives nothing on the
    /// output side).
    pub(crate) fn to_rtcp(self) -> SenderReport {
        SenderReport {
            ssrc: self.ssrc,
            ntp_time: self.ntp_time,
            rtp_time: self.rtp_time,
            packet_count: self.packet_count,
            octet_count: self.octet_count,
            ..SenderReport::default()
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Reference {
    at: Instant,
    ts: u32,
}

/// One output stream: its reference packets and counts.
#[derive(Debug)]
struct StreamClock {
    clock_rate: u32,
    ssrc: u32,
    current: Option<Reference>,
    previous: Option<Reference>,
    window_start: Option<Instant>,
    last_packet: Option<Instant>,
    packets: u32,
    octets: u32,
}

impl StreamClock {
    fn new(clock_rate: u32) -> Self {
        StreamClock {
            clock_rate: clock_rate.max(1),
            ssrc: 0,
            current: None,
            previous: None,
            window_start: None,
            last_packet: None,
            packets: 0,
            octets: 0,
        }
    }

    /// How much later than `than` the packet `r` arrived for its timestamp, in nanoseconds
    /// (negative: earlier).
    fn lateness(&self, r: Reference, than: Reference) -> i128 {
        let arrival = match r.at.checked_duration_since(than.at) {
            Some(d) => d.as_nanos() as i128,
            None => -(than.at.duration_since(r.at).as_nanos() as i128),
        };
        let ticks = i128::from(r.ts.wrapping_sub(than.ts) as i32);
        arrival - ticks * 1_000_000_000 / i128::from(self.clock_rate)
    }

    fn on_packet(&mut self, now: Instant, ssrc: u32, ts: u32, payload_len: usize) {
        self.ssrc = ssrc;
        self.last_packet = Some(now);
        self.packets = self.packets.wrapping_add(1);
        self.octets = self
            .octets
            .wrapping_add(u32::try_from(payload_len).unwrap_or(u32::MAX));
        let packet = Reference { at: now, ts };
        if let Some(best) = self.best()
            && self.lateness(packet, best) > LATE_RESET.as_nanos() as i128
        {
            self.previous = None;
            self.current = None;
        }
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            self.previous = self.current.take();
            self.window_start = Some(now);
        }
        let replace = match self.current {
            None => true,
            Some(current) => self.lateness(packet, current) < 0,
        };
        if replace {
            self.current = Some(packet);
        }
    }

    /// The least late of the current and previous windows' references.
    fn best(&self) -> Option<Reference> {
        match (self.current, self.previous) {
            (Some(c), Some(p)) => Some(if self.lateness(p, c) < 0 { p } else { c }),
            (c, p) => c.or(p),
        }
    }

    fn report(&self, kind: MediaKind, now: Instant, wall: &WallClock) -> Option<Report> {
        let active = self
            .last_packet
            .is_some_and(|last| now.saturating_duration_since(last) < SENDER_TIMEOUT);
        if !active {
            return None;
        }
        let best = self.best()?;
        let elapsed = now.saturating_duration_since(best.at).as_nanos();
        let ticks = elapsed * u128::from(self.clock_rate) / 1_000_000_000;
        Some(Report {
            kind,
            ssrc: self.ssrc,
            ntp_time: wall.ntp(now),
            rtp_time: best.ts.wrapping_add(ticks as u32),
            packet_count: self.packets,
            octet_count: self.octets,
        })
    }
}

/// Sender Report synthesis for one session's output streams.
#[derive(Debug)]
pub(crate) struct SenderReports {
    wall: WallClock,
    video: Option<StreamClock>,
    audio: Option<StreamClock>,
    first_packet: Option<Instant>,
    publisher_report: Option<Instant>,
    next_due: Option<Instant>,
}

impl SenderReports {
    /// For the clock rates of the forwarded kinds (`None`: that kind is not forwarded).
    pub(crate) fn new(wall: WallClock, video_rate: Option<u32>, audio_rate: Option<u32>) -> Self {
        SenderReports {
            wall,
            video: video_rate.map(StreamClock::new),
            audio: audio_rate.map(StreamClock::new),
            first_packet: None,
            publisher_report: None,
            next_due: None,
        }
    }

    /// A packet was forwarded: output SSRC and timestamp, payload size (header and padding
    /// excluded, as the SR octet count wants).
    pub(crate) fn on_forwarded(
        &mut self,
        kind: MediaKind,
        now: Instant,
        ssrc: u32,
        ts: u32,
        payload_len: usize,
    ) {
        let stream = match kind {
            MediaKind::Video => self.video.as_mut(),
            MediaKind::Audio => self.audio.as_mut(),
        };
        if let Some(stream) = stream {
            stream.on_packet(now, ssrc, ts, payload_len);
            self.first_packet.get_or_insert(now);
        }
    }

    /// The publisher sent a Sender Report (it is forwarded as it is).
    pub(crate) fn on_publisher_report(&mut self, now: Instant) {
        self.publisher_report = Some(now);
    }

    /// Whether the publisher's own reports are recent enough to stand alone.
    pub(crate) fn publisher_reports(&self, now: Instant) -> bool {
        self.publisher_report
            .is_some_and(|at| now.saturating_duration_since(at) < PUBLISHER_HOLD)
    }

    /// The reports due at `now`, video first; call it a few times a second.
    pub(crate) fn poll(&mut self, now: Instant) -> [Option<Report>; 2] {
        let waited = self
            .first_packet
            .is_some_and(|first| now.saturating_duration_since(first) >= GRACE);
        let due = self.next_due.is_none_or(|due| now >= due);
        if !waited || !due || self.publisher_reports(now) {
            return [None, None];
        }
        self.next_due = Some(now + REPORT_INTERVAL);
        let wall = self.wall;
        [
            self.video
                .as_ref()
                .and_then(|s| s.report(MediaKind::Video, now, &wall)),
            self.audio
                .as_ref()
                .and_then(|s| s.report(MediaKind::Audio, now, &wall)),
        ]
    }
}

#[cfg(test)]
mod tests;
