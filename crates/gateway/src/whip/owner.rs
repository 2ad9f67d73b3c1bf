//! Cluster mode at the WHIP edge: a publisher that moves to this node keeps its consumers'
//! output streams (SSRC, sequence numbers) going forward from another node's checkpoint.

/// Continues the ingest's output streams from another node's checkpoint, if that is newer:
/// a publisher moving here keeps its consumer's SSRC and sequence numbers going forward.
/// `stored` is the ingest's checkpoint as read from Redis.
pub(super) fn take_over_outputs(
    ingest_id: &str,
    stored: Result<Option<crate::store::StreamRecord>, crate::cluster::ClusterError>,
    continuity: &std::sync::Mutex<whipgate_media::continuity::Continuity>,
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
