//! What outlives the process, behind one small trait: ingest registrations (bearer tokens as
//! salted hashes only), caps, per-ingest limits and layer choices, each ingest's output stream
//! state, and the event clock (boot epoch and the sequence-number high-water mark).
//!
//! The registry stays the in-memory authority; a [`Store`] is written on control-plane changes
//! and by the continuity checkpoint, never on the packet path, and read once at boot. Records
//! are plain serde data with string keys, so a networked implementation (Redis, for cluster
//! mode) stores the same JSON under the same keys. The default is [`embedded::EmbeddedStore`]
//! (redb, one file in the data dir); [`embedded::EmbeddedStore::in_memory`] serves tests and
//! embedders that want nothing on disk. In cluster mode, [`redis::RedisStore`] keeps the same
//! records in the cluster's Redis.

pub mod embedded;
pub mod file;
mod records;
/// The cluster-mode store lives with the rest of the Redis topology ([`crate::topology::cluster::store`]).
pub use crate::topology::cluster::store as redis;

use std::path::Path;
use std::sync::Arc;

pub use records::{CapsRecord, EventClock, IngestRecord, LayerChoice, LimitsRecord, StreamRecord};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file (or service) could not be opened.
    #[error("opening the store at {path}: {detail}")]
    Open {
        /// Where the store lives.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// A record could not be decoded: the data is damaged or from an incompatible version.
    #[error("corrupt store record {key}: {detail}")]
    Corrupt {
        /// Which record (table/key).
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Reading or writing failed.
    #[error("store I/O: {0}")]
    Io(String),
    /// A networked store (Redis, in cluster mode) is unreachable for now; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Everything a store holds, as read at boot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// Registrations, in key order.
    pub ingests: Vec<IngestRecord>,
    /// The global cap set with SetCaps, if ever.
    pub caps: Option<CapsRecord>,
    /// Output stream state per ingest.
    pub streams: Vec<StreamRecord>,
}

/// The durable state behind the registry. Every write is durable (fsync'd, or acknowledged by
/// the service) when its future completes.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads everything back (once, at boot, before the listeners open).
    async fn load(&self) -> Result<Stored, StoreError>;
    /// Inserts or replaces one registration.
    async fn put_ingest(&self, ingest: &IngestRecord) -> Result<(), StoreError>;
    /// Removes a registration and its stream state; absent is fine.
    async fn delete_ingest(&self, ingest_id: &str) -> Result<(), StoreError>;
    /// Records the global cap.
    async fn put_caps(&self, caps: &CapsRecord) -> Result<(), StoreError>;
    /// Checkpoints output stream state, all records in one atomic write.
    async fn put_streams(&self, streams: &[StreamRecord]) -> Result<(), StoreError>;
    /// Starts a new run: increments the boot epoch and reserves `block` sequence numbers
    /// above everything any earlier run may have used. Returns the new run's clock.
    async fn begin_epoch(&self, block: u64) -> Result<EventClock, StoreError>;
    /// Raises the reserved sequence-number high-water mark to `reserved_to` (never lowers).
    async fn reserve_seq(&self, reserved_to: u64) -> Result<(), StoreError>;
    /// One registration as stored now (cluster mode reads other nodes' writes with it).
    async fn get_ingest(&self, ingest_id: &str) -> Result<Option<IngestRecord>, StoreError> {
        Ok(self
            .load()
            .await?
            .ingests
            .into_iter()
            .find(|r| r.id == ingest_id))
    }
    /// Every registration as stored now.
    async fn ingests(&self) -> Result<Vec<IngestRecord>, StoreError> {
        Ok(self.load().await?.ingests)
    }
}

/// Opens the store of a gateway: the embedded store in `data_dir` (created if missing, 0700;
/// see [`file`] for what is refused), or an in-memory one when `data_dir` is `None`.
pub fn open(data_dir: Option<&Path>) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match data_dir {
        Some(dir) => Arc::new(embedded::EmbeddedStore::open(dir)?),
        None => Arc::new(embedded::EmbeddedStore::in_memory()?),
    })
}

#[cfg(test)]
mod tests;
