//! The store in cluster mode: the same JSON records in the cluster's Redis (see
//! [`crate::cluster`]), so every node reads the registrations, caps and output stream state
//! any node wrote. A write is acknowledged by the Redis master when its future completes (how
//! durable that is, is Redis's `appendonly`/`appendfsync` setting; with Sentinel, replication
//! to the replicas is asynchronous). Redis being unreachable is
//! [`StoreError::Unavailable`] within the cluster's command deadline, never a hang.
//!
//! The event clock is per node (`clock:<node>`): each node's registry numbers its own events
//! and a restarted node continues its own sequence in a new epoch.

use redis::Script;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CapsRecord, EventClock, IngestRecord, Store, StoreError, Stored, StreamRecord};
use crate::cluster::state::{SharedState, Table};
use crate::cluster::{ClusterError, Keys, Redis};

const BEGIN_EPOCH: &str = r#"
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local used = tonumber(redis.call('HGET', KEYS[1], 'seq_reserved') or '0')
local reserved = used + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'seq_reserved', reserved)
return {epoch, used + 1, reserved}
"#;

const RESERVE: &str = r#"
local used = tonumber(redis.call('HGET', KEYS[1], 'seq_reserved') or '0')
if tonumber(ARGV[1]) > used then redis.call('HSET', KEYS[1], 'seq_reserved', ARGV[1]) end
return 1
"#;

/// [`Store`] on the cluster's Redis.
pub struct RedisStore {
    redis: Redis,
    keys: Keys,
    state: SharedState,
    node: String,
    begin: Script,
    reserve: Script,
}

impl RedisStore {
    /// The store of node `node` on `redis`, keys under `keys`.
    pub fn new(redis: Redis, keys: Keys, node: &str) -> Self {
        RedisStore {
            state: SharedState::new(redis.clone(), keys.clone()),
            redis,
            keys,
            node: node.to_string(),
            begin: Script::new(BEGIN_EPOCH),
            reserve: Script::new(RESERVE),
        }
    }
}

fn store_err(e: ClusterError) -> StoreError {
    match e {
        ClusterError::Corrupt(detail) => StoreError::Corrupt {
            key: "redis".into(),
            detail,
        },
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        key: what.into(),
        detail: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(what: &str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
        key: what.into(),
        detail: e.to_string(),
    })
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn load(&self) -> Result<Stored, StoreError> {
        let ingests = self.state.all(Table::Ingests).await.map_err(store_err)?;
        let streams = self.state.all(Table::Outputs).await.map_err(store_err)?;
        let caps = self.state.caps().await.map_err(store_err)?;
        Ok(Stored {
            ingests: ingests
                .iter()
                .map(|(id, raw)| decode(&format!("ingests/{id}"), raw))
                .collect::<Result<_, _>>()?,
            caps: caps.as_deref().map(|raw| decode("caps", raw)).transpose()?,
            streams: streams
                .iter()
                .map(|(id, raw)| decode(&format!("outputs/{id}"), raw))
                .collect::<Result<_, _>>()?,
        })
    }

    async fn get_ingest(&self, ingest_id: &str) -> Result<Option<IngestRecord>, StoreError> {
        let raw = self
            .state
            .get(Table::Ingests, ingest_id)
            .await
            .map_err(store_err)?;
        raw.map(|raw| decode(&format!("ingests/{ingest_id}"), &raw))
            .transpose()
    }

    async fn ingests(&self) -> Result<Vec<IngestRecord>, StoreError> {
        let all = self.state.all(Table::Ingests).await.map_err(store_err)?;
        all.iter()
            .map(|(id, raw)| decode(&format!("ingests/{id}"), raw))
            .collect()
    }

    async fn put_ingest(&self, ingest: &IngestRecord) -> Result<(), StoreError> {
        let raw = encode("ingest", ingest)?;
        self.state
            .put(Table::Ingests, &ingest.id, &raw)
            .await
            .map_err(store_err)
    }

    async fn delete_ingest(&self, ingest_id: &str) -> Result<(), StoreError> {
        self.state
            .remove_ingest(ingest_id)
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn put_caps(&self, caps: &CapsRecord) -> Result<(), StoreError> {
        let raw = encode("caps", caps)?;
        self.state.put_caps(&raw).await.map_err(store_err)
    }

    async fn put_streams(&self, streams: &[StreamRecord]) -> Result<(), StoreError> {
        let items = streams
            .iter()
            .map(|s| Ok((s.ingest_id.clone(), encode("stream", s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.state
            .put_many(Table::Outputs, &items)
            .await
            .map_err(store_err)
    }

    async fn begin_epoch(&self, block: u64) -> Result<EventClock, StoreError> {
        let mut inv = self.begin.prepare_invoke();
        inv.key(self.keys.clock(&self.node)).arg(block.max(1));
        let (epoch, first_seq, reserved_to): (u64, u64, u64) =
            self.redis.script(&inv).await.map_err(store_err)?;
        Ok(EventClock {
            epoch,
            first_seq,
            reserved_to,
        })
    }

    async fn reserve_seq(&self, reserved_to: u64) -> Result<(), StoreError> {
        let mut inv = self.reserve.prepare_invoke();
        inv.key(self.keys.clock(&self.node)).arg(reserved_to);
        self.redis
            .script::<i64>(&inv)
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}
