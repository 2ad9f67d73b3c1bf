//! Node records: each gateway says every heartbeat who it is, where publishers reach it and
//! how full it is; a record not refreshed within its TTL disappears (the node is gone).
//!
//! `node:<id>` holds the JSON record with a TTL (`PX`); `nodes` is a sorted set of ids scored
//! by their last heartbeat, so listing needs no `SCAN`. Ids whose record expired are removed
//! from the set when listed, and ids silent for ten TTLs on every heartbeat, so the set stays
//! bounded by the nodes that actually exist.
//!
//! Records are sealed ([`super::trust`]), bound to the node id: one edited in Redis (another
//! advertise URL, say, which redirects publishers) is treated as absent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::trust::Record;
use super::{ClusterError, Keys, Redis, now_ms};

/// What one node tells the others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id (unique in the cluster).
    pub id: String,
    /// Base URL at which publishers reach this node's WHIP edge.
    pub advertise_url: String,
    /// Live publishers on this node.
    pub live_publishers: u64,
    /// This node's publisher capacity (`max_publishers`).
    pub capacity: u64,
    /// The node takes no new publishers (shutting down).
    pub draining: bool,
    /// When this record was written (ms since the Unix epoch).
    pub last_heartbeat_ms: u64,
}

impl NodeRecord {
    /// Whether a new publisher fits on this node.
    pub fn has_room(&self) -> bool {
        !self.draining && self.live_publishers < self.capacity
    }
}

/// The node with room and the lowest load (live / capacity), ties broken by id; never `exclude`.
pub fn least_loaded<'a>(nodes: &'a [NodeRecord], exclude: &str) -> Option<&'a NodeRecord> {
    nodes
        .iter()
        .filter(|n| n.id != exclude && n.has_room())
        .min_by(|a, b| {
            // Compare live/capacity without floats: a.live * b.cap vs b.live * a.cap.
            let la = u128::from(a.live_publishers) * u128::from(b.capacity);
            let lb = u128::from(b.live_publishers) * u128::from(a.capacity);
            la.cmp(&lb).then_with(|| a.id.cmp(&b.id))
        })
}

/// Node records on one Redis.
#[derive(Clone, Debug)]
pub struct Nodes {
    redis: Redis,
    keys: Keys,
}

impl Nodes {
    /// Node records under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        Nodes { redis, keys }
    }

    /// Writes `record` (its `last_heartbeat_ms` set to now) to live for `ttl`.
    pub async fn heartbeat(&self, record: &NodeRecord, ttl: Duration) -> Result<(), ClusterError> {
        let now = now_ms();
        let mut record = record.clone();
        record.last_heartbeat_ms = now;
        let json = serde_json::to_string(&record)
            .map_err(|e| ClusterError::Corrupt(format!("node record: {e}")))?;
        let json = self.redis.trust().seal(Record::Node, &record.id, &json);
        let ttl_ms = (ttl.as_millis() as u64).max(1);
        let stale = now.saturating_sub(ttl_ms.saturating_mul(10));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.keys.node(&record.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(now)
            .arg(&record.id)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.nodes())
            .arg("-inf")
            .arg(format!("({stale}"))
            .ignore();
        self.redis.pipe::<()>(&pipe).await
    }

    /// Removes this node's record at once (clean shutdown).
    pub async fn remove(&self, id: &str) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.node(id))
            .ignore()
            .cmd("ZREM")
            .arg(self.keys.nodes())
            .arg(id)
            .ignore();
        self.redis.pipe::<()>(&pipe).await
    }

    /// The live nodes, sorted by id.
    pub async fn list(&self) -> Result<Vec<NodeRecord>, ClusterError> {
        let ids: Vec<String> = self
            .redis
            .query(redis::cmd("ZRANGE").arg(self.keys.nodes()).arg(0).arg(-1))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.node(id)).collect();
        let raws: Vec<Option<String>> = self.redis.query(redis::cmd("MGET").arg(&keys)).await?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, raw) in ids.iter().zip(raws) {
            match raw {
                Some(raw) => out.extend(self.decode(id, &raw)?),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            // Only prunes; a failure here changes nothing the caller sees.
            let _ = self
                .redis
                .query::<()>(redis::cmd("ZREM").arg(self.keys.nodes()).arg(&gone))
                .await;
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One node's record, if it is alive.
    pub async fn get(&self, id: &str) -> Result<Option<NodeRecord>, ClusterError> {
        let raw: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.keys.node(id)))
            .await?;
        match raw {
            Some(raw) => self.decode(id, &raw),
            None => Ok(None),
        }
    }

    /// The record stored as node `id`'s; `None` if it does not verify (logged, counted) or
    /// names another node.
    fn decode(&self, id: &str, raw: &str) -> Result<Option<NodeRecord>, ClusterError> {
        let Some(json) = self.redis.trust().open(Record::Node, id, raw) else {
            return Ok(None);
        };
        let record: NodeRecord = serde_json::from_str(json)
            .map_err(|e| ClusterError::Corrupt(format!("node {id}: {e}")))?;
        Ok((record.id == id).then_some(record))
    }
}

#[cfg(test)]
mod tests;
