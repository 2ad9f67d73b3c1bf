//! Per-client rate limits on WHIP requests (RFC 9725 section 5): a token bucket per client
//! address in a table of bounded size. IPv6 clients are keyed by their /64 (one subscriber's
//! prefix), IPv4-mapped addresses as IPv4 ([`crate::client::client_key`]). When the table is
//! full, a newcomer looks at a few entries from a rotating cursor and takes the place of the
//! first idle one (refilled to the burst): constant work under the lock, however large the
//! table. If none of those is idle the newcomer is refused for now, which is what an
//! address-spraying client deserves and costs known clients nothing.

use indexmap::IndexMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Clients tracked at most.
pub(super) const MAX_CLIENTS: usize = 16_384;
/// Longest wait a refusal names.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Entries a newcomer looks at for an idle one when the table is full.
const EVICT_PROBES: usize = 8;

/// A token bucket per client.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: IndexMap<IpAddr, Bucket>,
    /// Where the next eviction probe starts.
    cursor: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_sec` requests per second after a burst of `burst`; `None` when `per_sec` is 0
    /// (limits off).
    pub fn new(per_sec: f64, burst: u32, max_clients: usize) -> Option<Self> {
        (per_sec > 0.0).then(|| RateLimiter {
            per_sec,
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    /// Takes one request from `client`'s bucket, or says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = crate::client::client_key(client);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.buckets.contains_key(&key) && table.buckets.len() >= self.max_clients {
            self.evict_one(&mut table, now)?;
        }
        let bucket = table.buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // Bounded whatever the rate: Retry-After never overflows.
            let wait = (1.0 - bucket.tokens) / self.per_sec;
            Err(Duration::try_from_secs_f64(wait).map_or(MAX_WAIT, |w| w.min(MAX_WAIT)))
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets
            .len()
    }

    /// Frees one place by dropping an idle bucket among the next [`EVICT_PROBES`] entries;
    /// `Err` (retry in a second) when none of them is idle.
    fn evict_one(&self, table: &mut Table, now: Instant) -> Result<(), Duration> {
        for _ in 0..EVICT_PROBES.min(table.buckets.len()) {
            let at = table.cursor % table.buckets.len();
            let idle = table
                .buckets
                .get_index(at)
                .is_some_and(|(_, b)| self.refilled(b, now) >= self.burst);
            if idle {
                // The last entry moves into `at`: the cursor stays to look at it next.
                table.buckets.swap_remove_index(at);
                return Ok(());
            }
            table.cursor = at + 1;
        }
        Err(Duration::from_secs(1))
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
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
}
