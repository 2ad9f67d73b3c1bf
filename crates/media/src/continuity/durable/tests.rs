use super::super::InputPacket;
use super::*;
use uuid::Uuid;

fn packet(seq: u16, ts: u32) -> InputPacket {
    // One publisher session per process run (the restored stream sees a new one).
    thread_local!(static SESSION: Uuid = Uuid::new_v4());
    InputPacket {
        session: SESSION.with(|s| *s),
        ssrc: 7,
        seq,
        ts,
        clock_rate: 90_000,
    }
}

#[test]
fn margins_cover_the_rate_since_the_checkpoint_and_stay_bounded() {
    assert_eq!(restart_margin(0.0, Duration::from_secs(1)), 100);
    assert_eq!(restart_margin(50.0, Duration::from_secs(2)), 200);
    assert_eq!(
        restart_margin(50.0, Duration::from_secs(3600)),
        50 * 10 + 100,
        "the window caps long downtimes"
    );
    assert_eq!(
        restart_margin(1e9, Duration::from_secs(5)),
        RESTORE_MAX_JUMP
    );
    assert_eq!(restart_margin(f64::NAN, Duration::from_secs(5)), 100);
}

#[test]
fn a_restored_stream_keeps_its_ssrc_and_jumps_forward_by_the_margin() {
    let (t0, w0) = (Instant::now(), SystemTime::now());
    let mut before = OutputStream::new();
    for i in 0..10u16 {
        before.map(packet(1000 + i, 3000 * u32::from(i)), t0);
    }
    let mut state = before.state(t0, w0);
    state.packets_per_sec = 30.0;
    assert_eq!(state.last.map(|l| l.seq), Some(1009));

    // The process restarts 2 s after the checkpoint; the publisher comes back.
    let (t1, w1) = (Instant::now(), w0 + Duration::from_secs(2));
    let mut after = OutputStream::restore(&state, w0, t1, w1);
    let next = after.map(packet(5, 0), t1);
    let margin = restart_margin(30.0, Duration::from_secs(2));
    assert_eq!(next.ssrc, before.ssrc);
    assert_eq!(next.seq, 1009u16.wrapping_add(margin).wrapping_add(1));
    let ticks = next.ts.wrapping_sub(27_000);
    assert!(
        (2 * 90_000..3 * 90_000).contains(&ticks),
        "timestamps advance by the wall-clock gap: {ticks}"
    );
}

#[test]
fn downtime_longer_than_uptime_still_advances_timestamps() {
    let state = OutputState {
        ssrc: 9,
        last: Some(LastOut {
            seq: 65_500,
            ts: 0,
            at_unix_ms: 1_000,
        }),
        packets_per_sec: 0.0,
    };
    let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let now = Instant::now();
    let mut stream = OutputStream::restore(&state, UNIX_EPOCH, now, wall);
    let next = stream.map(packet(1, 0), now);
    assert_eq!(next.seq, 65_500u16.wrapping_add(RESTORE_FIXED_MARGIN + 1));
    // ~999,999 s of 90 kHz ticks, modulo 2^32.
    let expected = (999_999u64 * 90_000 % (1 << 32)) as u32;
    assert!(next.ts.wrapping_sub(expected) < 90_000, "{}", next.ts);
}

#[test]
fn rates_come_from_successive_checkpoints() {
    let at = |seq, ms| OutputState {
        ssrc: 1,
        last: Some(LastOut {
            seq,
            ts: 0,
            at_unix_ms: ms,
        }),
        packets_per_sec: 0.0,
    };
    assert_eq!(at(130, 2_000).rate_since(&at(100, 1_000)), Some(30.0));
    assert_eq!(at(5, 2_000).rate_since(&at(65_530, 1_000)), Some(11.0));
    assert_eq!(at(100, 2_000).rate_since(&at(100, 1_000)), None);
}
