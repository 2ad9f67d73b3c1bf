//! The cluster's trust boundary: what a node reads from Redis counts only if another node of
//! the same cluster wrote it.
//!
//! Every node holds the cluster secret (`--cluster-secret-file`). Two keys are derived from it
//! with HMAC-SHA256, one per purpose (`whipgate/v1/rpc` for routed calls and their answers,
//! `whipgate/v1/record` for stored records), so the raw secret is never a MAC key and a tag
//! made for one purpose never verifies for the other. A record is stored as
//! `wg1.<hex tag>.<payload>`, the tag covering the record's kind, the id it is stored under and
//! the payload: a record edited in Redis, or copied to another ingest's or node's key, does
//! not verify, and a reader treats it as absent (logged at warn with bounded text, counted in
//! `whipgate_cluster_untrusted_total`). Tags are deterministic, so the Lua compare-and-set
//! scripts keep comparing whole values.
//!
//! What a tag cannot stop: deleting keys, or putting back a value a node wrote earlier under
//! the same key (an old lease, an older registration). The README's "Cluster trust boundary"
//! says what Redis write access still allows.
//!
//! `--insecure-cluster` uses a key derived from a published constant instead: the same code
//! path and format, no protection.

use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use prometheus::IntCounterVec;
use ring::hmac;

/// Shortest accepted cluster secret, in bytes.
pub const MIN_SECRET: usize = 32;
/// Prefix of a sealed record.
const SEALED: &str = "wg1.";
/// Hex length of a tag (HMAC-SHA256).
const TAG_HEX: usize = 64;
/// The stand-in secret of `--insecure-cluster` (public: it protects nothing).
const INSECURE_SECRET: &[u8] = b"whipgate/v1/insecure-cluster: anyone can forge this";

/// What a sealed record is; part of its tag, so one kind never passes for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A registration (`ingests` hash), keyed by ingest id.
    Ingest,
    /// An ingest's output stream checkpoint (`outputs` hash).
    Outputs,
    /// The gateway-wide caps.
    Caps,
    /// A publisher lease (`lease:<ingest>`), keyed by ingest id.
    Lease,
    /// A live session summary (`session:<ingest>`).
    Session,
    /// A node record (`node:<id>`).
    Node,
}

impl Record {
    fn label(self) -> &'static str {
        match self {
            Record::Ingest => "ingest",
            Record::Outputs => "outputs",
            Record::Caps => "caps",
            Record::Lease => "lease",
            Record::Session => "session",
            Record::Node => "node",
        }
    }
}

/// The cluster's keys (cheap to clone).
#[derive(Clone)]
pub struct Trust {
    inner: Arc<Inner>,
}

struct Inner {
    rpc: hmac::Key,
    record: hmac::Key,
    insecure: bool,
    untrusted: Option<IntCounterVec>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("insecure", &self.inner.insecure)
            .finish_non_exhaustive()
    }
}

