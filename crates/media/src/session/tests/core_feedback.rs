//! What a gateway session says to its publisher and its consumer on simulated time
//! ([`crate::session::sim`]): NACKs and receiver reports, keyframe requests, the publisher's BYE, and
//! the Sender Reports it makes or forwards. Every instant below is simulated; nothing sleeps.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::core::{HOUSEKEEPING, MS, PACE, connected_sim, ended};
use crate::session::sim::{Sim, VIDEO_PT};
use crate::session::{EndCause, Limits};

/// Loses the publisher's video RTP packet with sequence number `seq` (SRTP leaves the RTP
/// header in the clear).
pub(super) fn lose_video(seq: u16) -> crate::session::sim::Loss {
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
    sim.report_stats(elapsed, now);
    let sent = sim.session.core.counters.snapshot().nacks_sent;
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
fn an_rtcp_goodbye_for_every_stream_ends_the_session_as_a_publisher_close() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.now + Duration::from_secs(1);
    sim.stream_until(until, PACE, 500);
    let (video, audio) = (sim.publisher.video.ssrc, sim.publisher.audio.ssrc);
    sim.send_goodbye(vec![video]);
    assert_eq!(ended(&sim), None, "audio still flows");
    sim.run_for(PACE);
    sim.send_goodbye(vec![audio]);
    assert_eq!(ended(&sim), Some(EndCause::PublisherClose));
}

#[test]
fn a_keyframe_request_sends_a_pli_for_the_forwarded_video_at_once() {
    let mut sim = connected_sim(Limits::default());
    sim.outside(|session, progress, now| session.request_keyframe(progress, now));
    let video = sim.publisher.video.ssrc;
    let plis = |sim: &Sim| sim.publisher.received::<PictureLossIndication>();
    assert!(plis(&sim).is_empty(), "a PLI before any video");
    sim.send_video(500, false);
    // The first forwarded video asks for a keyframe (the consumer starts decoding there).
    assert_eq!(plis(&sim).len(), 1);
    sim.run_for(Duration::from_millis(250));
    let asked = sim.now;
    sim.outside(|session, progress, now| session.request_keyframe(progress, now));
    let plis = plis(&sim);
    assert_eq!(plis.len(), 2, "{plis:?}");
    assert_eq!((plis[1].0, plis[1].1.media_ssrc), (asked, video));
    assert_eq!(sim.session.core.counters.snapshot().plis_sent, 2);
}

/// Seconds of a 64-bit NTP timestamp, as a float.
fn ntp_secs(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

#[test]
fn sender_reports_are_made_for_a_publisher_that_sends_none_and_its_own_are_forwarded() {
    let mut sim = connected_sim(Limits::default());
    let first = sim.now + PACE;
    let mut reports = Vec::new();
    let (mut last_ts, mut packets) = (0, 0u32);
    let mut tick = sim.now;
    while tick < first + Duration::from_secs(6) {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        let forwarded = sim.forwarded(true);
        packets += forwarded.len() as u32;
        last_ts = forwarded.last().map_or(last_ts, |p| p.header.timestamp);
        let last_media = sim.session.progress.last_media;
        sim.outside(|session, _, now| session.send_reports(now));
        for report in sim.forwarded_reports(true) {
            reports.push((tick, report, last_ts, last_media, packets));
        }
    }
    // None in the first 3 s (the publisher's own may come), then one a second.
    let (at, ..) = reports.first().expect("no Sender Report");
    assert!(*at >= first + Duration::from_secs(3) && *at < first + Duration::from_millis(3_500));
    assert!(reports.len() >= 2, "{} reports", reports.len());
    for pair in reports.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, Duration::from_secs(1));
        let ntp = ntp_secs(pair[1].1.ntp_time) - ntp_secs(pair[0].1.ntp_time);
        assert!(
            (ntp - 1.0).abs() < 1e-6,
            "NTP advanced {ntp} s in one second"
        );
    }
    for (at, report, ts, last_media, packets) in &reports {
        // The RTP clock at the report: the last packet's timestamp plus the time since it
        // arrived, at 90 kHz (the publisher's timestamps follow its packets exactly).
        let since = (*at - *last_media).as_nanos() * 90_000 / 1_000_000_000;
        let expected = ts.wrapping_add(since as u32);
        assert!(
            report.rtp_time.abs_diff(expected) <= 1,
            "{report:?}, expected {expected}"
        );
        assert_eq!(report.packet_count, *packets);
    }
    // The publisher sends its own report: forwarded, mapped to the output stream, and the
    // gateway stops making its own.
    let output_ssrc = reports[0].1.ssrc;
    sim.send_video_report(0x1234_5678_0000_0000);
    let own = sim.forwarded_reports(true);
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].ssrc, own[0].ntp_time),
        (output_ssrc, 0x1234_5678_0000_0000)
    );
    assert_eq!(
        own[0].rtp_time, last_ts,
        "the publisher's clock, mapped like its packets"
    );
    for _ in 0..6 {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.outside(|session, _, now| session.send_reports(now));
        assert!(
            sim.forwarded_reports(true).is_empty(),
            "synthesized next to the publisher's"
        );
    }
}

