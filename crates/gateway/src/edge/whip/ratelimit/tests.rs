use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_burst_then_the_rate() {
    let limiter = RateLimiter::new(2.0, 3, 10).unwrap();
    let t0 = Instant::now();
    for _ in 0..3 {
        limiter.check(ip("192.0.2.1"), t0).unwrap();
    }
    let wait = limiter.check(ip("192.0.2.1"), t0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(500));
    limiter
        .check(ip("192.0.2.2"), t0)
        .expect("other clients unaffected");
    limiter
        .check(ip("192.0.2.1"), t0 + Duration::from_millis(500))
        .expect("refilled one");
    assert!(
        limiter
            .check(ip("192.0.2.1"), t0 + Duration::from_millis(500))
            .is_err()
    );
}

#[test]
fn ipv6_clients_share_their_64() {
    let limiter = RateLimiter::new(1.0, 1, 10).unwrap();
    let t0 = Instant::now();
    limiter.check(ip("2001:db8:1:2::1"), t0).unwrap();
    assert!(limiter.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
    limiter.check(ip("2001:db8:1:3::1"), t0).unwrap();
    limiter.check(ip("::ffff:192.0.2.7"), t0).unwrap();
    assert!(limiter.check(ip("192.0.2.7"), t0).is_err(), "mapped = v4");
}

#[test]
fn the_table_stays_bounded() {
    let limiter = RateLimiter::new(1.0, 2, 4).unwrap();
    let t0 = Instant::now();
    for i in 0..4 {
        limiter.check(IpAddr::from([10, 0, 0, i]), t0).unwrap();
    }
    // Full of busy clients: a newcomer waits.
    assert!(limiter.check(ip("10.0.1.1"), t0).is_err());
    assert_eq!(limiter.tracked(), 4);
    // Once they are idle (refilled), one makes room for each newcomer.
    let later = t0 + Duration::from_secs(5);
    limiter.check(ip("10.0.1.1"), later).unwrap();
    assert_eq!(limiter.tracked(), 4);
    limiter.check(ip("10.0.1.2"), later).unwrap();
    assert_eq!(limiter.tracked(), 4);
    assert!(RateLimiter::new(0.0, 5, 4).is_none(), "0 turns limits off");
}

#[test]
fn a_tiny_rate_names_a_bounded_wait() {
    let limiter = RateLimiter::new(1e-20, 1, 4).unwrap();
    let t0 = Instant::now();
    limiter.check(ip("192.0.2.1"), t0).unwrap();
    assert_eq!(limiter.check(ip("192.0.2.1"), t0), Err(MAX_WAIT));
}

#[test]
fn a_full_table_evicts_with_bounded_work() {
    // A full table of busy clients but one idle client far from the cursor: the newcomer
    // looks at EVICT_PROBES entries only, so it is refused until the cursor gets there;
    // the work per newcomer never depends on the table's size.
    let n = 64;
    let limiter = RateLimiter::new(1.0, 2, n).unwrap();
    let t0 = Instant::now();
    let idle = IpAddr::from([10, 9, 9, 9]);
    limiter.check(idle, t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    for i in 1..n {
        let client = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
        limiter.check(client, later).unwrap();
        limiter.check(client, later).unwrap();
    }
    assert_eq!(limiter.tracked(), n);
    // The idle client is the first entry: the first probe finds it.
    limiter.check(ip("10.1.0.1"), later).unwrap();
    assert_eq!(limiter.tracked(), n);
    assert!(
        limiter.check(idle, later).is_err(),
        "it was the one evicted"
    );
}
