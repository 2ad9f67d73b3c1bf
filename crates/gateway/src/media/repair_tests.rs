//! Loss repair on simulated time: duplicates, holes, NACK timing, give-up, bounds.

use std::time::{Duration, Instant};

use super::repair::{Arrival, GaveUp, MAX_NACKS, PLI_INTERVAL, REPAIR_WINDOW, Repair, WINDOW};
use crate::codec::MediaKind;

const SSRC: u32 = 0x1111;
const MS: Duration = Duration::from_millis(1);

fn video(repair: &mut Repair, seq: u16, at: Instant) -> Arrival {
    repair.arrive(MediaKind::Video, SSRC, seq, false, true, at)
}

/// The NACKed sequence numbers due at `at` (and nothing given up).
fn nacks_at(repair: &mut Repair, at: Instant) -> Vec<u16> {
    let due = repair.poll(at);
    assert!(due.gave_up.is_empty(), "{due:?}");
    due.nacks.into_iter().flat_map(|(_, seqs)| seqs).collect()
}

#[test]
fn a_duplicate_is_dropped_and_a_late_packet_fills_its_hole() {
    let mut r = Repair::default();
    let t = Instant::now();
    assert_eq!(video(&mut r, 10, t), Arrival::New);
    assert_eq!(video(&mut r, 10, t), Arrival::Duplicate);
    assert_eq!(video(&mut r, 12, t + MS), Arrival::New);
    assert_eq!(video(&mut r, 11, t + 30 * MS), Arrival::Filled(29 * MS));
    assert_eq!(
        video(&mut r, 11, t + 40 * MS),
        Arrival::Duplicate,
        "RTX probe repeating it"
    );
    assert_eq!(video(&mut r, 12, t + 40 * MS), Arrival::Duplicate);
    assert!(r.has(SSRC, 11) && r.has(SSRC, 12) && !r.has(SSRC, 13));
}

