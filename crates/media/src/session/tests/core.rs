//! One real gateway session driven on simulated time ([`crate::session::sim`]): connection (with a
//! lost handshake datagram too) and forwarding, the media and connect timeouts, a vanished
//! publisher and ICE restart, the duration and bitrate caps. Every instant below is
//! simulated; nothing sleeps. What the session says over RTCP is in `core_feedback_tests`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use crate::codec::{AudioCodec, VideoCodec};
use crate::session::SessionTimers;
use crate::session::sim::{Sim, VIDEO_PT};
use crate::session::{EndCause, Limits};

pub(super) const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The control task's housekeeping period (caps and timeouts are looked at this often).
pub(super) const HOUSEKEEPING: Duration = Duration::from_millis(500);
const STATS: Duration = Duration::from_secs(1);
/// The publisher's packet interval (one video and one audio packet each time).
pub(super) const PACE: Duration = Duration::from_millis(20);
pub(super) const MS: Duration = Duration::from_millis(1);

/// The session's timers in these tests.
pub(super) fn timers() -> SessionTimers {
    SessionTimers {
        media_timeout: MEDIA_TIMEOUT,
        connect_timeout: CONNECT_TIMEOUT,
        stats_interval: STATS,
    }
}

/// A session with these ingest limits whose publisher has connected (no media yet).
pub(super) fn connected_sim(limits: Limits) -> Sim {
    let mut sim = Sim::new(timers(), limits);
    let took = sim.connect();
    assert!(took < Duration::from_secs(1), "connecting took {took:?}");
    sim
}

/// The reason the session ended, if it did.
pub(super) fn ended(sim: &Sim) -> Option<EndCause> {
    sim.session.progress.end.as_ref().map(|(reason, _)| *reason)
}

