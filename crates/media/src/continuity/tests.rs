use super::*;

fn p(session: Uuid, ssrc: u32, seq: u16, ts: u32) -> InputPacket {
    InputPacket {
        session,
        ssrc,
        seq,
        ts,
        clock_rate: 90_000,
    }
}

#[test]
fn a_reconnect_continues_sequence_numbers_and_timestamps() {
    let mut out = OutputStream::new();
    let t0 = Instant::now();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first = out.map(p(a, 111, 500, 9000), t0);
    assert_eq!(
        (first.seq, first.ts),
        (500, 9000),
        "first input keeps its numbering"
    );
    out.map(p(a, 111, 501, 12_000), t0);
    // The publisher reconnects: new session, new SSRC, its own numbering.
    let later = t0 + Duration::from_secs(1);
    let next = out.map(p(b, 222, 7, 100), later);
    assert_eq!(next.ssrc, first.ssrc);
    assert_eq!(next.seq, 502);
    assert_eq!(next.ts, 12_000 + 90_000);
    assert_eq!(out.map(p(b, 222, 8, 3100), later).seq, 503);
}

#[test]
fn retransmissions_do_not_move_the_stream_backwards() {
    let mut out = OutputStream::new();
    let t = Instant::now();
    let s = Uuid::new_v4();
    out.map(p(s, 1, 10, 0), t);
    out.map(p(s, 1, 12, 0), t);
    assert_eq!(
        out.map(p(s, 1, 11, 0), t).seq,
        11,
        "late packet keeps its place"
    );
    let next = out.map(p(Uuid::new_v4(), 2, 0, 0), t);
    assert_eq!(
        next.seq, 13,
        "continues after the newest, not the latest arrival"
    );
}

#[test]
fn skipped_padding_leaves_no_gap_and_reordering_still_maps_right() {
    let mut out = OutputStream::new();
    let t = Instant::now();
    let s = Uuid::new_v4();
    assert_eq!(out.map(p(s, 1, 100, 0), t).seq, 100);
    out.skip(p(s, 1, 101, 0), t);
    out.skip(p(s, 1, 102, 0), t);
    assert_eq!(out.map(p(s, 1, 103, 0), t).seq, 101, "padding closed up");
    assert_eq!(
        out.map(p(s, 1, 100, 0), t).seq,
        100,
        "a late retransmission keeps its number"
    );
    // Much later, the old skips are folded into the offset.
    assert_eq!(out.map(p(s, 1, 103 + 0x2000, 0), t).seq, 101 + 0x2000);
    assert_eq!(out.map(p(s, 1, 104 + 0x2000, 0), t).seq, 102 + 0x2000);
}

#[test]
fn sequence_numbers_wrap() {
    let mut out = OutputStream::new();
    let t = Instant::now();
    out.map(p(Uuid::new_v4(), 1, u16::MAX, 0), t);
    assert_eq!(out.map(p(Uuid::new_v4(), 2, 100, 0), t).seq, 0);
}

#[test]
fn sender_reports_follow_the_current_input_only() {
    let mut out = OutputStream::new();
    let s = Uuid::new_v4();
    out.map(p(s, 5, 1, 1000), Instant::now());
    assert_eq!(
        out.map_report(s, 5, 1000, 7 << 32, 90_000),
        Some((out.ssrc, 1000, 7 << 32))
    );
    assert_eq!(out.map_report(s, 6, 1000, 7 << 32, 90_000), None);
}

#[test]
fn a_new_inputs_reports_continue_the_consumers_time_line() {
    const SEC: u64 = 1 << 32;
    let mut out = OutputStream::new();
    let t0 = Instant::now();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    out.map(p(a, 1, 10, 0), t0);
    // Publisher A: RTP 90_000 at NTP 100 s.
    let (_, rtp_a, ntp_a) = out.map_report(a, 1, 90_000, 100 * SEC, 90_000).unwrap();
    assert_eq!(
        (rtp_a, ntp_a),
        (90_000, 100 * SEC),
        "the first input is forwarded as is"
    );
    out.map(p(a, 1, 11, 90_000), t0);
    // Publisher B comes back 2 s later (arrival time), its own clock says RTP 5_000 at
    // NTP 101.99 s: the re-base and B's clock disagree by 10 ms.
    let first_b = out.map(p(b, 2, 500, 5_000), t0 + Duration::from_secs(2));
    let (_, rtp_b, ntp_b) = out
        .map_report(b, 2, 5_000, 101 * SEC + SEC * 99 / 100, 90_000)
        .unwrap();
    assert_eq!(rtp_b, first_b.ts);
    // On A's line, RTP `rtp_b` is 2 s after RTP 90_000, i.e. NTP 102 s: B's report is
    // shifted there, so the consumer's timestamps do not jump back.
    let expected = 100 * SEC + u64::from(rtp_b.wrapping_sub(90_000)) * SEC / 90_000;
    assert!(
        ntp_b.abs_diff(expected) < SEC / 1000,
        "{ntp_b} vs {expected}"
    );
    // B's later reports keep B's own offset (one second later on both clocks).
    let (_, rtp_b2, ntp_b2) = out
        .map_report(b, 2, 95_000, 102 * SEC + SEC * 99 / 100, 90_000)
        .unwrap();
    assert_eq!(rtp_b2.wrapping_sub(rtp_b), 90_000);
    assert!(ntp_b2.wrapping_sub(ntp_b).abs_diff(SEC) < SEC / 1000);
}
