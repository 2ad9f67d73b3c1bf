//! Sender Report synthesis on simulated time: a publisher that captures audio and video on
//! one clock, paces and jitters them differently, and sends no reports.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtc::shared::marshal::{Marshal, Unmarshal};

use super::*;

const VIDEO_RATE: u32 = 90_000;
const AUDIO_RATE: u32 = 48_000;
/// Random RTP timestamp origins, as a real publisher picks.
const VIDEO_ORIGIN: u32 = 0xfff0_0000;
const AUDIO_ORIGIN: u32 = 0x1234_5678;
const PATH_DELAY: Duration = Duration::from_millis(40);

struct Jitter(u32);

impl Jitter {
    /// 0 to `max_ms` milliseconds, deterministic.
    fn next(&mut self, max_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        Duration::from_micros(u64::from(self.0) % (max_ms * 1000 + 1))
    }
}

/// What the consumer computes from a report: the capture time (seconds since the start)
/// that the report's RTP time stands for.
fn capture_time(report: &Report, origin: u32, rate: u32) -> f64 {
    f64::from(report.rtp_time.wrapping_sub(origin)) / f64::from(rate)
}

/// Seconds of the report's NTP time since `start`'s NTP time.
fn ntp_since(report: &Report, start_ntp: u64) -> f64 {
    (report.ntp_time - start_ntp) as f64 / 4_294_967_296.0
}

struct Sim {
    start: Instant,
    sr: SenderReports,
    jitter: Jitter,
    /// Publisher clock speed relative to the gateway's (1.0: none).
    drift: f64,
}

