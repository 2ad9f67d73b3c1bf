//! Cluster mode on Redis: what several gateways share so that they act as one.
//!
//! The internals of [`crate::topology::redis`], the Redis [`crate::topology::Topology`]: the
//! edges never reach in here, they ask the topology.
//!
//! | part | Redis shape | module |
//! |---|---|---|
//! | this gateway as a member: heartbeat, lease upkeep, placement | — | [`node`] |
//! | connection (direct or through Sentinel), fail-fast timeouts | — | [`conn`] |
//! | node records: heartbeat with TTL, placement | `node:<id>` (string, PX), `nodes` (zset) | [`nodes`] |
//! | one publisher per ingest across the cluster | `lease:<ingest>` (string, NX PX) | [`lease`] |
//! | the live session as other nodes' GetIngest shows it | `session:<ingest>` (string, lease's TTL) | [`summary`] |
//! | registrations, caps, layer choices, output stream state | `ingests`, `layers`, `outputs` (hashes), `caps` | [`state`] |
//! | one event stream, gap-free `seq` | `events` (stream, id `<seq>-0`), `events:seq`, `events:epoch` | [`events`] |
//! | this node's publisher, tail and watchers of that stream | — | [`feed`] |
//! | registrations other nodes changed, reloaded live | — | [`invalidate`] |
//! | control calls routed to the owning node | `rpc:<node>` (list), `rpc:reply:<uuid>` (list) | [`rpc`] |
//! | which calls are routed, how the owner runs them, the owner's session URL | — | [`calls`] |
//! | a publisher that moves to this node keeps its output streams | reads `outputs` | [`takeover`] |
//! | a node's event clock (the store trait's epoch and reserved seqs) | `clock:<node>` (hash) | [`store`] |
//!
//! Every key starts with a prefix (`whipgate:` by default), so several clusters can share one
//! Redis. Nothing here runs on the per-packet path: these are control-plane writes and
//! periodic renewals. Redis being unreachable never blocks for long: every command has a short
//! deadline and fails with [`ClusterError::Unavailable`].

pub mod calls;
pub mod conn;
pub mod events;
pub mod feed;
pub mod invalidate;
pub mod lease;
pub mod node;
pub mod nodes;
pub mod rpc;
pub mod state;
pub mod store;
pub mod summary;
pub mod takeover;
pub mod trust;
pub mod url;

pub use conn::{Redis, Timeouts};
pub use node::{ClusterNode, NodeSettings};
pub use url::RedisTarget;

use crate::error::Error;

/// What can go wrong talking to the cluster's Redis.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis is unreachable, timed out, or is failing over; retry later.
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// The `--cluster-redis` URL is not usable.
    #[error("invalid cluster Redis URL: {0}")]
    BadUrl(String),
    /// A watcher asked for events the stream no longer (or never) held.
    #[error("{0}")]
    OutOfRange(String),
    /// A live tail fell further behind than the stream's length.
    #[error("{0}")]
    Lagged(String),
    /// Something in Redis is not what this gateway wrote (another program, another version).
    #[error("unexpected data in the cluster store: {0}")]
    Corrupt(String),
    /// The owning node did not answer a routed control call in time.
    #[error("node {0} did not answer in time")]
    NodeTimeout(String),
    /// Too many routed calls wait for one node.
    #[error("node {0} has too many pending control calls")]
    NodeBusy(String),
}

/// Key names, all under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("whipgate")
    }
}

impl Keys {
    /// Keys under `<prefix>:`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: format!("{prefix}:"),
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    /// One node's record.
    pub fn node(&self, id: &str) -> String {
        self.key(&["node", id])
    }
    /// The set of node ids, scored by last heartbeat (ms since the epoch).
    pub fn nodes(&self) -> String {
        self.key(&["nodes"])
    }
    /// An ingest's publisher lease.
    pub fn lease(&self, ingest: &str) -> String {
        self.key(&["lease", ingest])
    }
    /// The summary of an ingest's live session, for the other nodes' GetIngest.
    pub fn session(&self, ingest: &str) -> String {
        self.key(&["session", ingest])
    }
    /// A hash of shared per-ingest state (`ingests`, `layers`, `outputs`).
    pub fn hash(&self, name: &str) -> String {
        self.key(&[name])
    }
    /// The gateway-wide caps.
    pub fn caps(&self) -> String {
        self.key(&["caps"])
    }
    /// The event stream.
    pub fn events(&self) -> String {
        self.key(&["events"])
    }
    /// The event sequence counter.
    pub fn events_seq(&self) -> String {
        self.key(&["events", "seq"])
    }
    /// The event stream's epoch (changes if Redis lost its data).
    pub fn events_epoch(&self) -> String {
        self.key(&["events", "epoch"])
    }
    /// A node's event clock (boot epoch, reserved sequence numbers) for the store trait.
    pub fn clock(&self, node: &str) -> String {
        self.key(&["clock", node])
    }
    /// A node's queue of routed control calls.
    pub fn rpc_queue(&self, node: &str) -> String {
        self.key(&["rpc", node])
    }
    /// Where one routed call's answer goes.
    pub fn rpc_reply(&self, id: &str) -> String {
        self.key(&["rpc", "reply", id])
    }
}

/// Milliseconds since the Unix epoch (wall clock: heartbeats are compared across machines).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks a node id: 1 to 64 characters of `[A-Za-z0-9._~-]` (it is part of key names).
pub fn validate_node_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid node id {id:?}: 1 to 64 characters of [A-Za-z0-9._~-]"
        )))
    }
}

#[cfg(test)]
mod tests;
