//! Live session summaries: what GetIngest and ListIngests on any node show of a session
//! another node holds.
//!
//! `session:<ingest>` holds the owner's `Session` message (protobuf, at most [`MAX_SUMMARY`]
//! bytes). The owner writes it on the control-plane path only: after its events about the
//! session reached the event stream (publish accepted, connected, track started, the stats
//! tick, warnings), never per packet. A script writes it only while the lease names the
//! writing node and session, with the lease's remaining TTL; renewing the lease extends it and
//! releasing the lease deletes it ([`super::lease`]). A reader trusts a summary only when the
//! lease names the same session, so a stale one (a node that died, a publisher taken over)
//! is never shown. Both are sealed ([`super::trust`]): a summary edited or written by hand
//! in Redis is not shown either.

use std::collections::{BTreeSet, HashMap};

use prost::Message;

use super::lease::Holder;
use super::trust::Record;
use super::{ClusterError, Keys, Redis};
use crate::registry::Registry;
use whipgate_proto::pb;

/// Largest summary stored or read (a consumer SDP that would pass it is left out).
pub const MAX_SUMMARY: usize = 16 * 1024;
/// Most ingests read in one round trip.
const READ_CHUNK: usize = 256;

/// Writes the summary (`KEYS[2]`) only while the lease (`KEYS[1]`) is `ARGV[1]`, for as long
/// as the lease has left.
const PUT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
return 1
"#;

/// Session summaries on one Redis.
#[derive(Clone, Debug)]
pub struct Summaries {
    redis: Redis,
    keys: Keys,
    node_id: String,
}

impl Summaries {
    /// Summaries under `keys`, written as node `node_id`.
    pub fn new(redis: Redis, keys: Keys, node_id: &str) -> Self {
        Summaries {
            redis,
            keys,
            node_id: node_id.to_owned(),
        }
    }

    /// Writes the summary of the live local session of each of `ingests` (one round trip).
    /// An ingest without one is skipped: releasing its lease removed its summary.
    pub async fn write(
        &self,
        registry: &Registry,
        ingests: &BTreeSet<String>,
    ) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        let mut n = 0;
        for ingest in ingests {
            let Some(session) = registry.get(ingest).ok().and_then(|v| v.session) else {
                continue;
            };
            let holder = Holder {
                node: self.node_id.clone(),
                session: session.id.to_string(),
            };
            let mut summary = crate::control::session_to_pb(&session);
            summary.node_id.clone_from(&self.node_id);
            let mut bytes = summary.encode_to_vec();
            if bytes.len() > MAX_SUMMARY {
                summary.consumer_sdp.clear();
                bytes = summary.encode_to_vec();
                if bytes.len() > MAX_SUMMARY {
                    continue;
                }
            }
            let trust = self.redis.trust();
            let bytes = trust.seal_bytes(Record::Session, ingest, &bytes);
            pipe.cmd("EVAL")
                .arg(PUT)
                .arg(2)
                .arg(self.keys.lease(ingest))
                .arg(self.keys.session(ingest))
                .arg(holder.encode(trust, ingest))
                .arg(bytes)
                .ignore();
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        self.redis.pipe::<()>(&pipe).await
    }

    /// The live sessions other nodes hold among `ingests`: the summary of each whose lease
    /// names another node and the same session as its summary.
    pub async fn read(
        &self,
        ingests: &[&str],
    ) -> Result<HashMap<String, pb::Session>, ClusterError> {
        let mut out = HashMap::new();
        for chunk in ingests.chunks(READ_CHUNK) {
            let mut cmd = redis::cmd("MGET");
            for ingest in chunk {
                cmd.arg(self.keys.lease(ingest))
                    .arg(self.keys.session(ingest));
            }
            let values: Vec<Option<Vec<u8>>> = self.redis.query(&cmd).await?;
            for (ingest, pair) in chunk.iter().zip(values.chunks(2)) {
                let [Some(lease), Some(raw)] = pair else {
                    continue;
                };
                if let Some(session) = self.trusted(ingest, lease, raw) {
                    out.insert((*ingest).to_owned(), session);
                }
            }
        }
        Ok(out)
    }

    /// Fills `session` of the ingests without one from [`Summaries::read`].
    pub async fn fill(&self, ingests: &mut [pb::Ingest]) -> Result<(), ClusterError> {
        let ids: Vec<&str> = ingests
            .iter()
            .filter(|i| i.session.is_none())
            .map(|i| i.ingest_id.as_str())
            .collect();
        let mut found = self.read(&ids).await?;
        for ingest in ingests.iter_mut().filter(|i| i.session.is_none()) {
            ingest.session = found.remove(&ingest.ingest_id);
        }
        Ok(())
    }

    fn trusted(&self, ingest: &str, lease: &[u8], raw: &[u8]) -> Option<pb::Session> {
        let trust = self.redis.trust();
        let lease = std::str::from_utf8(lease).ok()?;
        let holder = Holder::decode(trust, ingest, lease).ok()??;
        if holder.node == self.node_id || raw.len() > MAX_SUMMARY + 256 {
            return None;
        }
        let raw = trust.open_bytes(Record::Session, ingest, raw)?;
        match pb::Session::decode(raw) {
            Ok(s) if s.session_id == holder.session && s.node_id == holder.node => Some(s),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(ingest, %err, "ignoring an unreadable session summary");
                None
            }
        }
    }
}
