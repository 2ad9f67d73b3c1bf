use super::*;
use whipgate_media::continuity::{InputPacket, LastOut, RESTORE_FIXED_MARGIN};

fn packet(seq: u16) -> InputPacket {
    InputPacket {
        session: uuid::Uuid::nil(),
        ssrc: 5,
        seq,
        ts: u32::from(seq) * 3000,
        clock_rate: 90_000,
    }
}

fn stored(ssrc: u32, seq: u16, at_unix_ms: u64) -> OutputState {
    OutputState {
        ssrc,
        last: Some(LastOut {
            seq,
            ts: 0,
            at_unix_ms,
        }),
        packets_per_sec: 0.0,
    }
}

#[test]
fn another_nodes_stream_is_continued_past_the_margin() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut local = OutputStream::new();
    let sent = super::super::now_ms() - 500;
    assert!(adopt(&mut local, &stored(77, 1000, sent), wall, now, wall));
    let next = local.map(packet(1), now);
    assert_eq!(next.ssrc, 77);
    assert_eq!(next.seq, 1000 + RESTORE_FIXED_MARGIN + 1);
}

#[test]
fn our_own_newer_stream_is_kept_and_empty_records_are_ignored() {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut local = OutputStream::new();
    let first = local.map(packet(10), now);
    let old = super::super::now_ms() - 60_000;
    assert!(!adopt(
        &mut local,
        &stored(first.ssrc, 3, old),
        wall,
        now,
        wall
    ));
    let empty = OutputState {
        ssrc: 1,
        last: None,
        packets_per_sec: 0.0,
    };
    assert!(!adopt(&mut local, &empty, wall, now, wall));
    assert_eq!(local.map(packet(11), now).seq, first.seq.wrapping_add(1));
}
