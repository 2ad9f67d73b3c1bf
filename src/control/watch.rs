//! WatchEvents streams: replay then live tail, filters, lag and shutdown semantics, and the
//! watcher cap (a permit held for the stream's life).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{convert, pb};
use crate::error::Error;
use crate::registry::Event;

pub(super) struct Filter {
    pub(super) ingests: HashSet<String>,
    pub(super) kinds: HashSet<i32>,
}

impl Filter {
    fn accepts(&self, event: &Event) -> bool {
        (self.ingests.is_empty() || self.ingests.contains(&event.ingest_id))
            && (self.kinds.is_empty()
                || self
                    .kinds
                    .contains(&(convert::event_kind(&event.payload) as i32)))
    }
}

pub(super) struct WatchState {
    pub(super) replay: std::vec::IntoIter<Arc<Event>>,
    pub(super) live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    pub(super) filter: Filter,
    pub(super) shutdown: CancellationToken,
    pub(super) last_seq: u64,
    pub(super) finished: bool,
    /// The watcher's slot under the cap, released when the stream is dropped.
    pub(super) _permit: Option<OwnedSemaphorePermit>,
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
                        s.finished = true;
                        let resume = s.last_seq + 1;
                        let err = Error::Lagged(format!(
                            "watcher fell behind the event stream; resume with from_seq={resume}"
                        ));
                        return Some((Err(Status::from(err)), s));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        // The replay and the live tail may overlap by the events emitted in between.
        if event.seq <= s.last_seq {
            continue;
        }
        s.last_seq = event.seq;
        if s.filter.accepts(&event) {
            return Some((Ok(convert::event(&event)), s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EventPayload;
    use std::time::SystemTime;

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
            live,
            filter: Filter {
                ingests: HashSet::new(),
                kinds: HashSet::new(),
            },
            shutdown: CancellationToken::new(),
            last_seq,
            finished: false,
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
        assert_eq!(first.unwrap().seq, 1, "queued events still arrive");
        let (last, _) = next_event(state).await.unwrap();
        assert_eq!(last.unwrap_err().code(), tonic::Code::Unavailable);
    }
}
