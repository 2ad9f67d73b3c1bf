//! Loss repair on simulated time: duplicates, holes, NACK timing, give-up, bounds.

use std::time::{Duration, Instant};

use super::{Arrival, GaveUp, MAX_NACKS, PLI_INTERVAL, REPAIR_WINDOW, Repair, WINDOW};
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
