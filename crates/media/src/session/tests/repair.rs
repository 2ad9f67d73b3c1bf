// What a whole session does, on simulated time ([`crate::session::sim`]): a publisher that offers
// RTX and RED, as browsers do.

mod session {
    use std::time::{Duration, Instant};

    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

    use super::super::core::{MS, PACE, connected_sim, timers};
    use super::super::core_feedback::lose_video;
    use crate::repair::REPAIR_WINDOW;
    use crate::session::Limits;
    use crate::session::sim::{AUDIO_PT, RED_PT, RTX_PT, Sim};

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
    fn lose(pt: u8, seq: u16) -> crate::session::sim::Loss {
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
        assert_eq!(
            sim.session.core.plan.video_rtx,
            Some(RTX_PT),
            "RTX negotiated"
        );
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
        let counters = sim.session.core.counters.snapshot();
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
        assert_eq!(
            sim.session.core.plan.audio_red,
            Some(RED_PT),
            "RED negotiated"
        );
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
        let counters = sim.session.core.counters.snapshot();
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
        let counters = sim.session.core.counters.snapshot();
        assert_eq!(counters.packets_unrepaired, 2);
        assert_eq!(sim.meter.get("repair_pli_sent", ""), 1);
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
        assert_eq!(sim.session.core.counters.snapshot().packets_repaired, 1);
    }
}