/// Runs the control task's housekeeping (`check_limits`) every [`HOUSEKEEPING`] from the
/// session's start while the publisher streams, until the session ends or `limit`; returns
/// the simulated time since the start at which it ended.
fn stream_until_ended(sim: &mut Sim, limit: Duration) -> Option<Duration> {
    let mut tick = sim.start;
    while tick < sim.start + limit {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.check_limits(tick);
        if sim.session.progress.end.is_some() {
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
    let counters = sim.session.core.counters.snapshot();
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
    assert_eq!(sim.session.progress.last_media, last_media);
    // ICE consent checks go on; they are not media.
    sim.run_until(last_media + MEDIA_TIMEOUT);
    sim.check_limits(sim.now);
    assert_eq!(ended(&sim), None, "ended at exactly the media timeout");
    assert_eq!(sim.session.progress.last_media, last_media);
    sim.run_for(MS);
    sim.check_limits(sim.now);
    let (reason, detail) = sim
        .session
        .progress
        .end
        .clone()
        .expect("not ended after the timeout");
    assert_eq!(reason, EndCause::Inactivity);
    assert!(detail.starts_with("no media for 5"), "{detail}");
}

#[test]
fn media_keeps_a_session_alive_past_the_media_timeout() {
    let mut sim = connected_sim(Limits::default());
    let alive = stream_until_ended(&mut sim, MEDIA_TIMEOUT * 3);
    assert_eq!(alive, None, "{:?}", sim.session.progress.end);
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
        sim.check_limits(tick);
        assert_eq!(ended(&sim), None, "ended before the connect timeout");
    }
    assert_eq!(sim.elapsed(), CONNECT_TIMEOUT);
    sim.run_for(MS);
    sim.check_limits(sim.now);
    let (reason, detail) = sim.session.progress.end.clone().expect("not ended");
    assert_eq!(
        (reason, detail.as_str()),
        (EndCause::Inactivity, "never connected")
    );
    assert!(!sim.session.progress.connected && !sim.publisher.connected);
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
    sim.limits = cap;
    let at = stream_until_ended(&mut sim, Duration::from_secs(20));
    assert_eq!(
        at,
        Some(Duration::from_secs(10)),
        "{:?}",
        sim.session.progress.end
    );
    assert_eq!(ended(&sim), Some(EndCause::DurationCap));
    assert!(sim.session.progress.connected);
}

#[test]
fn a_bitrate_cap_ends_a_session_above_it_at_the_next_statistics_report() {
    let mut sim = connected_sim(Limits::default());
    // 940 + 12 bytes of video and 80 + 12 of audio every 20 ms: about 418 kbps.
    let stats = |sim: &mut Sim, reports: usize| -> Option<u64> {
        for _ in 0..reports {
            let tick = sim.now + STATS;
            sim.stream_until(tick, PACE, 940);
            sim.report_stats(STATS, tick);
            if sim.session.progress.end.is_some() {
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
        sim.limits = limits;
    };
    set_cap(&mut sim, 450_000);
    assert_eq!(
        stats(&mut sim, 3),
        None,
        "ended below the cap: {:?}",
        sim.session.progress.end
    );
    set_cap(&mut sim, 400_000);
    let capped_at = sim.elapsed().as_millis() as u64;
    let ended_at = stats(&mut sim, 3).expect("not ended above the cap");
    assert_eq!(
        ended_at,
        capped_at + 1_000,
        "ends at the first report above the cap"
    );
    let (reason, detail) = sim.session.progress.end.clone().expect("ended");
    assert_eq!(reason, EndCause::BitrateCap);
    assert!(detail.ends_with("above the cap of 400000 bps"), "{detail}");
}

/// Loses the `n`th (0-based) DTLS datagram the publisher sends.
fn lose_dtls(n: usize) -> crate::session::sim::Loss {
    let mut seen = 0;
    Box::new(move |d: &[u8]| {
        if !d.first().is_some_and(|b| (20..=63).contains(b)) {
            return false;
        }
        seen += 1;
        seen == n + 1
    })
}

#[test]
fn a_lost_handshake_datagram_is_retransmitted_and_the_session_connects() {
    for n in 0..3 {
        let mut sim = Sim::new(timers(), Limits::default());
        sim.lose = lose_dtls(n);
        let took = sim.connect();
        // The retransmission timer of DTLS is one second, but a ClientHello is sent again
        // after 30 ms the first time (vendored rtc-dtls patch): a lost one costs no second.
        let expected = if n == 0 {
            Duration::ZERO..Duration::from_secs(1)
        } else {
            Duration::ZERO..Duration::from_secs(4)
        };
        assert!(
            expected.contains(&took),
            "DTLS datagram {n} lost: connected after {took:?}"
        );
        sim.send_video(500, true);
        assert_eq!(sim.forwarded(true).len(), 1, "DTLS datagram {n} lost");
    }
}

#[test]
fn a_vanished_publisher_is_ended_by_the_media_timeout_never_by_ice() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.now + Duration::from_secs(1);
    sim.stream_until(until, PACE, 500);
    // Gone without a word: nothing from the publisher arrives any more.
    sim.lose = Box::new(|_| true);
    let gone = sim.now;
    // The ICE-lite agent has no disconnected or failed state (rtc-ice would judge the pair by
    // STUN alone, and some publishers send none once connected): without housekeeping the
    // session is left alone, however long.
    sim.run_for(Duration::from_secs(90));
    assert_eq!(ended(&sim), None, "{:?}", sim.session.progress.end);
    // Housekeeping ends it for inactivity, the media timeout after the last packet.
    sim.check_limits(sim.now);
    let (reason, detail) = sim.session.progress.end.clone().expect("ended");
    assert_eq!(reason, EndCause::Inactivity);
    let idle = sim.now - gone;
    assert!(
        detail.starts_with(&format!("no media for {}", idle.as_secs())),
        "{detail}"
    );
}

#[test]
fn after_an_ice_restart_media_and_consent_continue_on_the_new_credentials() {
    let mut sim = connected_sim(Limits::default());
    let until = sim.now + Duration::from_secs(1);
    sim.stream_until(until, PACE, 500);
    let before = sim.forwarded(true);
    let last_input = sim.publisher.video.seq.wrapping_sub(1);
    let fragment = sim.publisher.restart_ice(sim.now);
    let mut answer = None;
    sim.outside(|session, _, now| answer = Some(session.ice_restart(&fragment, now)));
    let restarted = answer.expect("ran").expect("ICE restart");
    assert_ne!(restarted.ufrag, sim.ufrag, "new credentials");
    assert!(
        restarted
            .fragment
            .contains(&format!("a=ice-ufrag:{}", restarted.ufrag)),
        "the answer fragment names the new ufrag: {}",
        restarted.fragment
    );
    let now = sim.now;
    sim.publisher.apply_restart(now, &restarted.fragment);
    // The video sequence numbers the publisher puts on the wire from now on (webrtc-rs holds
    // its media until its restarted ICE agent has a pair again).
    let sent = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&sent);
    sim.lose = Box::new(move |d: &[u8]| {
        if d.len() > 12 && d[0] >> 6 == 2 && d[1] & 0x7f == VIDEO_PT {
            seen.borrow_mut().push(u16::from_be_bytes([d[2], d[3]]));
        }
        false
    });
    // A minute on the new credentials, with housekeeping: media keeps the session alive.
    let mut after = Vec::new();
    let mut tick = sim.now;
    for _ in 0..120 {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.check_limits(tick);
        assert_eq!(ended(&sim), None, "{:?}", sim.session.progress.end);
        after.extend(sim.forwarded(true));
    }
    assert!(sim.publisher.connected);
    let sent = sent.borrow();
    assert!(
        sent.len() > 2_900,
        "the publisher sent {} packets",
        sent.len()
    );
    assert_eq!(
        after.len(),
        sent.len(),
        "every packet after the restart forwarded"
    );
    // One output stream, whose numbers follow the input's across the restart.
    let (last, first) = (before.last().expect("before"), &after[0]);
    assert_eq!(first.header.ssrc, last.header.ssrc);
    let input_step = sent[0].wrapping_sub(last_input);
    let output_step = first
        .header
        .sequence_number
        .wrapping_sub(last.header.sequence_number);
    assert_eq!(output_step, input_step);
}
