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
mod tests {
    use super::*;
    use crate::registry::{Event, EventPayload};
    use std::time::SystemTime;
    use tokio::sync::broadcast;

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            epoch: 1,
            seq,
            at: SystemTime::now(),
            ingest_id: "a".into(),
            session_id: None,
            payload: EventPayload::IngestUnregistered,
        })
    }

    fn watch(live: tokio::sync::broadcast::Receiver<Arc<Event>>, last_seq: u64) -> WatchState {
        WatchState {
            replay: Vec::new().into_iter(),
            live: LiveEvents::from_registry(live, Arc::from("n1")),
            filter: Filter {
                ingests: HashSet::new(),
                kinds: HashSet::new(),
            },
            shutdown: CancellationToken::new(),
            last_seq,
            finished: false,
            checked_epoch: None,
            _permit: None,
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_where_to_resume() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let state = watch(rx, 0);
        for seq in 1..=5 {
            tx.send(event(seq)).unwrap();
        }
        let (first, state) = next_event(state).await.unwrap();
        let status = first.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("from_seq=1"),
            "{}",
            status.message()
        );
        assert!(
            next_event(state).await.is_none(),
            "the stream ends after the status"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_after_what_is_queued() {
        let (tx, rx) = tokio::sync::broadcast::channel(8);
        let state = watch(rx, 0);
        tx.send(event(1)).unwrap();
        state.shutdown.cancel();
        let (first, state) = next_event(state).await.unwrap();
        let first = first.unwrap();
        assert_eq!(first.seq, 1, "queued events still arrive");
        assert_eq!(first.node_id, "n1", "named after this node");
        let (last, _) = next_event(state).await.unwrap();
        assert_eq!(last.unwrap_err().code(), tonic::Code::Unavailable);
    }

    fn shared(seq: u64, epoch: u64) -> Arc<pb::Event> {
        Arc::new(pb::Event {
            seq,
            epoch,
            node_id: "b".into(),
            ..Default::default()
        })
    }

    fn shared_watch(live: broadcast::Receiver<Arc<pb::Event>>, last_seq: u64) -> WatchState {
        let mut state = watch(tokio::sync::broadcast::channel(1).1, last_seq);
        state.live = LiveEvents::from_stream(live);
        state.checked_epoch = Some(7);
        state
    }

    #[tokio::test]
    async fn a_cluster_watcher_is_told_of_a_jump_in_seqs_and_of_a_new_epoch() {
        let (tx, rx) = broadcast::channel(8);
        let state = shared_watch(rx, 4);
        for seq in [5, 7] {
            tx.send(shared(seq, 7)).unwrap();
        }
        let (first, state) = next_event(state).await.unwrap();
        assert_eq!(first.unwrap().node_id, "b", "the producing node is kept");
        let (jump, state) = next_event(state).await.unwrap();
        let status = jump.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("from_seq=6"),
            "{}",
            status.message()
        );
        assert!(next_event(state).await.is_none());

        let (tx, rx) = broadcast::channel(8);
        let state = shared_watch(rx, 4);
        tx.send(shared(1, 9)).unwrap();
        let (changed, _) = next_event(state).await.unwrap();
        assert_eq!(changed.unwrap_err().code(), tonic::Code::FailedPrecondition);
    }
}
