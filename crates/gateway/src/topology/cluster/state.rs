//! Shared per-ingest state: registrations (with tokens), layer choices and each ingest's output
//! stream state, plus the gateway-wide caps.
//!
//! Values are opaque strings (the store's own encoding, sealed by the store: see
//! [`super::trust`]): this module only decides where they live and how they change atomically. One hash per table (`ingests`, `layers`, `outputs`),
//! field = ingest id; `caps` is one string. Registration writes that must not silently
//! overwrite another node's (a `RegisterIngest` without `replace`) use `insert_new` (`HSETNX`)
//! or `compare_and_set` (Lua), so two nodes racing on one id cannot both believe they won.

use redis::Script;

use super::{ClusterError, Keys, Redis};

/// A per-ingest table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Registrations, tokens included.
    Ingests,
    /// Simulcast layer choices.
    Layers,
    /// Output stream state (SSRC, sequence and timestamp bases) per ingest.
    Outputs,
}

impl Table {
    /// Every table, for removals.
    pub const ALL: [Table; 3] = [Table::Ingests, Table::Layers, Table::Outputs];

    fn name(self) -> &'static str {
        match self {
            Table::Ingests => "ingests",
            Table::Layers => "layers",
            Table::Outputs => "outputs",
        }
    }
}

/// Sets a field only if it still holds the expected value (`""` = absent).
const COMPARE_AND_SET: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur and ARGV[2] == '') or cur == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"#;

/// Shared state on one Redis.
#[derive(Clone, Debug)]
pub struct SharedState {
    redis: Redis,
    keys: Keys,
    cas: Script,
}

impl SharedState {
    /// Shared state under `keys`.
    pub fn new(redis: Redis, keys: Keys) -> Self {
        SharedState {
            redis,
            keys,
            cas: Script::new(COMPARE_AND_SET),
        }
    }

    /// The keys records in these tables are sealed with.
    pub fn trust(&self) -> &super::trust::Trust {
        self.redis.trust()
    }

    fn hash(&self, table: Table) -> String {
        self.keys.hash(table.name())
    }

    /// Writes `id`'s value in `table`, whatever was there.
    pub async fn put(&self, table: Table, id: &str, value: &str) -> Result<(), ClusterError> {
        self.redis
            .query(redis::cmd("HSET").arg(self.hash(table)).arg(id).arg(value))
            .await
    }

    /// Writes several `(id, value)` pairs in one atomic step.
    pub async fn put_many(
        &self,
        table: Table,
        items: &[(String, String)],
    ) -> Result<(), ClusterError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.hash(table));
        for (id, value) in items {
            cmd.arg(id).arg(value);
        }
        self.redis.query(&cmd).await
    }

    /// Writes `id`'s value only if it has none; `false` if it had one.
    pub async fn insert_new(
        &self,
        table: Table,
        id: &str,
        value: &str,
    ) -> Result<bool, ClusterError> {
        let n: i64 = self
            .redis
            .query(
                redis::cmd("HSETNX")
                    .arg(self.hash(table))
                    .arg(id)
                    .arg(value),
            )
            .await?;
        Ok(n == 1)
    }

    /// Replaces `id`'s value only if it is still `expected` (`None`: absent); `false` if not.
    pub async fn compare_and_set(
        &self,
        table: Table,
        id: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, ClusterError> {
        let mut inv = self.cas.prepare_invoke();
        inv.key(self.hash(table))
            .arg(id)
            .arg(expected.unwrap_or(""))
            .arg(value);
        let n: i64 = self.redis.script(&inv).await?;
        Ok(n == 1)
    }

    /// `id`'s value in `table`.
    pub async fn get(&self, table: Table, id: &str) -> Result<Option<String>, ClusterError> {
        self.redis
            .query(redis::cmd("HGET").arg(self.hash(table)).arg(id))
            .await
    }

    /// Every `(id, value)` in `table`, sorted by id.
    pub async fn all(&self, table: Table) -> Result<Vec<(String, String)>, ClusterError> {
        let mut all: Vec<(String, String)> = self
            .redis
            .query(redis::cmd("HGETALL").arg(self.hash(table)))
            .await?;
        all.sort();
        Ok(all)
    }

    /// Removes `id` from `table`; `false` if it was not there.
    pub async fn delete(&self, table: Table, id: &str) -> Result<bool, ClusterError> {
        let n: i64 = self
            .redis
            .query(redis::cmd("HDEL").arg(self.hash(table)).arg(id))
            .await?;
        Ok(n == 1)
    }

    /// Removes `id` from every table at once (unregister); `false` if it was not registered.
    pub async fn remove_ingest(&self, id: &str) -> Result<bool, ClusterError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for table in Table::ALL {
            pipe.cmd("HDEL").arg(self.hash(table)).arg(id);
        }
        let removed: Vec<i64> = self.redis.pipe(&pipe).await?;
        Ok(removed.first() == Some(&1))
    }

    /// Writes the gateway-wide caps.
    pub async fn put_caps(&self, value: &str) -> Result<(), ClusterError> {
        self.redis
            .query(redis::cmd("SET").arg(self.keys.caps()).arg(value))
            .await
    }

    /// The gateway-wide caps, if any were written.
    pub async fn caps(&self) -> Result<Option<String>, ClusterError> {
        self.redis
            .query(redis::cmd("GET").arg(self.keys.caps()))
            .await
    }
}
