//! Per-client rate limits on WHIP requests (RFC 9725 section 5): a token bucket per client
//! address in a table of bounded size. IPv6 clients are keyed by their /64 (one subscriber's
//! prefix), IPv4-mapped addresses as IPv4. When the table is full, idle buckets (refilled to
//! the burst) are dropped; if every bucket is busy, newcomers are refused until one frees,
//! which is what an address-spraying client deserves and costs known clients nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Clients tracked at most.
pub(super) const MAX_CLIENTS: usize = 16_384;

/// A token bucket per client.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    table: Mutex<HashMap<IpAddr, Bucket>>,
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
            table: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from `client`'s bucket, or says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = client_key(client);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= self.max_clients {
            table.retain(|_, b| self.refilled(b, now) < self.burst);
            if table.len() >= self.max_clients {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = table.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }
}

/// The key a client is limited under.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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
        // Once they are idle (refilled), they make room.
        let later = t0 + Duration::from_secs(5);
        limiter.check(ip("10.0.1.1"), later).unwrap();
        assert_eq!(limiter.tracked(), 1);
        assert!(RateLimiter::new(0.0, 5, 4).is_none(), "0 turns limits off");
    }
}
