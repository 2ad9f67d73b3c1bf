//! The embedded store: one redb file (`whipgate.redb`) in the data dir. redb is a pure-Rust
//! ACID key-value store: every commit is fsync'd before it returns (copy-on-write B-trees with
//! a two-phase commit), so a write survives kill -9 and power loss, and a torn write leaves the
//! previous commit readable. Blocking calls run on tokio's blocking pool.
//!
//! Opening checks the files first ([`super::file`]); the layout version (`meta/schema`) is
//! checked and older layouts migrated in the first transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::file::{self, Found, RECOVER};
use super::{CapsRecord, EventClock, IngestRecord, Store, StoreError, Stored, StreamRecord};

/// The file inside the data dir.
pub const FILE_NAME: &str = "whipgate.redb";
/// Layout version of the tables below; a store written by a newer layout is refused.
/// 1: bearer tokens in clear. 2: bearer tokens as salted hashes (an older whipgate would read
/// them as "no token", so it must refuse the store; layout 1 is migrated at open).
const SCHEMA: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INGESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ingests");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

const CAPS_KEY: &str = "caps";

/// A redb database behind [`Store`].
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, creating the directory if needed. The files are
    /// checked first (see [`super::file`]): a damaged, truncated or empty store file, or a
    /// missing one where a store was created before, is refused with an error naming it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let open_err = |detail: String| StoreError::Open {
            path: path.display().to_string(),
            detail,
        };
        let found = file::prepare(dir, &path)?;
        let db = file::guarded(&path, || {
            let db = Database::create(&path).map_err(|err| {
                open_err(match err {
                    redb::DatabaseError::DatabaseAlreadyOpen => {
                        "the store is in use by another whipgate process on this data dir".into()
                    }
                    other => format!("{other} (not a whipgate store, or damaged): {RECOVER}"),
                })
            })?;
            Self::init(&db).map_err(|e| match e {
                StoreError::Io(detail) => open_err(format!("{detail}: {RECOVER}")),
                other => other,
            })?;
            Ok(db)
        })?;
        file::mark(dir)?;
        if found == Found::Created {
            tracing::info!(path = %path.display(), "created a new store");
        }
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// A store that lives in memory only (tests, embedders): nothing survives the process.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(io)?;
        Self::init(&db)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Creates the tables, checks the layout version and brings an older layout up to date,
    /// in one transaction.
    fn init(db: &Database) -> Result<(), StoreError> {
        let tx = db.begin_write().map_err(io)?;
        {
            let mut meta = tx.open_table(META).map_err(io)?;
            let schema = meta.get("schema").map_err(io)?.map(|v| v.value());
            match schema {
                Some(SCHEMA) => {}
                Some(1) => {
                    let hashed = hash_clear_tokens(&tx)?;
                    tracing::info!(
                        ingests = hashed,
                        "store layout 1 -> {SCHEMA}: bearer tokens now stored as salted hashes"
                    );
                    meta.insert("schema", SCHEMA).map_err(io)?;
                }
                Some(other) => {
                    return Err(StoreError::Corrupt {
                        key: "meta/schema".into(),
                        detail: format!(
                            "layout version {other}; this whipgate reads version {SCHEMA}"
                        ),
                    });
                }
                None => {
                    if !tx.open_table(INGESTS).map_err(io)?.is_empty().map_err(io)? {
                        return Err(StoreError::Corrupt {
                            key: "meta/schema".into(),
                            detail: "missing while registrations are present".into(),
                        });
                    }
                    meta.insert("schema", SCHEMA).map_err(io)?;
                }
            }
            tx.open_table(STREAMS).map_err(io)?;
            tx.open_table(SETTINGS).map_err(io)?;
        }
        tx.commit().map_err(io)
    }

    /// Runs a blocking database call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }

    /// One write transaction, committed (fsync'd) before returning.
    async fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            f(&tx)?;
            tx.commit().map_err(io)
        })
        .await
    }
}

fn io(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(err.into().to_string())
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("{table}/{key}"),
        detail: e.to_string(),
    })
}

