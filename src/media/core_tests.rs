//! One real gateway session driven on simulated time ([`super::sim`]): connection and
//! forwarding, the media and connect timeouts, NACKs and receiver reports, the duration and
//! bitrate caps. Every instant below is simulated; nothing sleeps.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::session::SessionTimers;
use super::sim::{Sim, VIDEO_PT};
use crate::codec::{AudioCodec, VideoCodec};
use crate::registry::{EndReason, Limits};

const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The control task's housekeeping period (caps and timeouts are looked at this often).
const HOUSEKEEPING: Duration = Duration::from_millis(500);
const STATS: Duration = Duration::from_secs(1);
/// The publisher's packet interval (one video and one audio packet each time).
const PACE: Duration = Duration::from_millis(20);
const MS: Duration = Duration::from_millis(1);

fn timers() -> SessionTimers {
    SessionTimers {
        media_timeout: MEDIA_TIMEOUT,
        connect_timeout: CONNECT_TIMEOUT,
        stats_interval: STATS,
    }
}

fn connected_sim(limits: Limits) -> Sim {
    let mut sim = Sim::new(timers(), limits);
    let took = sim.connect();
    assert!(took < Duration::from_secs(1), "connecting took {took:?}");
    sim
}

/// The reason the session ended, if it did.
fn ended(sim: &Sim) -> Option<EndReason> {
    sim.progress.end.as_ref().map(|(reason, _)| *reason)
}

/// Runs the control task's housekeeping (`check_limits`) every [`HOUSEKEEPING`] from the
/// session's start while the publisher streams, until the session ends or `limit`; returns
/// the simulated time since the start at which it ended.
fn stream_until_ended(sim: &mut Sim, limit: Duration) -> Option<Duration> {
    let mut tick = sim.start;
    while tick < sim.start + limit {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.session.check_limits(&mut sim.progress, tick);
        if sim.progress.end.is_some() {
            return Some(tick - sim.start);
        }
    }
    None
}

#[test]
fn a_connected_publisher_s_media_is_forwarded_with_the_consumer_payload_type() {
    let mut sim = connected_sim(Limits::default());
    let first = sim.send_video(1_000, true);
    for _ in 0..4 {
        sim.run_for(PACE);
        sim.send_video(1_000, false);
        sim.send_audio();
    }
    let video = sim.forwarded(true);
    assert_eq!(video.len(), 5, "every video packet reaches the consumer");
    assert!(video.iter().all(|p| p.header.payload_type
        == VideoCodec::H264.consumer_payload_type()
        && p.header.payload_type != VIDEO_PT));
    assert_eq!(video[0].payload.len(), 1_000);
    assert_eq!(
        video[0].payload[0], 0x65,
        "the IDR comes out first, untouched"
    );
    assert!(video[1..].iter().all(|p| p.payload[0] == 0x41));
    for pair in video.windows(2) {
        assert_eq!(pair[0].header.ssrc, pair[1].header.ssrc);
        let next = pair[0].header.sequence_number.wrapping_add(1);
        assert_eq!(pair[1].header.sequence_number, next);
    }
    let audio = sim.forwarded(false);
    assert_eq!(audio.len(), 4);
    assert!(audio.iter().all(|p| p.header.payload_type
        == AudioCodec::Opus.consumer_payload_type()
        && p.payload.len() == 80));
    let counters = sim.session.admission.counters.snapshot();
    assert_eq!(
        (counters.video_packets, counters.audio_packets),
        (5, 4),
        "received from {first}"
    );
    // The consumer starts at a keyframe: the first forwarded video asks the publisher for one.
    let plis = sim.publisher.received::<PictureLossIndication>();
    assert!(
        plis.iter()
            .any(|(_, pli)| pli.media_ssrc == sim.publisher.video.ssrc),
        "no PLI for the video stream: {plis:?}"
    );
}

#[test]
fn a_quiet_session_ends_for_inactivity_once_the_media_timeout_has_passed() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.now + Duration::from_secs(2);
    sim.stream_until(until, PACE, 500);
    let last_media = sim.now;
    assert_eq!(sim.progress.last_media, last_media);
    // ICE consent checks go on; they are not media.
    sim.run_until(last_media + MEDIA_TIMEOUT);
    sim.session.check_limits(&mut sim.progress, sim.now);
    assert_eq!(ended(&sim), None, "ended at exactly the media timeout");
    assert_eq!(sim.progress.last_media, last_media);
    sim.run_for(MS);
    sim.session.check_limits(&mut sim.progress, sim.now);
    let (reason, detail) = sim
        .progress
        .end
        .clone()
        .expect("not ended after the timeout");
    assert_eq!(reason, EndReason::Inactivity);
    assert!(detail.starts_with("no media for 5"), "{detail}");
}

