//! Cluster mode at the WHIP edge: session URLs of sessions another node holds.
//!
//! A session URL is `/whip/<ingest>/<session>`; the ingest's lease names the node and session
//! of its live publisher. A PATCH or DELETE reaching a node that does not hold the session
//! gets `307` to the same path on the owner's advertise URL (307 keeps the method, the body
//! and the `Authorization` header a client re-sends), where the owner answers exactly as a
//! single node does: the bearer token is checked there, and the redirect says nothing the
//! caller did not know except where the session lives. No node holds it: this node answers
//! as a single node would (PATCH 404, DELETE 204). Redis unreachable: 503 + Retry-After,
//! since the session may be live elsewhere.

use axum::response::Response;
use uuid::Uuid;

use super::{WhipState, redirect};
use crate::error::Error;

/// `Some(307)` if another node holds session `session_id` of `ingest_id`.
pub(super) async fn redirect_to_owner(
    state: &WhipState,
    ingest_id: &str,
    session_id: &str,
) -> Result<Option<Response>, Error> {
    let Some(cluster) = &state.cluster else {
        return Ok(None);
    };
    if crate::registry::validate_ingest_id(ingest_id).is_err() {
        return Ok(None);
    }
    let Ok(session) = Uuid::parse_str(session_id) else {
        return Ok(None);
    };
    if state.registry.session_etag(ingest_id, session).is_some() {
        return Ok(None);
    }
    match cluster.session_url(ingest_id, session).await {
        Ok(Some(url)) => redirect(&url).map(Some),
        Ok(None) => Ok(None),
        Err(err) => Err(Error::Unavailable(format!(
            "{err}; cannot tell which node holds the session"
        ))),
    }
}

/// Continues the ingest's output streams from another node's checkpoint, if that is newer:
/// a publisher moving here keeps its consumer's SSRC and sequence numbers going forward.
/// `stored` is the ingest's checkpoint as read from Redis.
pub(super) fn take_over_outputs(
    ingest_id: &str,
    stored: Result<Option<crate::store::StreamRecord>, crate::cluster::ClusterError>,
    continuity: &std::sync::Mutex<crate::continuity::Continuity>,
) {
    let continued = stored.map(|record| {
        record.is_some_and(|r| crate::cluster::takeover::continue_outputs(&r, continuity))
    });
    match continued {
        Ok(true) => {
            tracing::info!(ingest = %ingest_id, "output streams continued from their checkpoint")
        }
        Ok(false) => {}
        // The session still works; its consumer may see new SSRCs.
        Err(err) => tracing::warn!(ingest = %ingest_id, %err, "reading output stream state failed"),
    }
}
