//! One publisher per ingest across the cluster: a lease per ingest in Redis.
//!
//! `lease:<ingest>` holds `{"node":…,"session":…}` with a TTL (`PX`). A node takes it before it
//! admits a publisher (`SET NX PX`, so of two racing nodes exactly one wins), renews it while
//! the session lives, and releases it when the session ends. Renew and release are Lua scripts
//! that act only if the value is still ours, so a node that lost its lease (it expired while
//! the node was cut off, and another node took it) can never extend or delete the new holder's.
//! A node that dies stops renewing: its leases expire within the lease time.

use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::{ClusterError, Keys, Redis};

/// Who holds an ingest's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node that admitted the publisher.
    pub node: String,
    /// The publisher's session id.
    pub session: String,
}

impl Holder {
    pub(super) fn encode(&self) -> String {
        // Field order is fixed by the struct, so equal holders encode to equal strings, which
        // is what the scripts compare.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(super) fn decode(raw: &str) -> Result<Self, ClusterError> {
        serde_json::from_str(raw).map_err(|e| ClusterError::Corrupt(format!("lease value: {e}")))
    }
}

/// The outcome of taking a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is ours now.
    Won,
    /// Someone else holds it.
    HeldBy(Holder),
}

/// `SET NX PX`, or the current holder, in one step (no window in which the key expires).
const ACQUIRE: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
return {2}
"#;

/// Extends the TTL (and the session summary's, `KEYS[2]`) only if the value is still ours.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Deletes (with the session summary, `KEYS[2]`) only if the value is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Takes the lease if free, keeps it if ours (after Redis came back without it, say); the
/// session summary (`KEYS[2]`) lives as long.
const REASSERT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1}
end
return {0, cur}
"#;

/// Leases on one Redis.
#[derive(Clone, Debug)]
pub struct Leases {
    redis: Redis,
    keys: Keys,
    acquire: Script,
    renew: Script,
    release: Script,
    reassert: Script,
}

impl Leases {
    /// Leases under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Leases {
            redis,
            keys,
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            reassert: Script::new(REASSERT),
        }
    }

    /// Takes `ingest`'s lease for `holder` for `ttl`, unless someone holds it.
    pub async fn acquire(
        &self,
        ingest: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquired, ClusterError> {
        self.take(&self.acquire, ingest, holder, ttl).await
    }

    /// Like [`acquire`](Self::acquire), but also succeeds (and refreshes the TTL) when
    /// `holder` already holds it: what a node does for its live sessions after Redis returns.
    pub async fn reassert(
        &self,
        ingest: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquired, ClusterError> {
        self.take(&self.reassert, ingest, holder, ttl).await
    }

    async fn take(
        &self,
        script: &Script,
        ingest: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Acquired, ClusterError> {
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.lease(ingest))
            .key(self.keys.session(ingest))
            .arg(holder.encode())
            .arg(ttl_ms(ttl));
        let reply: Vec<redis::Value> = self.redis.script(&inv).await?;
        match reply.as_slice() {
            [redis::Value::Int(1)] => Ok(Acquired::Won),
            [redis::Value::Int(0), cur] => {
                let raw: String = redis::from_redis_value_ref(cur)
                    .map_err(|e| ClusterError::Corrupt(format!("lease value: {e}")))?;
                Ok(Acquired::HeldBy(Holder::decode(&raw)?))
            }
            // Expired between SET NX and GET (sub-millisecond TTLs only): try again.
            [redis::Value::Int(2)] => Box::pin(self.take(script, ingest, holder, ttl)).await,
            other => Err(ClusterError::Corrupt(format!("lease script: {other:?}"))),
        }
    }

    /// Extends `holder`'s lease; `false` if it is no longer theirs (expired or taken).
    pub async fn renew(
        &self,
        ingest: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<bool, ClusterError> {
        let mut inv = self.renew.prepare_invoke();
        inv.key(self.keys.lease(ingest))
            .key(self.keys.session(ingest))
            .arg(holder.encode())
            .arg(ttl_ms(ttl));
        let n: i64 = self.redis.script(&inv).await?;
        Ok(n == 1)
    }

    /// Gives `holder`'s lease up; `false` if it was not theirs (any more).
    pub async fn release(&self, ingest: &str, holder: &Holder) -> Result<bool, ClusterError> {
        let mut inv = self.release.prepare_invoke();
        inv.key(self.keys.lease(ingest))
            .key(self.keys.session(ingest))
            .arg(holder.encode());
        let n: i64 = self.redis.script(&inv).await?;
        Ok(n == 1)
    }

    /// Who holds `ingest`'s lease, if anyone.
    pub async fn holder(&self, ingest: &str) -> Result<Option<Holder>, ClusterError> {
        let raw: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.keys.lease(ingest)))
            .await?;
        raw.as_deref().map(Holder::decode).transpose()
    }

    /// Takes the lease whoever holds it (a REPLACE ingest's new publisher); returns the
    /// previous holder, whom the caller must tell to end its session.
    pub async fn take_over(
        &self,
        ingest: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Holder>, ClusterError> {
        let prev: Option<String> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(self.keys.lease(ingest))
                    .arg(holder.encode())
                    .arg("GET")
                    .arg("PX")
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        match prev.as_deref().map(Holder::decode).transpose()? {
            Some(p) if &p == holder => Ok(None),
            other => Ok(other),
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