#[test]
fn media_keeps_a_session_alive_past_the_media_timeout() {
    let mut sim = connected_sim(Limits::default());
    let alive = stream_until_ended(&mut sim, MEDIA_TIMEOUT * 3);
    assert_eq!(alive, None, "{:?}", sim.progress.end);
}

#[test]
fn a_session_that_never_connects_ends_after_the_connect_timeout() {
    let mut sim = Sim::new(timers(), Limits::default());
    // The publisher's datagrams never arrive (a firewall in the way).
    sim.lose = Box::new(|_| true);
    let mut tick = sim.start;
    while tick < sim.start + CONNECT_TIMEOUT {
        tick += HOUSEKEEPING;
        sim.run_until(tick);
        sim.session.check_limits(&mut sim.progress, tick);
        assert_eq!(ended(&sim), None, "ended before the connect timeout");
    }
    assert_eq!(sim.elapsed(), CONNECT_TIMEOUT);
    sim.run_for(MS);
    sim.session.check_limits(&mut sim.progress, sim.now);
    let (reason, detail) = sim.progress.end.clone().expect("not ended");
    assert_eq!(
        (reason, detail.as_str()),
        (EndReason::Inactivity, "never connected")
    );
    assert!(!sim.progress.connected && !sim.publisher.connected);
}

/// Loses the publisher's video RTP packet with sequence number `seq` (SRTP leaves the RTP
/// header in the clear).
fn lose_video(seq: u16) -> super::sim::Loss {
    Box::new(move |d: &[u8]| {
        d.len() > 12
            && d[0] >> 6 == 2
            && d[1] & 0x7f == VIDEO_PT
            && u16::from_be_bytes([d[2], d[3]]) == seq
    })
}

/// NACKs for `ssrc` received since `from`: arrival time and the sequence numbers named.
fn nacks_since(sim: &Sim, ssrc: u32, from: Instant) -> Vec<(Instant, Vec<u16>)> {
    sim.publisher
        .received::<TransportLayerNack>()
        .into_iter()
        .filter(|(at, nack)| *at >= from && nack.media_ssrc == ssrc)
        .map(|(at, nack)| {
            (
                at,
                nack.nacks.iter().flat_map(|p| p.packet_list()).collect(),
            )
        })
        .collect()
}

#[test]
fn a_lost_packet_is_nacked_by_number_within_the_nack_interval_until_it_is_resent() {
    let mut sim = connected_sim(Limits::default());
    let ssrc = sim.publisher.video.ssrc;
    sim.send_video(500, true);
    for _ in 0..3 {
        sim.run_for(PACE);
        sim.send_video(500, false);
    }
    let lost = sim.publisher.video.seq;
    sim.lose = lose_video(lost);
    sim.run_for(PACE);
    assert_eq!(sim.send_video(500, false), lost);
    sim.run_for(PACE);
    let before_gap = sim.now;
    assert!(
        nacks_since(&sim, ssrc, sim.start).is_empty(),
        "NACK without a gap"
    );
    sim.send_video(500, false);
    let gap_seen = sim.now;
    // The generator runs every 100 ms.
    sim.run_for(Duration::from_millis(100));
    let nacks = nacks_since(&sim, ssrc, before_gap);
    let (at, named) = nacks.first().expect("no NACK within 100 ms of the gap");
    assert!(*at >= gap_seen && *at <= gap_seen + Duration::from_millis(100));
    assert_eq!(named, &[lost], "the NACK names exactly the lost packet");
    // Still missing: asked again at the next run.
    sim.run_for(Duration::from_millis(100));
    assert!(
        nacks_since(&sim, ssrc, *at + MS)
            .iter()
            .any(|(_, n)| n == &[lost])
    );
    // The publisher resends it (between two runs of the generator): no more NACKs for it.
    sim.lose = Box::new(|_| false);
    sim.run_for(Duration::from_millis(10));
    sim.resend_video(lost);
    let resent = sim.now;
    sim.run_for(Duration::from_millis(500));
    let after = nacks_since(&sim, ssrc, resent);
    let after: Vec<_> = after.into_iter().map(|(at, n)| (at - resent, n)).collect();
    assert!(after.iter().all(|(_, n)| !n.contains(&lost)), "{after:?}");
    // The statistics count the NACKs the session sent.
    let (elapsed, now) = (sim.elapsed(), sim.now);
    sim.session.report_stats(&mut sim.progress, elapsed, now);
    let sent = sim.session.admission.counters.snapshot().nacks_sent;
    assert!(sent >= 2, "nacks_sent = {sent}");
}