impl Sim {
    fn new() -> Self {
        let start = Instant::now();
        let wall = WallClock::new(start, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        Sim {
            start,
            sr: SenderReports::new(wall, Some(VIDEO_RATE), Some(AUDIO_RATE)),
            jitter: Jitter(0x9e37_79b9),
            drift: 1.0,
        }
    }

    /// Feeds the packets captured in `[from, to)` (seconds), in arrival order, and polls
    /// every 100 ms; returns the reports.
    fn run(&mut self, from: f64, to: f64, video_offset_ticks: u32) -> Vec<Report> {
        let mut arrivals: Vec<(Duration, MediaKind, u32, usize)> = Vec::new();
        // Video: 30 fps, five packets per frame paced 2 ms apart, 0-25 ms jitter.
        for frame in (from * 30.0).ceil() as u64..(to * 30.0).ceil() as u64 {
            let t = frame as f64 / 30.0;
            let ts = (t * self.drift * f64::from(VIDEO_RATE)) as u32;
            let ts = VIDEO_ORIGIN
                .wrapping_add(ts)
                .wrapping_add(video_offset_ticks);
            for k in 0..5u64 {
                let at = Duration::from_secs_f64(t)
                    + PATH_DELAY
                    + Duration::from_millis(2 * k)
                    + self.jitter.next(25);
                arrivals.push((at, MediaKind::Video, ts, 1000));
            }
        }
        // Audio: every 20 ms, 0-8 ms jitter.
        for packet in (from * 50.0).ceil() as u64..(to * 50.0).ceil() as u64 {
            let t = packet as f64 / 50.0;
            let ts = (t * self.drift * f64::from(AUDIO_RATE)) as u32;
            let at = Duration::from_secs_f64(t) + PATH_DELAY + self.jitter.next(8);
            arrivals.push((at, MediaKind::Audio, AUDIO_ORIGIN.wrapping_add(ts), 80));
        }
        arrivals.sort_by_key(|a| a.0);
        let mut reports = Vec::new();
        let mut poll_at = Duration::from_secs_f64(from);
        for (at, kind, ts, len) in arrivals {
            while poll_at <= at {
                reports.extend(self.sr.poll(self.start + poll_at).into_iter().flatten());
                poll_at += Duration::from_millis(100);
            }
            let ssrc = if kind == MediaKind::Video { 11 } else { 22 };
            self.sr.on_forwarded(kind, self.start + at, ssrc, ts, len);
        }
        reports
    }
}

/// Pairs of same-instant video and audio reports.
fn pairs(reports: &[Report]) -> Vec<(Report, Report)> {
    reports
        .windows(2)
        .filter(|w| w[0].kind == MediaKind::Video && w[1].kind == MediaKind::Audio)
        .map(|w| (w[0], w[1]))
        .collect()
}

#[test]
fn audio_and_video_reports_share_one_clock() {
    let mut sim = Sim::new();
    let reports = sim.run(0.0, 20.0, 0);
    let pairs = pairs(&reports);
    assert!((15..=18).contains(&pairs.len()), "{} pairs", pairs.len());
    let start_ntp =
        WallClock::new(sim.start, UNIX_EPOCH + Duration::from_secs(1_700_000_000)).ntp(sim.start);
    for (video, audio) in pairs {
        assert_eq!(video.ntp_time, audio.ntp_time);
        let v = capture_time(&video, VIDEO_ORIGIN, VIDEO_RATE);
        let a = capture_time(&audio, AUDIO_ORIGIN, AUDIO_RATE);
        // Lip sync: both streams name the same capture instant, within a few ms.
        assert!((v - a).abs() < 0.005, "video {v:.4} audio {a:.4}");
        // And that instant is the report time less the path delay.
        let behind = ntp_since(&video, start_ntp) - v;
        assert!(
            (behind - PATH_DELAY.as_secs_f64()).abs() < 0.005,
            "behind {behind}"
        );
    }
}

#[test]
fn reports_come_every_second_after_the_grace_and_count_the_output() {
    let mut sim = Sim::new();
    let reports = sim.run(0.0, 10.0, 0);
    let video: Vec<&Report> = reports
        .iter()
        .filter(|r| r.kind == MediaKind::Video)
        .collect();
    // None in the first 3 s, then one a second.
    assert!((6..=7).contains(&video.len()), "{}", video.len());
    let first_at = ntp_since(
        video[0],
        WallClock::new(sim.start, UNIX_EPOCH).ntp(sim.start),
    );
    let first_at = first_at - 1_700_000_000.0;
    assert!((3.0..3.2).contains(&first_at), "first report at {first_at}");
    for pair in video.windows(2) {
        let gap = (pair[1].ntp_time - pair[0].ntp_time) as f64 / 4_294_967_296.0;
        assert!((gap - 1.0).abs() < 0.11, "gap {gap}");
        assert!(pair[1].packet_count > pair[0].packet_count);
        assert_eq!(pair[1].ssrc, 11);
    }
    let last = video.last().unwrap();
    assert_eq!(last.octet_count, last.packet_count * 1000);
}

#[test]
fn publisher_reports_hold_synthesis_for_the_whole_session() {
    let mut sim = Sim::new();
    sim.run(0.0, 2.0, 0);
    // A video SR from the publisher: neither kind is synthesized while it is recent.
    sim.sr
        .on_publisher_report(sim.start + Duration::from_secs(2));
    assert!(sim.run(2.0, 12.0, 0).is_empty());
    // The publisher stopped reporting: synthesis resumes after the hold.
    let reports = sim.run(12.0, 18.0, 0);
    assert!(!reports.is_empty());
    let first = WallClock::new(sim.start, UNIX_EPOCH).ntp(sim.start);
    let resumed = ntp_since(&reports[0], first) - 1_700_000_000.0;
    assert!((14.0..14.2).contains(&resumed), "resumed at {resumed}");
}

#[test]
fn a_silent_stream_stops_reporting() {
    let start = Instant::now();
    let mut sr = SenderReports::new(WallClock::new(start, SystemTime::now()), Some(90_000), None);
    sr.on_forwarded(MediaKind::Video, start, 5, 1000, 100);
    assert_eq!(
        sr.poll(start + Duration::from_secs(3))[0].map(|r| r.ssrc),
        Some(5)
    );
    assert_eq!(sr.poll(start + Duration::from_secs(6)), [None, None]);
    // Audio is not forwarded: its packets are ignored.
    sr.on_forwarded(MediaKind::Audio, start, 6, 1000, 100);
    assert_eq!(sr.poll(start + Duration::from_secs(7)), [None, None]);
}

#[test]
fn clock_drift_and_timestamp_jumps_are_followed() {
    let mut sim = Sim::new();
    // The publisher's media clock runs 200 ppm fast.
    sim.drift = 1.0002;
    sim.run(0.0, 30.0, 0);
    // A re-based output (an input switch): video timestamps jump 1 s ahead.
    let reports = sim.run(30.0, 60.0, VIDEO_RATE);
    let late = pairs(&reports)
        .into_iter()
        .filter(|(v, _)| {
            ntp_since(v, WallClock::new(sim.start, UNIX_EPOCH).ntp(sim.start)) > 1_700_000_040.0
        })
        .collect::<Vec<_>>();
    assert!(late.len() >= 15);
    for (video, audio) in late {
        let v = capture_time(&video, VIDEO_ORIGIN.wrapping_add(VIDEO_RATE), VIDEO_RATE);
        let a = capture_time(&audio, AUDIO_ORIGIN, AUDIO_RATE);
        assert!((v - a).abs() < 0.005, "video {v:.4} audio {a:.4}");
    }
}

#[test]
fn ntp_time_counts_from_1900() {
    let start = Instant::now();
    let wall = WallClock::new(start, UNIX_EPOCH + Duration::from_millis(1500));
    assert_eq!(wall.ntp(start), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
    assert_eq!(
        wall.ntp(start + Duration::from_millis(500)),
        (NTP_UNIX_OFFSET + 2) << 32
    );
}

#[test]
fn a_report_marshals_to_a_valid_sender_report() {
    let report = Report {
        kind: MediaKind::Audio,
        ssrc: 0xdead_beef,
        ntp_time: 0x0102_0304_0506_0708,
        rtp_time: 0x1122_3344,
        packet_count: 7,
        octet_count: 560,
    };
    let bytes = report.to_rtcp().marshal().unwrap();
    assert_eq!(bytes.len(), 28);
    let parsed = SenderReport::unmarshal(&mut &bytes[..]).unwrap();
    assert_eq!(parsed.ssrc, 0xdead_beef);
    assert_eq!(parsed.ntp_time, 0x0102_0304_0506_0708);
    assert_eq!(parsed.rtp_time, 0x1122_3344);
    assert_eq!((parsed.packet_count, parsed.octet_count), (7, 560));
}
