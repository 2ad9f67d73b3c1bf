//! Per-client rate limits on WHIP requests (RFC 9725 section 5): a token bucket per client
//! address in a table of bounded size. IPv6 clients are keyed by their /64 (one subscriber's
//! prefix), IPv4-mapped addresses as IPv4 ([`crate::net::client::client_key`]). When the table is
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
        let key = crate::net::client::client_key(client);
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
mod tests;
