//! What real publishers do to a session (issue 20), on simulated time ([`crate::session::sim`]):
//! OBS sends SPS, PPS and IDR in packets of their own and may cut an IDR into slices, and
//! FFmpeg's WHIP muxer sends no consent checks once DTLS is up. Nothing sleeps.

use std::time::Duration;

use bytes::Bytes;

use super::core::{HOUSEKEEPING, PACE, connected_sim, ended, timers};
use crate::session::Limits;
use crate::session::sim::{Consent, Sim};

/// An H264 NAL unit (or FU-A fragment) whose first bytes are `head` and whose body is `len`
/// bytes of `fill`: every packet of a test carries its own fill, so any mix-up shows.
fn nal(head: &[u8], fill: u8, len: usize) -> Bytes {
    let mut payload = head.to_vec();
    payload.resize(head.len() + len, fill);
    Bytes::from(payload)
}

/// Sequence Parameter Set (NAL type 7), Picture Parameter Set (8), each alone in a packet
/// (single NAL unit mode), as OBS sends them ahead of every IDR.
fn parameter_sets(fill: u8) -> [Bytes; 2] {
    [
        nal(&[0x67, 0x42, 0xe0, 0x1f], fill, 20),
        nal(&[0x68, 0xce], fill.wrapping_add(1), 4),
    ]
}

/// One IDR slice cut into `fragments` FU-A packets (indicator NRI 3 type 28; header S on
/// the first, E on the last, type 5).
fn fu_a_idr_slice(fragments: u8, fill: u8) -> Vec<Bytes> {
    (0..fragments)
        .map(|i| {
            let start = if i == 0 { 0x80 } else { 0 };
            let end = if i + 1 == fragments { 0x40 } else { 0 };
            nal(&[0x7c, start | end | 5], fill.wrapping_add(i), 900)
        })
        .collect()
}

/// Sends each access unit `PACE` apart; returns what the consumer received.
fn send_all(sim: &mut Sim, units: &[Vec<Bytes>]) -> Vec<rtc::rtp::Packet> {
    for unit in units {
        sim.run_for(PACE);
        sim.send_access_unit(unit);
    }
    sim.forwarded(true)
}

/// The forwarded packets of `units` are the sent ones, in order and unchanged: payload bytes,
/// the marker bit on the last packet of each access unit only, consecutive sequence
/// numbers, one timestamp per access unit (stepping as the input's did), one SSRC.
fn assert_forwarded_intact(units: &[Vec<Bytes>], out: &[rtc::rtp::Packet]) {
    let sent: Vec<(usize, bool, &Bytes)> = units
        .iter()
        .enumerate()
        .flat_map(|(u, unit)| {
            let last = unit.len() - 1;
            unit.iter().enumerate().map(move |(i, p)| (u, i == last, p))
        })
        .collect();
    assert_eq!(out.len(), sent.len(), "every packet forwarded");
    for (n, ((_, marker, payload), got)) in sent.iter().zip(out).enumerate() {
        assert_eq!(&got.payload, *payload, "payload of packet {n}");
        assert_eq!(got.header.marker, *marker, "marker bit of packet {n}");
    }
    for (pair, sent) in out.windows(2).zip(sent.windows(2)) {
        let (a, b) = (&pair[0].header, &pair[1].header);
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1));
        assert_eq!(b.ssrc, a.ssrc);
        let step = if sent[0].0 == sent[1].0 { 0 } else { 1_800 };
        assert_eq!(
            b.timestamp.wrapping_sub(a.timestamp),
            step,
            "timestamp step between packets {} and {}",
            a.sequence_number,
            b.sequence_number
        );
    }
}

#[test]
fn parameter_sets_in_their_own_packets_and_a_sliced_idr_are_forwarded_intact() {
    let mut sim = connected_sim(Limits::default());
    let keyframes = |sim: &Sim| sim.session.core.counters.snapshot().keyframes;
    let p_frame = |fill: u8| vec![nal(&[0x41, 0x9a], fill, 600)];

    // SPS, PPS and a single-NAL IDR as three packets of one access unit, then a P frame.
    let [sps, pps] = parameter_sets(0x10);
    let split = vec![sps, pps, nal(&[0x65, 0x88], 0x12, 1_200)];
    let units = [split, p_frame(0x20)];
    let out = send_all(&mut sim, &units);
    assert_forwarded_intact(&units, &out);
    assert_eq!(
        keyframes(&sim),
        1,
        "one keyframe: the lone SPS and PPS packets do not count, the IDR does"
    );

    // SPS, PPS and an IDR of three slices, each cut into FU-A fragments (3, 3 and 2
    // packets), then a P frame.
    let [sps, pps] = parameter_sets(0x30);
    let mut sliced = vec![sps, pps];
    for (fragments, fill) in [(3, 0x40), (3, 0x50), (2, 0x60)] {
        sliced.extend(fu_a_idr_slice(fragments, fill));
    }
    let units = [sliced, p_frame(0x70)];
    let out = send_all(&mut sim, &units);
    assert_forwarded_intact(&units, &out);
    // Every slice's FU-A start fragment starts an IDR slice: the access unit (one SSRC and
    // RTP timestamp) still counts once.
    assert_eq!(
        keyframes(&sim),
        2,
        "the keyframe counter counts access units, not IDR slices"
    );
}

#[test]
fn a_publisher_without_consent_checks_after_connecting_stays_forwarded() {
    // As FFmpeg's WHIP muxer: once DTLS is up, the publisher sends no STUN (and would any
    // reach the gateway, it is lost on the way), only SRTP and SRTCP.
    let mut sim = Sim::with_consent(timers(), Limits::default(), Consent::None);
    sim.connect();
    let connected = sim.now;
    sim.lose = Box::new(|d: &[u8]| d.first().is_some_and(|b| *b < 2));
    let first_seq = sim.publisher.video.seq;
    // Well past the 45 s (rtc-ice's disconnected 15 s + failed 30 s, counted from the last
    // STUN received: media does not count) at which such a session used to end with an ICE
    // failure while its media flowed. Housekeeping runs all along.
    let span = Duration::from_secs(75);
    let mut forwarded = 0;
    let mut tick = connected;
    while tick < connected + span {
        tick += HOUSEKEEPING;
        sim.stream_until(tick, PACE, 500);
        sim.check_limits(tick);
        assert_eq!(
            ended(&sim),
            None,
            "ended {:?} after the last check",
            sim.now - sim.last_check
        );
        forwarded += sim.forwarded(true).len();
    }
    assert!(
        sim.now - sim.last_check >= span,
        "a check reached the gateway {:?} ago",
        sim.now - sim.last_check
    );
    assert!(sim.session.progress.connected && sim.publisher.connected);
    let sent = usize::from(sim.publisher.video.seq.wrapping_sub(first_seq));
    assert!(sent >= 3_700, "{sent} video packets sent");
    assert_eq!(forwarded, sent, "every video packet forwarded");
}