#[test]
fn transport_wide_feedback_covers_every_packet_every_100_ms_while_media_flows() {
    let mut sim = connected_sim(Limits::default());
    let started = sim.now;
    let until = started + Duration::from_secs(2);
    // 100 packets: a video and an audio packet every 20 ms for 1 s.
    sim.stream_until(started + Duration::from_secs(1), PACE, 500);
    sim.run_until(until);
    let feedback = sim.publisher.received::<TransportLayerCc>();
    let during: Vec<_> = feedback.iter().filter(|(at, _)| *at > started).collect();
    assert!(
        during.len() >= 9,
        "{} feedback packets in 1 s",
        during.len()
    );
    for pair in during.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            Duration::from_millis(100),
            "feedback interval"
        );
    }
    let reported: u32 = during
        .iter()
        .map(|(_, fb)| u32::from(fb.packet_status_count))
        .sum();
    assert_eq!(reported, 100, "every packet of the second is reported once");
    let last = during.last().map(|(at, _)| *at).unwrap_or(started);
    assert!(
        last <= started + Duration::from_millis(1_100),
        "feedback without packets"
    );
}

#[test]
fn housekeeping_runs_the_timers_of_a_session_whose_worker_is_starved() {
    let mut sim = connected_sim(Limits::default());
    let ssrc = sim.publisher.video.ssrc;
    let reports = |sim: &Sim, from: Instant| -> Vec<Instant> {
        let rrs = sim.publisher.received::<ReceiverReport>();
        let video = rrs
            .into_iter()
            .filter(|(_, rr)| rr.reports.iter().any(|r| r.ssrc == ssrc));
        video.map(|(at, _)| at).filter(|at| *at >= from).collect()
    };
    let mut tick = sim.now;
    for _ in 0..4 {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
    }
    assert!(
        !reports(&sim, sim.start).is_empty(),
        "no receiver report at all"
    );
    // The worker stops running the session's timers; housekeeping goes on every 500 ms.
    sim.starved = true;
    let starved = sim.now;
    let mut ticks = Vec::new();
    for _ in 0..8 {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.outside(|session, _, now| session.run_overdue_timers(now));
        ticks.push(tick);
    }
    let late = reports(&sim, starved + MS);
    // Due every second; run by the first housekeeping more than 250 ms after that.
    assert!(
        late.len() >= 3,
        "{} receiver reports in 4 s of starvation",
        late.len()
    );
    assert!(
        late.iter().all(|at| ticks.contains(at)),
        "not sent by housekeeping"
    );
    for pair in late.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_secs(1) && gap <= Duration::from_millis(1_500));
    }
}
