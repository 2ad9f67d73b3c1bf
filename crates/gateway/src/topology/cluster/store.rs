//! The store in cluster mode: the same JSON records in the cluster's Redis (part of the
//! Redis topology's internals, behind [`crate::store::Store`]), so every node reads the registrations, caps and output stream state
//! any node wrote. A write is acknowledged by the Redis master when its future completes (how
//! durable that is, is Redis's `appendonly`/`appendfsync` setting; with Sentinel, replication
//! to the replicas is asynchronous). Redis being unreachable is
//! [`StoreError::Unavailable`] within the cluster's command deadline, never a hang.
//!
//! Registrations written before tokens were hashed hold them in clear: each is hashed when
//! read and written back with a compare-and-set, so a concurrent change by another node wins
//! and every node converges on one stored hash.
//!
//! Every record is sealed ([`crate::topology::cluster::trust`]): tagged with the cluster's record key and
//! bound to its ingest id. A record that does not verify (edited in Redis: another RTP target,
//! token hash or redirect URL) is treated as absent, logged and counted, never applied.
//!
//! The event clock is per node (`clock:<node>`): each node's registry numbers its own events
//! and a restarted node continues its own sequence in a new epoch.

use redis::Script;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::{SharedState, Table};
use super::trust::Record;
use super::{ClusterError, Keys, Redis};
use crate::store::{CapsRecord, EventClock, IngestRecord, Store, StoreError, Stored, StreamRecord};

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

impl RedisStore {
    /// Decodes a stored registration; one with its token in clear (written before tokens were
    /// hashed) is written back hashed, unless another node changed it meanwhile (then the
    /// value stored now is read instead; `None`: unregistered meanwhile).
    async fn ingest_record(&self, id: &str, raw: &str) -> Result<Option<IngestRecord>, StoreError> {
        let Some(mut record) = self.open::<IngestRecord>(Record::Ingest, id, raw)? else {
            return Ok(None);
        };
        if !record.hash_clear_token() {
            return Ok(Some(record));
        }
        let hashed = self.seal(Record::Ingest, id, &record)?;
        let swapped = self
            .state
            .compare_and_set(Table::Ingests, id, Some(raw), &hashed)
            .await
            .map_err(store_err)?;
        if swapped {
            tracing::info!(ingest = %id, "stored bearer token replaced by its salted hash");
            return Ok(Some(record));
        }
        let now = self
            .state
            .get(Table::Ingests, id)
            .await
            .map_err(store_err)?;
        let Some(now) = now else {
            return Ok(None);
        };
        let Some(mut current) = self.open::<IngestRecord>(Record::Ingest, id, &now)? else {
            return Ok(None);
        };
        // Still clear only if an older node wrote it again: hash in memory; the next read
        // stores the hash.
        current.hash_clear_token();
        Ok(Some(current))
    }

    /// `value` as a sealed `kind` record stored under `id`.
    fn seal<T: Serialize>(&self, kind: Record, id: &str, value: &T) -> Result<String, StoreError> {
        let json = encode(id, value)?;
        Ok(self.redis.trust().seal(kind, id, &json))
    }

    /// The record sealed in `raw`; `None` if it does not verify (logged and counted there).
    fn open<T: DeserializeOwned>(
        &self,
        kind: Record,
        id: &str,
        raw: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.redis.trust().open(kind, id, raw) {
            Some(json) => decode(id, json).map(Some),
            None => Ok(None),
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
        let mut records = Vec::with_capacity(ingests.len());
        for (id, raw) in &ingests {
            records.extend(self.ingest_record(id, raw).await?);
        }
        let mut stored_streams = Vec::with_capacity(streams.len());
        for (id, raw) in &streams {
            stored_streams.extend(self.open(Record::Outputs, id, raw)?);
        }
        Ok(Stored {
            ingests: records,
            caps: match caps {
                Some(raw) => self.open(Record::Caps, "", &raw)?,
                None => None,
            },
            streams: stored_streams,
        })
    }

    async fn get_ingest(&self, ingest_id: &str) -> Result<Option<IngestRecord>, StoreError> {
        let raw = self
            .state
            .get(Table::Ingests, ingest_id)
            .await
            .map_err(store_err)?;
        match raw {
            Some(raw) => self.ingest_record(ingest_id, &raw).await,
            None => Ok(None),
        }
    }

    async fn ingests(&self) -> Result<Vec<IngestRecord>, StoreError> {
        let all = self.state.all(Table::Ingests).await.map_err(store_err)?;
        let mut records = Vec::with_capacity(all.len());
        for (id, raw) in &all {
            records.extend(self.ingest_record(id, raw).await?);
        }
        Ok(records)
    }

    async fn put_ingest(&self, ingest: &IngestRecord) -> Result<(), StoreError> {
        let raw = self.seal(Record::Ingest, &ingest.id, ingest)?;
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
        let raw = self.seal(Record::Caps, "", caps)?;
        self.state.put_caps(&raw).await.map_err(store_err)
    }

    async fn put_streams(&self, streams: &[StreamRecord]) -> Result<(), StoreError> {
        let items = streams
            .iter()
            .map(|s| {
                let sealed = self.seal(Record::Outputs, &s.ingest_id, s)?;
                Ok((s.ingest_id.clone(), sealed))
            })
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