#[test]
fn receiver_reports_come_every_second_and_count_an_unrepaired_loss() {
    let mut sim = connected_sim(Limits::default());
    let ssrc = sim.publisher.video.ssrc;
    let until = sim.now + Duration::from_secs(1);
    sim.stream_until(until, PACE, 500);
    sim.lose = lose_video(sim.publisher.video.seq);
    let until = sim.now + Duration::from_secs(4);
    sim.stream_until(until, PACE, 500);
    let reports: Vec<(Instant, u32)> = sim
        .publisher
        .received::<ReceiverReport>()
        .into_iter()
        .filter_map(|(at, rr)| {
            let video = rr.reports.iter().find(|r| r.ssrc == ssrc)?;
            Some((at, video.total_lost))
        })
        .collect();
    assert!(reports.len() >= 4, "{} reports in 5 s", reports.len());
    for pair in reports.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            Duration::from_secs(1),
            "report interval"
        );
    }
    assert_eq!(reports[0].1, 0, "no loss in the first second");
    assert_eq!(
        reports.last().map(|r| r.1),
        Some(1),
        "the lost packet is counted"
    );
}

#[test]
fn a_duration_cap_set_live_ends_the_session_when_it_is_reached() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.start + Duration::from_secs(3);
    sim.stream_until(until, PACE, 500);
    // SetCaps on a live ingest: the session reads its limits at every housekeeping run.
    let cap = Limits {
        max_bitrate_bps: None,
        max_session: Some(Duration::from_secs(10)),
    };
    sim.registry
        .set_limits(&sim.ingest, cap)
        .expect("set limits");
    let at = stream_until_ended(&mut sim, Duration::from_secs(20));
    assert_eq!(at, Some(Duration::from_secs(10)), "{:?}", sim.progress.end);
    assert_eq!(ended(&sim), Some(EndReason::DurationCap));
    assert!(sim.progress.connected);
}

#[test]
fn a_bitrate_cap_ends_a_session_above_it_at_the_next_statistics_report() {
    let mut sim = connected_sim(Limits::default());
    // 940 + 12 bytes of video and 80 + 12 of audio every 20 ms: about 418 kbps.
    let stats = |sim: &mut Sim, reports: usize| -> Option<u64> {
        for _ in 0..reports {
            let tick = sim.now + STATS;
            sim.stream_until(tick, PACE, 940);
            sim.session.report_stats(&mut sim.progress, STATS, tick);
            if sim.progress.end.is_some() {
                return Some(sim.elapsed().as_millis() as u64);
            }
        }
        None
    };
    let set_cap = |sim: &mut Sim, bps: u64| {
        let limits = Limits {
            max_bitrate_bps: Some(bps),
            max_session: None,
        };
        sim.registry
            .set_limits(&sim.ingest, limits)
            .expect("set limits");
    };
    set_cap(&mut sim, 450_000);
    assert_eq!(
        stats(&mut sim, 3),
        None,
        "ended below the cap: {:?}",
        sim.progress.end
    );
    set_cap(&mut sim, 400_000);
    let capped_at = sim.elapsed().as_millis() as u64;
    let ended_at = stats(&mut sim, 3).expect("not ended above the cap");
    assert_eq!(
        ended_at,
        capped_at + 1_000,
        "ends at the first report above the cap"
    );
    let (reason, detail) = sim.progress.end.clone().expect("ended");
    assert_eq!(reason, EndReason::BitrateCap);
    assert!(detail.ends_with("above the cap of 400000 bps"), "{detail}");
}

#[test]
fn an_rtcp_goodbye_for_every_stream_ends_the_session_as_a_publisher_close() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.now + Duration::from_secs(1);
    sim.stream_until(until, PACE, 500);
    let (video, audio) = (sim.publisher.video.ssrc, sim.publisher.audio.ssrc);
    sim.send_goodbye(vec![video]);
    assert_eq!(ended(&sim), None, "audio still flows");
    sim.run_for(PACE);
    sim.send_goodbye(vec![audio]);
    assert_eq!(ended(&sim), Some(EndReason::PublisherClose));
}
