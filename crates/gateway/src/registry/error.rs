//! What the registry refuses, and why. The edge (`crate::error`) turns each variant into an
//! HTTP status, a gRPC code and the text a client sees; the registry only says what happened
//! (its `Display` is for logs and event details) and which rejection category a refused
//! publish falls into.

use super::events::RejectReason;
use crate::store::StoreError;

/// A registry operation that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The ingest id is not 1 to 128 characters of `[A-Za-z0-9._~-]`.
    #[error("invalid ingest id {0:?}")]
    InvalidIngestId(String),
    /// No ingest under this id.
    #[error("no such ingest: {0}")]
    IngestNotFound(String),
    /// A different ingest is registered under this id and `replace` was not set.
    #[error("ingest {0} exists with different parameters")]
    IngestExists(String),
    /// No live session under this id (or not announced yet).
    #[error("no such session")]
    SessionNotFound,
    /// The ingest already has a live publisher.
    #[error("ingest {0} already has a live publisher")]
    PublisherConflict(String),
    /// The global publisher cap is reached (live publishers).
    #[error("publisher cap reached ({0} live)")]
    CapReached(usize),
    /// The gateway is draining.
    #[error("gateway is draining")]
    Draining,
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The publisher's offer cannot be served by this ingest (the planner's reason; the edge
    /// answers 400 with its text whatever the variant).
    #[error("{0}")]
    BadOffer(Box<crate::error::Error>),
    /// The session's command queue is full.
    #[error("session busy")]
    SessionBusy,
    /// A watcher asked for events older than the history holds.
    #[error("from_seq {from_seq} is older than the history (oldest held: {oldest})")]
    EventsGone {
        /// The requested resume point.
        from_seq: u64,
        /// The oldest sequence number still held.
        oldest: u64,
    },
    /// A watcher asked for events beyond the newest one.
    #[error("from_seq {from_seq} is beyond the newest event ({newest})")]
    EventsAhead {
        /// The requested resume point.
        from_seq: u64,
        /// The newest sequence number handed out.
        newest: u64,
    },
    /// A watcher named the event epoch of another gateway run.
    #[error("event epoch {requested} is not this run's ({current})")]
    StaleEpoch {
        /// The epoch the watcher named.
        requested: u64,
        /// This run's epoch.
        current: u64,
        /// The oldest sequence number this run holds.
        oldest: u64,
    },
    /// The durable store failed; the in-memory change stands.
    #[error("persisting the change failed")]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The category of a refused publish, for the publish-rejected event and its metric.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            RegistryError::CapReached(_) => RejectReason::Cap,
            RegistryError::PublisherConflict(_) => RejectReason::Conflict,
            RegistryError::Unauthorized => RejectReason::Auth,
            RegistryError::IngestNotFound(_) | RegistryError::InvalidIngestId(_) => {
                RejectReason::NotFound
            }
            RegistryError::BadOffer(_) => RejectReason::BadSdp,
            RegistryError::Draining => RejectReason::Draining,
            _ => RejectReason::Internal,
        }
    }
}
