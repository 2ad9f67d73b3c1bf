use super::*;

#[test]
fn quantiles_are_within_the_bucket_resolution() {
    let mut h = Histogram::default();
    for v in 1..=10_000u64 {
        h.record(v);
    }
    let p50 = h.quantile(0.5) as f64;
    let p99 = h.quantile(0.99) as f64;
    assert!((p50 - 5000.0).abs() / 5000.0 < 0.02, "{p50}");
    assert!((p99 - 9900.0).abs() / 9900.0 < 0.02, "{p99}");
    assert_eq!(h.max(), 10_000);
    assert_eq!(Histogram::default().quantile(0.5), 0);
    for v in [0, 1, 63, 64, 65, 127, 128, 1000, 123_456_789] {
        assert!(bucket_low(bucket(v)) <= v, "{v}");
    }
}

#[test]
fn reads_this_process() {
    let s = proc_sample(std::process::id()).expect("own /proc entry");
    assert!(s.rss_kib > 0 && s.fds > 0 && s.threads > 0);
}
