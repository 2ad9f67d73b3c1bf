//! WatchEvents streams: replay then live tail, filters, lag and shutdown semantics, and the
//! watcher cap (a permit held for the stream's life). The events come from the topology
//! ([`crate::topology::Topology::subscribe`]: this node's event log alone, the cluster's one
//! event stream in cluster mode), always in the control plane's form, with the same statuses.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::pb;
use crate::error::Error;
use crate::topology::LiveEvents;

pub(super) struct Filter {
    pub(super) ingests: HashSet<String>,
    pub(super) kinds: HashSet<i32>,
}

impl Filter {
    fn accepts(&self, event: &pb::Event) -> bool {
        (self.ingests.is_empty() || self.ingests.contains(&event.ingest_id))
            && (self.kinds.is_empty() || self.kinds.contains(&(kind(event) as i32)))
    }
}

fn kind(e: &pb::Event) -> pb::EventKind {
    use pb::EventKind as K;
    use pb::event::Payload as P;
    match &e.payload {
        None => K::Unspecified,
        Some(P::IngestRegistered(_)) => K::IngestRegistered,
        Some(P::IngestUpdated(_)) => K::IngestUpdated,
        Some(P::IngestUnregistered(_)) => K::IngestUnregistered,
        Some(P::PublishAccepted(_)) => K::PublishAccepted,
        Some(P::PublishRejected(_)) => K::PublishRejected,
        Some(P::SessionConnected(_)) => K::SessionConnected,
        Some(P::TrackStarted(_)) => K::TrackStarted,
        Some(P::SessionStats(_)) => K::SessionStats,
        Some(P::StreamWarning(_)) => K::StreamWarning,
        Some(P::SessionEnded(_)) => K::SessionEnded,
        Some(P::CapsChanged(_)) => K::CapsChanged,
    }
}

pub(super) struct WatchState {
    pub(super) replay: std::vec::IntoIter<Arc<pb::Event>>,
    pub(super) live: LiveEvents,
    pub(super) filter: Filter,
    pub(super) shutdown: CancellationToken,
    pub(super) last_seq: u64,
    pub(super) finished: bool,
    /// A shared stream's epoch (0: not known yet): its seqs must follow each other (see
    /// [`crate::topology::Subscription::checked_epoch`]).
    pub(super) checked_epoch: Option<u64>,
    /// The watcher's slot under the cap, released when the stream is dropped.
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

fn lagged(s: &mut WatchState) -> Status {
    s.finished = true;
    let resume = s.last_seq + 1;
    Status::from(Error::Lagged(format!(
        "watcher fell behind the event stream; resume with from_seq={resume}"
    )))
}

pub(super) async fn next_event(
    mut s: WatchState,
) -> Option<(Result<pb::Event, Status>, WatchState)> {
    if s.finished {
        return None;
    }
    loop {
        let event = match s.replay.next() {
            Some(event) => event,
            None => {
                // Biased to the channel: events emitted while draining (session-ended with
                // reason shutdown) still reach the watcher before the stream ends.
                let received = tokio::select! {
                    biased;
                    received = s.live.recv() => received,
                    _ = s.shutdown.cancelled() => {
                        s.finished = true;
                        return Some((Err(Status::unavailable("gateway is shutting down")), s));
                    }
                };
                match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => {
                        let status = lagged(&mut s);
                        return Some((Err(status), s));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        if let Some(epoch) = s.checked_epoch {
            if epoch != 0 && event.epoch != epoch {
                s.finished = true;
                let err = Error::StaleEpoch(format!(
                    "the cluster event stream changed epoch ({epoch} -> {}); resume with epoch={}",
                    event.epoch, event.epoch
                ));
                return Some((Err(Status::from(err)), s));
            }
            // A jump means the tail skipped events this watcher was due.
            if event.seq > s.last_seq + 1 && s.last_seq > 0 {
                let status = lagged(&mut s);
                return Some((Err(status), s));
            }
            s.checked_epoch = Some(event.epoch);
        }
        // The replay and the live tail may overlap by the events emitted in between.
        if event.seq <= s.last_seq {
            continue;
        }
        s.last_seq = event.seq;
        if s.filter.accepts(&event) {
            return Some((Ok(pb::Event::clone(&event)), s));
        }
    }
}

#[cfg(test)]
mod tests;
