//! Who a client is, as every per-client limit counts it, and the per-client connection caps
//! of the listeners (HTTP, gRPC, ICE-TCP) and of the event-stream watchers.
//!
//! A client is its IPv4 address, or its IPv6 /64 (one subscriber's prefix: a host hands
//! itself any address in it); IPv4-mapped IPv6 addresses count as IPv4. [`Slots`] caps what
//! is open in total and per client; a [`Slot`] frees its place when dropped, and a client's
//! entry exists only while it holds a slot, so the table never holds more entries than the
//! total cap.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The key a client is counted under: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
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

/// A request extension the HTTP server puts on every request: cancelling it closes the
/// request's connection at once (an event stream whose reader stopped reading).
#[derive(Clone, Debug, Default)]
pub struct CloseConnection(pub tokio_util::sync::CancellationToken);

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client holds its share already.
    PerClient,
    /// Everything is taken.
    Total,
}

impl Refused {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::PerClient => "per_client",
            Refused::Total => "total",
        }
    }
}

/// Open things (connections, watchers), capped in total and per client.
#[derive(Clone, Debug)]
pub struct Slots {
    inner: Arc<Mutex<Counts>>,
    total: usize,
    per_client: usize,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One place in [`Slots`]; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Mutex<Counts>>,
    key: IpAddr,
}

impl Slots {
    /// At most `total` open, `per_client` of them from one client (both at least 1).
    pub fn new(total: usize, per_client: usize) -> Self {
        Slots {
            inner: Arc::default(),
            total: total.max(1),
            per_client: per_client.max(1),
        }
    }

    /// Takes a place for `ip`'s client, if both caps allow.
    pub fn take(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let key = client_key(ip);
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.per_client.get(&key).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refused::PerClient);
        }
        if counts.open >= self.total {
            return Err(Refused::Total);
        }
        counts.open += 1;
        counts.per_client.insert(key, held + 1);
        Ok(Slot {
            inner: Arc::clone(&self.inner),
            key,
        })
    }

    /// Places taken now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).open
    }

    /// Clients holding a place now.
    pub fn clients(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .per_client
            .len()
    }

    /// The total cap.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The per-client cap.
    pub fn per_client(&self) -> usize {
        self.per_client
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.open = counts.open.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
