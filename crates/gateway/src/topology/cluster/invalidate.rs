//! Live sharing of registrations between running nodes: the event stream is the invalidation
//! feed. When another node registers, replaces or unregisters an ingest, or changes its limits,
//! this node reloads that ingest from the shared state into its registry (without emitting an
//! event: the other node did). A gap in the feed (the tail skipped ahead, Redis came back)
//! reloads everything. Reads that must not miss a change made a moment ago (a WHIP POST,
//! GetIngest, ListIngests) also reload on their own (see [`crate::registry::Registry::refresh`]).

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use whipgate_proto::pb;
use whipgate_proto::pb::event::Payload;

/// Whether `event` (from another node) changed a shared registration.
fn changes_registration(event: &pb::Event) -> bool {
    match &event.payload {
        Some(
            Payload::IngestRegistered(_)
            | Payload::IngestUpdated(_)
            | Payload::IngestUnregistered(_),
        ) => true,
        // Per-ingest limits; the global cap is each node's own.
        Some(Payload::CapsChanged(_)) => !event.ingest_id.is_empty(),
        _ => false,
    }
}

/// Follows the cluster event stream `rx` (from [`super::feed::EventFeed::receiver`]) and
/// reloads what nodes other than `node_id` changed, until `cancel`.
pub async fn run(
    mut rx: broadcast::Receiver<Arc<pb::Event>>,
    node_id: String,
    registry: Registry,
    cancel: CancellationToken,
) {
    let mut last: Option<(u64, u64)> = None;
    loop {
        let received = tokio::select! {
            received = rx.recv() => received,
            _ = cancel.cancelled() => return,
        };
        let event: Arc<pb::Event> = match received {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => {
                reload_all(&registry).await;
                last = None;
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let gap = last.is_some_and(|(epoch, seq)| epoch != event.epoch || event.seq != seq + 1);
        last = Some((event.epoch, event.seq));
        if gap {
            reload_all(&registry).await;
            continue;
        }
        if event.node_id == node_id || !changes_registration(&event) {
            continue;
        }
        if let Err(err) = registry.refresh(&event.ingest_id).await {
            tracing::debug!(ingest = %event.ingest_id, %err, "reloading a shared registration failed");
        }
    }
}

async fn reload_all(registry: &Registry) {
    if let Err(err) = registry.refresh_all().await {
        tracing::debug!(%err, "reloading shared registrations failed");
    }
}
