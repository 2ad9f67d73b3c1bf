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
