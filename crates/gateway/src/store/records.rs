//! The records a store keeps: plain serde data (JSON in every implementation), decoupled from
//! the registry's types so the stored format changes only on purpose. New fields are added
//! with `#[serde(default)]`, so older records still load.
//!
//! Bearer tokens are stored as salted hashes ([`TokenHash`], field `bearer_token_hash`). A
//! record written before that holds the token in clear (`bearer_token`): it is read, hashed
//! with [`IngestRecord::hash_clear_token`] and written back by the store; never written anew.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::secret::TokenHash;
use whipgate_media::continuity::OutputState;

/// Per-ingest limits (0 or absent: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    /// Bitrate cap in bits per second.
    #[serde(default)]
    pub max_bitrate_bps: Option<u64>,
    /// Session duration cap in milliseconds.
    #[serde(default)]
    pub max_session_ms: Option<u64>,
}

/// A simulcast layer chosen with SelectSimulcastLayer (`rid: None`: the highest bitrate).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChoice {
    /// The chosen RID.
    #[serde(default)]
    pub rid: Option<String>,
}

/// One registration, its token as a salted hash, with what the control plane changed since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// Ingest id (also the key).
    pub id: String,
    /// Video RTP destination.
    #[serde(default)]
    pub video_target: Option<SocketAddr>,
    /// Audio RTP destination.
    #[serde(default)]
    pub audio_target: Option<SocketAddr>,
    /// WHIP bearer token as a salted hash (the token itself is never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_hash: Option<TokenHash>,
    /// The token in clear, as records written before salted hashes hold it: read so that
    /// older stores load, turned into `bearer_token_hash` at load, never written.
    #[serde(default, rename = "bearer_token", skip_serializing)]
    pub clear_token: Option<String>,
    /// Orchestrator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Accepted video codecs by encoding name, in preference order.
    pub video_codecs: Vec<String>,
    /// Accepted audio codecs by encoding name, in preference order.
    pub audio_codecs: Vec<String>,
    /// Registered limits.
    #[serde(default)]
    pub limits: LimitsRecord,
    /// 307 target.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Registered simulcast layer.
    #[serde(default)]
    pub simulcast_layer: Option<String>,
    /// Conflict policy REPLACE.
    #[serde(default)]
    pub replace_publisher: bool,
    /// Registration time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Limits set with SetCaps, winning over `limits`.
    #[serde(default)]
    pub limits_override: Option<LimitsRecord>,
    /// Layer chosen with SelectSimulcastLayer, winning over `simulcast_layer`.
    #[serde(default)]
    pub layer_override: Option<LayerChoice>,
}

impl IngestRecord {
    /// Replaces a token stored in clear (an older record) by its salted hash. Returns whether
    /// the record changed, so the store writes it back.
    pub fn hash_clear_token(&mut self) -> bool {
        let Some(clear) = self.clear_token.take() else {
            return false;
        };
        self.bearer_token_hash = Some(TokenHash::new(&clear));
        true
    }
}

/// The global cap as set with SetCaps, and the configured value it overrode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsRecord {
    /// Maximum live publishers.
    pub max_publishers: u64,
    /// `--max-publishers` when it was set: a restart with a different configured value means
    /// the operator changed it, and the configuration wins.
    pub configured: u64,
}

/// One ingest's output streams as last checkpointed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// The ingest.
    pub ingest_id: String,
    /// Checkpoint time, Unix milliseconds.
    pub at_ms: u64,
    /// Video output.
    pub video: OutputState,
    /// Audio output.
    pub audio: OutputState,
}

/// A run's event clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventClock {
    /// Boot epoch: 1 for the first run on a data dir, +1 each start.
    pub epoch: u64,
    /// The first sequence number this run hands out.
    pub first_seq: u64,
    /// Sequence numbers up to here are reserved for this run.
    pub reserved_to: u64,
}
