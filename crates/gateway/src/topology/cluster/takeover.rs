//! Output stream continuity across nodes: a publisher that reconnects to another node (its
//! node died, or a load balancer sent it elsewhere) keeps its consumer's streams.
//!
//! Every node checkpoints the output streams it sends into `outputs` (SSRC, last sequence
//! number and timestamp, packet rate; once a second, see [`crate::registry::CHECKPOINT_INTERVAL`]).
//! When this node admits a publisher, it reads the ingest's record and, for each kind whose
//! record is newer than what this node last sent, continues the record's stream exactly as a
//! restarted single node does ([`OutputStream::restore`]): same SSRC, sequence numbers jumped
//! forward by the packet rate times the time since the checkpoint plus a fixed margin (so the
//! packets the dead node sent after its last checkpoint are covered), timestamps advanced by
//! the wall-clock gap.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::state::Table;
use super::{ClusterError, ClusterNode};
use crate::store::StreamRecord;
use whipgate_media::continuity::{Continuity, OutputState, OutputStream};

/// A stored stream must be this much newer than our own last packet to replace it (the two
/// wall-clock readings of one packet can differ by a millisecond or so).
const NEWER_BY_MS: u64 = 50;

impl ClusterNode {
    /// Continues `ingest`'s output streams from their checkpoint in Redis where that is newer
    /// than `continuity` (this node's state, about to be used by a new session). Returns
    /// whether a stream was taken over.
    pub async fn take_over_outputs(
        &self,
        ingest: &str,
        continuity: &Mutex<Continuity>,
    ) -> Result<bool, ClusterError> {
        let record = self.stored_outputs(ingest).await?;
        Ok(record.is_some_and(|r| continue_outputs(&r, continuity)))
    }

    /// `ingest`'s output stream checkpoint, if any (admission reads it while it claims the
    /// lease: one round trip for both).
    pub async fn stored_outputs(&self, ingest: &str) -> Result<Option<StreamRecord>, ClusterError> {
        let Some(raw) = self.shared_state().get(Table::Outputs, ingest).await? else {
            return Ok(None);
        };
        let trust = self.shared_state().trust();
        let Some(json) = trust.open(super::trust::Record::Outputs, ingest, &raw) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| ClusterError::Corrupt(format!("outputs/{ingest}: {e}")))
    }
}

/// Continues the streams of `record` in `continuity` where they are newer; whether one was.
pub fn continue_outputs(record: &StreamRecord, continuity: &Mutex<Continuity>) -> bool {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let at = UNIX_EPOCH + Duration::from_millis(record.at_ms);
    let mut c = continuity.lock().unwrap_or_else(|p| p.into_inner());
    let video = adopt(&mut c.video, &record.video, at, now, wall);
    let audio = adopt(&mut c.audio, &record.audio, at, now, wall);
    video || audio
}

/// Replaces `local` with the continuation of `stored` if `stored` is another stream or newer.
fn adopt(
    local: &mut OutputStream,
    stored: &OutputState,
    checkpoint_at: SystemTime,
    now: Instant,
    wall: SystemTime,
) -> bool {
    let Some(theirs) = stored.last else {
        // Nothing was ever sent on the stored stream: no consumer knows it.
        return false;
    };
    let mine = local.state(now, wall);
    let newer = match mine.last {
        None => true,
        Some(_) if mine.ssrc != stored.ssrc => true,
        Some(last) => theirs.at_unix_ms > last.at_unix_ms.saturating_add(NEWER_BY_MS),
    };
    if newer {
        *local = OutputStream::restore(stored, checkpoint_at, now, wall);
    }
    newer
}

#[cfg(test)]
mod tests;