/// Layout 1 -> 2: every registration's clear token replaced by its salted hash, in `tx`.
fn hash_clear_tokens(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
    let mut table = tx.open_table(INGESTS).map_err(io)?;
    let mut rows = Vec::new();
    for row in table.iter().map_err(io)? {
        let (key, value) = row.map_err(io)?;
        let mut record: IngestRecord = decode(INGESTS.name(), key.value(), value.value())?;
        if record.hash_clear_token() {
            rows.push((key.value().to_owned(), encode(&record)?));
        }
    }
    for (key, value) in &rows {
        table.insert(key.as_str(), value.as_slice()).map_err(io)?;
    }
    Ok(rows.len())
}

fn read_all<T: DeserializeOwned>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let table = tx.open_table(def).map_err(io)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(io)? {
        let (key, value) = row.map_err(io)?;
        out.push(decode(def.name(), key.value(), value.value())?);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn load(&self) -> Result<Stored, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(io)?;
            let ingests: Vec<IngestRecord> = read_all(&tx, INGESTS)?;
            let streams: Vec<StreamRecord> = read_all(&tx, STREAMS)?;
            let settings = tx.open_table(SETTINGS).map_err(io)?;
            let caps = match settings.get(CAPS_KEY).map_err(io)? {
                Some(v) => Some(decode::<CapsRecord>("settings", CAPS_KEY, v.value())?),
                None => None,
            };
            Ok(Stored {
                ingests,
                caps,
                streams,
            })
        })
        .await
    }

    async fn put_ingest(&self, ingest: &IngestRecord) -> Result<(), StoreError> {
        let (key, value) = (ingest.id.clone(), encode(ingest)?);
        self.write(move |tx| {
            let mut table = tx.open_table(INGESTS).map_err(io)?;
            table.insert(key.as_str(), value.as_slice()).map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn delete_ingest(&self, ingest_id: &str) -> Result<(), StoreError> {
        let key = ingest_id.to_owned();
        self.write(move |tx| {
            tx.open_table(INGESTS)
                .map_err(io)?
                .remove(key.as_str())
                .map_err(io)?;
            tx.open_table(STREAMS)
                .map_err(io)?
                .remove(key.as_str())
                .map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn put_caps(&self, caps: &CapsRecord) -> Result<(), StoreError> {
        let value = encode(caps)?;
        self.write(move |tx| {
            let mut table = tx.open_table(SETTINGS).map_err(io)?;
            table.insert(CAPS_KEY, value.as_slice()).map_err(io)?;
            Ok(())
        })
        .await
    }

    async fn put_streams(&self, streams: &[StreamRecord]) -> Result<(), StoreError> {
        let rows = streams
            .iter()
            .map(|s| Ok((s.ingest_id.clone(), encode(s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.write(move |tx| {
            // Only registered ingests keep stream state: a checkpoint racing an unregister
            // must not resurrect it.
            let ingests = tx.open_table(INGESTS).map_err(io)?;
            let mut table = tx.open_table(STREAMS).map_err(io)?;
            for (key, value) in &rows {
                if ingests.get(key.as_str()).map_err(io)?.is_some() {
                    table.insert(key.as_str(), value.as_slice()).map_err(io)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn begin_epoch(&self, block: u64) -> Result<EventClock, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let clock = {
                let mut meta = tx.open_table(META).map_err(io)?;
                let epoch = meta.get("epoch").map_err(io)?.map_or(0, |v| v.value()) + 1;
                let used = meta
                    .get("seq_reserved")
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let clock = EventClock {
                    epoch,
                    first_seq: used + 1,
                    reserved_to: used + block.max(1),
                };
                meta.insert("epoch", clock.epoch).map_err(io)?;
                meta.insert("seq_reserved", clock.reserved_to).map_err(io)?;
                clock
            };
            tx.commit().map_err(io)?;
            Ok(clock)
        })
        .await
    }

    async fn reserve_seq(&self, reserved_to: u64) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut meta = tx.open_table(META).map_err(io)?;
            let current = meta
                .get("seq_reserved")
                .map_err(io)?
                .map_or(0, |v| v.value());
            if reserved_to > current {
                meta.insert("seq_reserved", reserved_to).map_err(io)?;
            }
            Ok(())
        })
        .await
    }
}

/// The store file of a data dir.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}