#[test]
fn a_hole_is_nacked_at_once_then_at_the_retry_interval_until_it_is_filled() {
    let mut r = Repair::default();
    let t = Instant::now();
    video(&mut r, 100, t);
    assert_eq!(r.next_deadline(), None, "nothing missing, nothing due");
    video(&mut r, 103, t + 20 * MS);
    assert_eq!(r.next_deadline(), Some(t + 20 * MS), "due at once");
    assert_eq!(nacks_at(&mut r, t + 20 * MS), vec![101, 102]);
    assert!(
        nacks_at(&mut r, t + 21 * MS).is_empty(),
        "not again right away"
    );
    let retry = r.retry_interval();
    assert_eq!(r.next_deadline(), Some(t + 20 * MS + retry));
    // 102 comes back 30 ms after its NACK: one round trip measured.
    assert_eq!(video(&mut r, 102, t + 50 * MS), Arrival::Filled(30 * MS));
    assert_eq!(
        nacks_at(&mut r, t + 20 * MS + retry),
        vec![101],
        "only what is missing"
    );
    assert!(
        r.retry_interval() < retry,
        "the measured 30 ms is shorter than the first guess"
    );
    video(&mut r, 101, t + 200 * MS);
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn the_retry_interval_follows_the_measured_round_trip() {
    let mut r = Repair::default();
    let mut t = Instant::now();
    let mut seq = 0u16;
    video(&mut r, seq, t);
    for _ in 0..20 {
        // One packet lost, NACKed at once, back 10 ms later.
        seq += 2;
        video(&mut r, seq, t);
        assert_eq!(nacks_at(&mut r, t), vec![seq - 1]);
        t += 10 * MS;
        assert!(video(&mut r, seq - 1, t) != Arrival::Duplicate);
        t += 10 * MS;
    }
    let retry = r.retry_interval();
    assert!(retry >= 10 * MS && retry <= 20 * MS, "{retry:?}");
}

#[test]
fn a_hole_is_given_up_after_the_repair_window_and_asked_at_most_max_nacks_times() {
    let mut r = Repair::default();
    let t = Instant::now();
    video(&mut r, 1, t);
    video(&mut r, 3, t);
    let mut asked = 0;
    let mut now = t;
    let gave_up = loop {
        let due = r.poll(now);
        asked += due.nacks.iter().filter(|(_, s)| s.contains(&2)).count();
        if !due.gave_up.is_empty() {
            break due.gave_up;
        }
        now = r.next_deadline().expect("something is due");
    };
    assert_eq!(now, t + REPAIR_WINDOW);
    assert!(
        asked <= usize::from(MAX_NACKS) && asked >= 3,
        "asked {asked} times"
    );
    assert_eq!(
        gave_up,
        vec![GaveUp {
            ssrc: SSRC,
            kind: MediaKind::Video,
            media: 1,
            probes: 0
        }]
    );
    assert_eq!(r.next_deadline(), None);
    // Too late now: it is forwarded (the consumer may still use it), not a duplicate.
    assert_eq!(video(&mut r, 2, now + MS), Arrival::New);
}

#[test]
fn a_hole_between_padding_probes_is_given_up_as_a_probe() {
    let mut r = Repair::default();
    let t = Instant::now();
    r.arrive(MediaKind::Video, SSRC, 1, false, true, t);
    r.arrive(MediaKind::Video, SSRC, 2, true, true, t);
    r.arrive(MediaKind::Video, SSRC, 4, true, true, t);
    let due = r.poll(t + REPAIR_WINDOW);
    assert_eq!(due.gave_up[0].probes, 1);
    assert_eq!(due.gave_up[0].media, 0);
}

#[test]
fn audio_holes_are_not_nacked_but_are_filled_by_red_copies() {
    let mut r = Repair::default();
    let t = Instant::now();
    r.arrive(MediaKind::Audio, 7, 50, false, false, t);
    r.arrive(MediaKind::Audio, 7, 52, false, false, t + 40 * MS);
    assert!(r.poll(t + 40 * MS).nacks.is_empty());
    assert!(!r.has(7, 51));
    assert_eq!(
        r.arrive(MediaKind::Audio, 7, 51, false, false, t + 40 * MS),
        Arrival::Filled(Duration::ZERO)
    );
}

#[test]
fn a_jump_in_numbering_is_a_restart_not_a_thousand_losses() {
    let mut r = Repair::default();
    let t = Instant::now();
    video(&mut r, 10, t);
    assert_eq!(video(&mut r, 10 + 5_000, t), Arrival::New);
    assert_eq!(r.next_deadline(), None, "no NACK storm");
    assert_eq!(
        video(&mut r, 3, t),
        Arrival::New,
        "far behind: a restart too"
    );
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn sequence_numbers_wrap() {
    let mut r = Repair::default();
    let t = Instant::now();
    video(&mut r, u16::MAX - 1, t);
    video(&mut r, 1, t);
    assert_eq!(nacks_at(&mut r, t), vec![u16::MAX, 0]);
    assert_eq!(video(&mut r, 0, t + MS), Arrival::Filled(MS));
    assert_eq!(video(&mut r, u16::MAX - 1, t + MS), Arrival::Duplicate);
}

#[test]
fn memory_is_bounded_by_the_window_and_the_number_of_streams() {
    let mut r = Repair::default();
    let t = Instant::now();
    // Every other packet lost for far longer than the window: the holes behind it go.
    let mut seq = 0u16;
    for _ in 0..4 * WINDOW {
        video(&mut r, seq, t);
        seq = seq.wrapping_add(2);
    }
    let due = r.poll(t);
    let open: usize = due.nacks.iter().map(|(_, s)| s.len()).sum();
    assert!(open <= 512, "{open} holes open");
    let gave_up: u64 = due.gave_up.iter().map(|g| g.media).sum();
    assert!(gave_up >= u64::from(WINDOW), "{gave_up}");
    // Many SSRCs (an attacker's, or layers coming and going): a few streams at most.
    for ssrc in 0..100u32 {
        r.arrive(MediaKind::Video, ssrc, 1, false, true, t);
        r.arrive(MediaKind::Video, ssrc, 3, false, true, t);
    }
    let due = r.poll(t);
    assert!(due.nacks.len() <= 8, "{} streams", due.nacks.len());
}

#[test]
fn plis_for_given_up_holes_are_rate_limited() {
    let mut r = Repair::default();
    let t = Instant::now();
    assert!(r.may_send_pli(t));
    assert!(!r.may_send_pli(t + PLI_INTERVAL - MS));
    assert!(r.may_send_pli(t + PLI_INTERVAL));
}

// What a whole session does, on simulated time ([`super::sim`]): a publisher that offers
// RTX and RED, as browsers do.

mod session {
    use std::time::{Duration, Instant};

    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

    use super::super::core_feedback_tests::lose_video;
    use super::super::core_tests::{MS, PACE, connected_sim, timers};
    use super::super::repair::REPAIR_WINDOW;
    use super::super::sim::{AUDIO_PT, RED_PT, RTX_PT, Sim};
    use crate::registry::Limits;

    fn repair_sim() -> Sim {
        let mut sim = Sim::with_repair(timers(), Limits::default());
        sim.connect();
        sim
    }

    fn nacked(sim: &Sim, seq: u16) -> Vec<Instant> {
        sim.publisher
            .received::<TransportLayerNack>()
            .into_iter()
            .filter(|(_, n)| n.nacks.iter().any(|p| p.packet_list().contains(&seq)))
            .map(|(at, _)| at)
            .collect()
    }

    /// Loses the publisher's RTP packets with payload type `pt` and sequence number `seq`.
    fn lose(pt: u8, seq: u16) -> super::super::sim::Loss {
        Box::new(move |d: &[u8]| {
            d.len() > 12
                && d[0] >> 6 == 2
                && d[1] & 0x7f == pt
                && u16::from_be_bytes([d[2], d[3]]) == seq
        })
    }

    #[test]
    fn rtx_is_unwrapped_into_the_media_stream_and_its_probes_never_touch_it() {
        let mut sim = repair_sim();
        assert_eq!(sim.session.plan.video_rtx, Some(RTX_PT), "RTX negotiated");
        sim.send_video(500, true);
        sim.run_for(PACE);
        let lost = sim.publisher.video.seq;
        sim.lose = lose_video(lost);
        sim.send_video(500, false);
        sim.lose = Box::new(|_| false);
        sim.run_for(PACE);
        sim.send_video(500, false);
        // Asked for at once (the packet after the hole arrived), not at a 100 ms tick.
        let asked = nacked(&sim, lost);
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0] <= sim.now);
        // Bandwidth probes on the RTX stream: padding only, and a repeat of a packet the
        // gateway has (libwebrtc probes with payloads too).
        sim.send_rtx(None, &[]);
        sim.send_rtx(None, &[]);
        sim.send_rtx(Some(lost.wrapping_sub(1)), &[0x65, 0xab]);
        // The repair, on the RTX stream.
        sim.run_for(10 * MS);
        sim.send_rtx(Some(lost), &[0x41, 0xcd, 0xcd]);
        sim.run_for(PACE);
        sim.send_video(500, false);
        let out = sim.forwarded(true);
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(out.len(), 4, "the four media packets once each: {seqs:?}");
        let first = seqs[0];
        let mut sorted: Vec<u16> = seqs.iter().map(|s| s.wrapping_sub(first)).collect();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3], "no hole, nothing extra: {seqs:?}");
        let repaired = &out[2];
        assert_eq!(
            repaired.header.sequence_number,
            first.wrapping_add(1),
            "its own place"
        );
        assert_eq!(&repaired.payload[..], &[0x41, 0xcd, 0xcd], "OSN taken off");
        assert_eq!(repaired.header.ssrc, out[0].header.ssrc, "the media SSRC");
        assert_eq!(
            repaired.header.payload_type, 96,
            "the consumer's H264 payload type"
        );
        let counters = sim.session.admission.counters.snapshot();
        assert_eq!(counters.packets_repaired, 1);
        assert_eq!(
            counters.duplicates_dropped, 1,
            "the probe repeating a packet"
        );
        assert_eq!(counters.packets_unrepaired, 0);
        // Not asked again once repaired.
        sim.run_for(Duration::from_millis(500));
        assert_eq!(nacked(&sim, lost).len(), 1);
    }

    #[test]
    fn red_is_unwrapped_to_opus_and_a_lost_packet_is_restored_from_the_next() {
        let mut sim = repair_sim();
        assert_eq!(sim.session.plan.audio_red, Some(RED_PT), "RED negotiated");
        let (first, ts0) = sim.send_red(&[], b"frame0");
        sim.run_for(PACE);
        sim.lose = lose(RED_PT, first.wrapping_add(1));
        sim.send_red(&[(960, b"frame0")], b"frame1");
        sim.lose = Box::new(|_| false);
        sim.run_for(PACE);
        sim.send_red(&[(1920, b"frame0"), (960, b"frame1")], b"frame2");
        sim.run_for(PACE);
        let out = sim.forwarded(false);
        let got: Vec<(u16, u32, u8, &[u8])> = out
            .iter()
            .map(|p| {
                (
                    p.header
                        .sequence_number
                        .wrapping_sub(out[0].header.sequence_number),
                    p.header.timestamp.wrapping_sub(out[0].header.timestamp),
                    p.header.payload_type,
                    &p.payload[..],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, AUDIO_PT, &b"frame0"[..]),
                (1, 960, AUDIO_PT, &b"frame1"[..]),
                (2, 1920, AUDIO_PT, &b"frame2"[..]),
            ],
            "plain Opus; the lost one restored at its own number and time"
        );
        assert_eq!(
            out[0].header.timestamp, ts0,
            "the first input keeps its timestamps"
        );
        let counters = sim.session.admission.counters.snapshot();
        assert_eq!(counters.red_recovered, 1);
        assert_eq!(counters.packets_repaired, 1);
        assert_eq!(
            counters.duplicates_dropped, 0,
            "redundant copies of packets it has are skipped"
        );
    }

    #[test]
    fn a_video_hole_given_up_asks_for_a_keyframe_once_per_interval() {
        let mut sim = connected_sim(Limits::default());
        sim.send_video(500, true);
        sim.run_for(PACE);
        let plis_before = sim.publisher.received::<PictureLossIndication>().len();
        let lost = sim.publisher.video.seq;
        sim.lose = lose_video(lost);
        sim.send_video(500, false);
        sim.lose = Box::new(|_| false);
        let seen = sim.now;
        // The publisher never answers NACKs (and 100 ms later another packet is lost).
        let end = seen + REPAIR_WINDOW + Duration::from_millis(300);
        let mut second = None;
        while sim.now + PACE <= end {
            sim.run_for(PACE);
            if second.is_none() && sim.now >= seen + Duration::from_millis(100) {
                let seq = sim.publisher.video.seq;
                second = Some(seq);
                sim.lose = lose_video(seq);
                sim.send_video(500, false);
                sim.lose = Box::new(|_| false);
                continue;
            }
            sim.send_video(500, false);
        }
        let asked = nacked(&sim, lost);
        assert!(asked.len() >= 3, "NACKed {} times", asked.len());
        let plis: Vec<Instant> = sim
            .publisher
            .received::<PictureLossIndication>()
            .into_iter()
            .skip(plis_before)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(
            plis.len(),
            1,
            "one PLI for two holes 100 ms apart: {plis:?}"
        );
        let after = plis[0].duration_since(seen);
        assert!(
            after >= REPAIR_WINDOW && after < REPAIR_WINDOW + 50 * MS,
            "PLI {after:?} after the loss"
        );
        let counters = sim.session.admission.counters.snapshot();
        assert_eq!(counters.packets_unrepaired, 2);
        let registry = sim.session.admission.guard.registry();
        assert_eq!(registry.metrics().repair_plis_sent.get(), 1);
    }

    #[test]
    fn a_retransmission_far_behind_on_the_media_ssrc_is_not_taken_for_a_replay() {
        // A publisher without RTX resends on the media SSRC; at 720p a keyframe is 100+
        // packets, so the resend of its first packet comes well over SRTP's default replay
        // window (64) behind the newest.
        let mut sim = connected_sim(Limits::default());
        sim.send_video(500, true);
        let lost = sim.publisher.video.seq;
        sim.lose = lose_video(lost);
        sim.send_video(500, true);
        sim.lose = Box::new(|_| false);
        for _ in 0..300 {
            sim.send_video(500, true);
        }
        sim.forwarded(true);
        sim.run_for(PACE);
        sim.resend_video(lost);
        let out = sim.forwarded(true);
        assert_eq!(
            out.len(),
            1,
            "the retransmission 300 packets behind is forwarded"
        );
        assert_eq!(
            sim.session.admission.counters.snapshot().packets_repaired,
            1
        );
    }
}
