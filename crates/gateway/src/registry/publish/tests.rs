//! Refusals aggregated per ingest and interval.

use super::*;

#[test]
fn refusals_are_reported_once_per_interval_with_their_count() {
    let mut r = Rejections::default();
    let t0 = Instant::now();
    assert_eq!(r.record(t0), Some(1), "the first at once");
    for _ in 0..20 {
        assert_eq!(r.record(t0 + Duration::from_secs(1)), None);
    }
    let later = t0 + REJECTION_INTERVAL;
    assert_eq!(r.record(later), Some(21), "the next one carries the rest");
    assert_eq!(r.record(later + REJECTION_INTERVAL), Some(1));
}
