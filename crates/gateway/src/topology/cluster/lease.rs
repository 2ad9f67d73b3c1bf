//! One publisher per ingest across the cluster: a lease per ingest in Redis.
//!
//! `lease:<ingest>` holds `{"node":…,"session":…}` with a TTL (`PX`). A node takes it before it
//! admits a publisher (`SET NX PX`, so of two racing nodes exactly one wins), renews it while
//! the session lives, and releases it when the session ends. Renew and release are Lua scripts
//! that act only if the value is still ours, so a node that lost its lease (it expired while
//! the node was cut off, and another node took it) can never extend or delete the new holder's.
//! A node that dies stops renewing: its leases expire within the lease time.
//!
//! The value is sealed ([`super::trust`]): tagged with the cluster's record key, bound to the
//! ingest. A value that does not verify (written by hand into Redis, copied from another
//! ingest) is never honoured: it is nobody's lease, and a node taking or re-asserting the lease
//! replaces it (only if it is still that same value, so a genuine holder racing in wins).

use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};

use super::trust::{Record, Trust};
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
    /// The lease value naming this holder for `ingest`, sealed.
    pub(super) fn encode(&self, trust: &Trust, ingest: &str) -> String {
        // Field order is fixed by the struct and the tag is deterministic, so equal holders
        // encode to equal strings, which is what the scripts compare.
        trust.seal(
            Record::Lease,
            ingest,
            &serde_json::to_string(self).unwrap_or_default(),
        )
    }

    /// The holder a lease value of `ingest` names; `Ok(None)` when it does not verify
    /// (logged and counted): no one's lease.
    pub(super) fn decode(
        trust: &Trust,
        ingest: &str,
        raw: &str,
    ) -> Result<Option<Self>, ClusterError> {
        let Some(json) = trust.open(Record::Lease, ingest, raw) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| ClusterError::Corrupt(format!("lease value: {e}")))
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

/// Replaces the value (`ARGV[1]`, one that did not verify) only if it is still there; the
/// session summary (`KEYS[2]`) goes with it.
const REPLACE_UNTRUSTED: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
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
    replace_untrusted: Script,
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
            replace_untrusted: Script::new(REPLACE_UNTRUSTED),
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
        let mine = holder.encode(self.redis.trust(), ingest);
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.lease(ingest))
            .key(self.keys.session(ingest))
            .arg(&mine)
            .arg(ttl_ms(ttl));
        let reply: Vec<redis::Value> = self.redis.script(&inv).await?;
        match reply.as_slice() {
            [redis::Value::Int(1)] => Ok(Acquired::Won),
            [redis::Value::Int(0), cur] => {
                let raw: String = redis::from_redis_value_ref(cur)
                    .map_err(|e| ClusterError::Corrupt(format!("lease value: {e}")))?;
                if let Some(other) = Holder::decode(self.redis.trust(), ingest, &raw)? {
                    return Ok(Acquired::HeldBy(other));
                }
                // Not a lease any node wrote: replace it, unless it changed meanwhile (then
                // look again: a genuine holder may have taken it).
                let mut inv = self.replace_untrusted.prepare_invoke();
                inv.key(self.keys.lease(ingest))
                    .key(self.keys.session(ingest))
                    .arg(&raw)
                    .arg(&mine)
                    .arg(ttl_ms(ttl));
                let replaced: i64 = self.redis.script(&inv).await?;
                if replaced == 1 {
                    Ok(Acquired::Won)
                } else {
                    Box::pin(self.take(script, ingest, holder, ttl)).await
                }
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
            .arg(holder.encode(self.redis.trust(), ingest))
            .arg(ttl_ms(ttl));
        let n: i64 = self.redis.script(&inv).await?;
        Ok(n == 1)
    }

    /// Gives `holder`'s lease up; `false` if it was not theirs (any more).
    pub async fn release(&self, ingest: &str, holder: &Holder) -> Result<bool, ClusterError> {
        let mut inv = self.release.prepare_invoke();
        inv.key(self.keys.lease(ingest))
            .key(self.keys.session(ingest))
            .arg(holder.encode(self.redis.trust(), ingest));
        let n: i64 = self.redis.script(&inv).await?;
        Ok(n == 1)
    }

    /// Who holds `ingest`'s lease, if anyone (a value that does not verify: no one).
    pub async fn holder(&self, ingest: &str) -> Result<Option<Holder>, ClusterError> {
        let raw: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.keys.lease(ingest)))
            .await?;
        match raw {
            Some(raw) => Holder::decode(self.redis.trust(), ingest, &raw),
            None => Ok(None),
        }
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
                    .arg(holder.encode(self.redis.trust(), ingest))
                    .arg("GET")
                    .arg("PX")
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        let prev = match prev {
            Some(raw) => Holder::decode(self.redis.trust(), ingest, &raw)?,
            None => None,
        };
        match prev {
            Some(p) if &p == holder => Ok(None),
            other => Ok(other),
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}