/// Reads a cluster secret file: its content, surrounding whitespace trimmed, at least
/// [`MIN_SECRET`] bytes.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, Error> {
    let raw = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "reading the cluster secret file {} (--cluster-secret-file): {e}",
            path.display()
        ))
    })?;
    let secret = raw.trim_ascii();
    if secret.len() < MIN_SECRET {
        return Err(Error::Config(format!(
            "the cluster secret file {} (--cluster-secret-file) holds {} bytes; at least \
             {MIN_SECRET} are needed (e.g. `openssl rand -hex 32`)",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret.to_vec())
}

impl Trust {
    /// Keys derived from `secret` (at least [`MIN_SECRET`] bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self, Error> {
        if secret.len() < MIN_SECRET {
            return Err(Error::Config(format!(
                "cluster secret of {} bytes; at least {MIN_SECRET} are needed",
                secret.len()
            )));
        }
        Ok(Trust::derive(secret, false))
    }

    /// `--insecure-cluster`: keys anyone can derive.
    pub fn insecure() -> Self {
        Trust::derive(INSECURE_SECRET, true)
    }

    fn derive(secret: &[u8], insecure: bool) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let key =
            |purpose: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, purpose).as_ref());
        Trust {
            inner: Arc::new(Inner {
                rpc: key(b"whipgate/v1/rpc"),
                record: key(b"whipgate/v1/record"),
                insecure,
                untrusted: None,
            }),
        }
    }

    /// The same keys, counting what does not verify in `counter` (label `kind`).
    pub fn with_counter(self, counter: IntCounterVec) -> Self {
        let inner = &self.inner;
        Trust {
            inner: Arc::new(Inner {
                rpc: inner.rpc.clone(),
                record: inner.record.clone(),
                insecure: inner.insecure,
                untrusted: Some(counter),
            }),
        }
    }

    /// Whether these are `--insecure-cluster`'s public keys.
    pub fn is_insecure(&self) -> bool {
        self.inner.insecure
    }

    /// Logs (at warn, bounded) and counts something from Redis that was not trusted.
    pub(crate) fn reject(&self, kind: &'static str, id: &str, why: &str) {
        tracing::warn!(
            kind,
            id = %crate::net::untrusted::bounded(id),
            why,
            "ignored unauthenticated data from the cluster store"
        );
        if let Some(c) = &self.inner.untrusted {
            c.with_label_values(&[kind]).inc();
        }
    }

    /// `payload` sealed as a `kind` record stored under `id`.
    pub fn seal(&self, kind: Record, id: &str, payload: &str) -> String {
        let tag = record_tag(&self.inner.record, kind, id, payload.as_bytes());
        format!("{SEALED}{}.{payload}", hex::encode(tag.as_ref()))
    }

    /// The payload of a sealed `kind` record stored under `id`, or `None` (logged and counted)
    /// if it is not sealed or does not verify.
    pub fn open<'a>(&self, kind: Record, id: &str, raw: &'a str) -> Option<&'a str> {
        match split_sealed(raw.as_bytes()) {
            Some((tag, payload))
                if hmac::verify(&self.inner.record, &record_input(kind, id, payload), &tag)
                    .is_ok() =>
            {
                // The payload is the tail of a &str after an ASCII prefix.
                raw.get(raw.len() - payload.len()..)
            }
            Some(_) => {
                self.reject(kind.label(), id, "tag does not verify");
                None
            }
            None => {
                self.reject(kind.label(), id, "not sealed");
                None
            }
        }
    }

    /// Binary `payload` sealed as a `kind` record stored under `id`.
    pub fn seal_bytes(&self, kind: Record, id: &str, payload: &[u8]) -> Vec<u8> {
        let tag = record_tag(&self.inner.record, kind, id, payload);
        let mut out = Vec::with_capacity(SEALED.len() + TAG_HEX + 1 + payload.len());
        out.extend_from_slice(SEALED.as_bytes());
        out.extend_from_slice(hex::encode(tag.as_ref()).as_bytes());
        out.push(b'.');
        out.extend_from_slice(payload);
        out
    }

    /// The payload of sealed binary `raw`, or `None` (logged and counted).
    pub fn open_bytes<'a>(&self, kind: Record, id: &str, raw: &'a [u8]) -> Option<&'a [u8]> {
        match split_sealed(raw) {
            Some((tag, payload))
                if hmac::verify(&self.inner.record, &record_input(kind, id, payload), &tag)
                    .is_ok() =>
            {
                Some(payload)
            }
            _ => {
                self.reject(kind.label(), id, "tag does not verify");
                None
            }
        }
    }

    /// The tag of a routed call or answer made of `fields` (hex).
    pub(crate) fn sign_rpc(&self, fields: &[&[u8]]) -> String {
        hex::encode(hmac::sign(&self.inner.rpc, &framed(fields)).as_ref())
    }

    /// Whether `tag` (hex) is the tag of `fields`; compared in constant time.
    pub(crate) fn verify_rpc(&self, fields: &[&[u8]], tag: &str) -> bool {
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        hmac::verify(&self.inner.rpc, &framed(fields), &tag).is_ok()
    }
}

/// Each field with its length first, so no two field lists frame to the same bytes.
fn framed(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for f in fields {
        out.extend_from_slice(&(f.len() as u64).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn record_input(kind: Record, id: &str, payload: &[u8]) -> Vec<u8> {
    framed(&[kind.label().as_bytes(), id.as_bytes(), payload])
}

fn record_tag(key: &hmac::Key, kind: Record, id: &str, payload: &[u8]) -> hmac::Tag {
    hmac::sign(key, &record_input(kind, id, payload))
}

/// `(tag bytes, payload)` of `wg1.<hex>.<payload>`.
fn split_sealed(raw: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let rest = raw.strip_prefix(SEALED.as_bytes())?;
    if rest.len() <= TAG_HEX || rest[TAG_HEX] != b'.' {
        return None;
    }
    let tag = hex::decode(&rest[..TAG_HEX]).ok()?;
    Some((tag, &rest[TAG_HEX + 1..]))
}

#[cfg(test)]
mod tests;
