//! The cluster's one event stream on this node: a publisher that appends this node's events
//! to the Redis Stream ([`super::events`]), one tail that reads the stream back and fans it out
//! to every local watcher. The invalidation of shared registrations other nodes changed reads
//! the same fan-out ([`EventFeed::receiver`], see [`super::invalidate`]).
//!
//! **Publishing never blocks the registry.** The registry hands each event to a bounded queue
//! ([`QUEUE`]) without waiting; one task per node drains it and appends up to [`BATCH`] events
//! per round trip (one Lua script: consecutive seqs, atomic). While Redis is unreachable the
//! task retries the batch in hand with backoff and the queue buffers what comes meanwhile;
//! beyond [`QUEUE`] events are dropped, counted ([`crate::registry::Registry::events_dropped`])
//! and logged (at 1, 2, 4, 8... drops). A batch whose answer was lost (Redis died after running
//! it) is appended again: delivery is at least once, in order per node. On shutdown the queue is
//! flushed once (the sessions' `session_ended` with reason `SHUTDOWN` included), for at most
//! [`FLUSH`].
//!
//! **Watching reads the stream, not the registry.** The tail (`XREAD BLOCK` on a connection of
//! its own) starts at the stream's newest seq when the node starts and publishes every entry
//! into a `broadcast` channel as deep as the event history. A watcher subscribes to the channel
//! first, then replays from its `from_seq` with `XRANGE`, so nothing falls between the two; the
//! seqs, the order and the `epoch` are the stream's, the same on every node. A seq that does not
//! follow the previous one (the tail fell behind the trimmed stream) ends the watch with
//! RESOURCE_EXHAUSTED and where to resume, as a lagging watcher on one node does; an epoch that
//! changes under a watcher (Redis lost its data) ends it with FAILED_PRECONDITION.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::{EventStream, StoredEvent};
use super::summary::Summaries;
use super::{ClusterError, Keys, Redis};
use crate::error::Error;
use crate::registry::{Event, Registry};
use whipgate_proto::pb;

/// Events a node buffers for the stream (while Redis is slow or away) before dropping.
pub const QUEUE: usize = 4096;
/// Most events appended in one round trip.
pub const BATCH: usize = 256;
/// How long the final flush on shutdown may take.
pub const FLUSH: Duration = Duration::from_secs(1);
/// How long one `XREAD` blocks; an idle tail checks the stream's epoch this often.
const BLOCK: Duration = Duration::from_secs(2);
/// Longest wait between retries while Redis is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// This node's view of the cluster event stream (cheap to clone).
#[derive(Clone)]
pub struct EventFeed {
    inner: Arc<Inner>,
}

struct Inner {
    stream: EventStream,
    summaries: Summaries,
    node_id: String,
    live: Mutex<Live>,
}

/// The fan-out and where the tail stands, changed together.
struct Live {
    tx: broadcast::Sender<Arc<pb::Event>>,
    /// The seq of the last event the tail published (0: none yet).
    position: u64,
    /// The stream's epoch (0: not read yet).
    epoch: u64,
}

/// What a new watcher gets: the replay and the live receiver, taken so that nothing falls
/// between them.
pub struct FeedSubscription {
    /// Events from the requested seq.
    pub replay: Vec<Arc<pb::Event>>,
    /// Every event the tail reads from now on.
    pub live: broadcast::Receiver<Arc<pb::Event>>,
    /// The last seq before the first event due (the replay's start minus one, or the tail's
    /// position for a live-only watcher).
    pub last_seq: u64,
    /// The stream's epoch (0: Redis was not reached yet).
    pub epoch: u64,
}

impl EventFeed {
    /// Starts the feed of node `node_id`: hooks `registry`'s events into the stream (trimmed to
    /// `history` entries) and starts the tail. The tasks are tracked by `tracker` and end with
    /// `cancel`.
    pub async fn start(
        redis: Redis,
        keys: Keys,
        node_id: &str,
        history: usize,
        registry: &Registry,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let (tx, _) = broadcast::channel(history.max(16));
        let feed = EventFeed {
            inner: Arc::new(Inner {
                summaries: Summaries::new(redis.clone(), keys.clone(), node_id),
                stream: EventStream::new(redis, keys, history as u64),
                node_id: node_id.to_owned(),
                live: Mutex::new(Live {
                    tx,
                    position: 0,
                    epoch: 0,
                }),
            }),
        };
        // The tail's starting point before anyone can watch (a failure is retried by the tail).
        if let Err(err) = feed.position_tail().await {
            tracing::warn!(%err, "cluster event stream unreachable at start; the tail retries");
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        registry.set_event_sink(queue);
        tracker.spawn(feed.clone().publish(rx, registry.clone(), cancel.clone()));
        tracker.spawn(feed.clone().tail(cancel.clone()));
        feed
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // Plain data: a panic elsewhere leaves it usable.
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of every event the tail reads from now on.
    pub fn receiver(&self) -> broadcast::Receiver<Arc<pb::Event>> {
        self.live().tx.subscribe()
    }

    /// Subscribes from `from_seq` (0: live only) of stream epoch `epoch` (0: any). Errors are
    /// those of a single node: OUT_OF_RANGE for a trimmed or future seq, FAILED_PRECONDITION
    /// for another epoch; UNAVAILABLE when Redis cannot be read for the replay.
    pub async fn subscribe(&self, epoch: u64, from_seq: u64) -> Result<FeedSubscription, Error> {
        let (live, position, current) = {
            let l = self.live();
            (l.tx.subscribe(), l.position, l.epoch)
        };
        if epoch != 0 && current != 0 && epoch != current {
            return Err(Error::StaleEpoch(format!(
                "epoch {epoch} is not the cluster event stream's ({current}): its events are gone"
            )));
        }
        if from_seq == 0 {
            return Ok(FeedSubscription {
                replay: Vec::new(),
                live,
                last_seq: position,
                epoch: current,
            });
        }
        let mut replay = Vec::new();
        let mut next = from_seq;
        loop {
            let page = self
                .inner
                .stream
                .read_from(next)
                .await
                .map_err(|e| match e {
                    ClusterError::OutOfRange(m) => Error::OutOfRange(m),
                    other => Error::Unavailable(format!("cluster event stream: {other}")),
                })?;
            replay.extend(page.events.iter().filter_map(|e| decode(e, current)));
            if !page.more {
                break;
            }
            next = page.last_seq + 1;
        }
        Ok(FeedSubscription {
            replay,
            live,
            last_seq: from_seq - 1,
            epoch: current,
        })
    }

    /// Reads the stream's epoch and newest seq and sets where the tail continues: the newest
    /// seq at first, the same place after an outage, the start after an epoch change.
    async fn position_tail(&self) -> Result<u64, ClusterError> {
        let epoch = self.inner.stream.epoch_number().await?;
        let newest = self.inner.stream.last_seq().await?;
        let mut l = self.live();
        if l.epoch == 0 {
            l.position = newest;
        } else if l.epoch != epoch {
            tracing::warn!(
                old = l.epoch,
                new = epoch,
                "cluster event stream has a new epoch (Redis lost its data): seqs restart"
            );
            l.position = 0;
        } else if newest < l.position {
            l.position = newest;
        }
        l.epoch = epoch;
        Ok(l.position)
    }

    /// Appends this node's queued events to the stream until `cancel`, then flushes once.
    async fn publish(
        self,
        mut rx: mpsc::Receiver<Arc<Event>>,
        registry: Registry,
        cancel: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        // A batch not appended yet when shutdown came goes out first in the flush.
        let mut unsent = Vec::new();
        'run: loop {
            let n = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                n = rx.recv_many(&mut batch, BATCH) => n,
            };
            if n == 0 {
                return;
            }
            let items = self.encode(&batch);
            let sessions: BTreeSet<String> = batch
                .iter()
                .filter(|e| e.session_id.is_some())
                .map(|e| e.ingest_id.clone())
                .collect();
            batch.clear();
            let mut backoff = Duration::from_millis(50);
            while let Err(err) = self.inner.stream.append_batch(&items).await {
                tracing::debug!(%err, events = items.len(), "appending events failed; retrying");
                if sleep_or_cancel(&mut backoff, &cancel).await {
                    unsent = items;
                    break 'run;
                }
            }
            // After the events: a reader that saw `session_connected` finds the summary.
            if let Err(err) = self.inner.summaries.write(&registry, &sessions).await {
                tracing::debug!(%err, "writing session summaries failed");
            }
        }
        // Shutdown: what is queued now (the sessions' ends) goes out once, bounded in time.
        while rx.try_recv().map(|e| batch.push(e)).is_ok() {}
        let flush = async {
            let queued = batch.chunks(BATCH).map(|chunk| self.encode(chunk));
            for items in std::iter::once(unsent).chain(queued) {
                if let Err(err) = self.inner.stream.append_batch(&items).await {
                    tracing::warn!(%err, events = items.len(), "events lost at shutdown");
                    return;
                }
            }
        };
        if tokio::time::timeout(FLUSH, flush).await.is_err() {
            tracing::warn!("flushing events at shutdown timed out");
        }
    }

    fn encode(&self, events: &[Arc<Event>]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let mut pb = crate::control::event_to_pb(e);
                pb.node_id.clone_from(&self.inner.node_id);
                (self.inner.node_id.clone(), hex::encode(pb.encode_to_vec()))
            })
            .collect()
    }

    /// Reads the stream from the tail's position and fans it out, until `cancel`.
    async fn tail(self, cancel: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        let mut tail = None;
        loop {
            let t = match &mut tail {
                Some(t) => t,
                None => match self.position_tail().await {
                    Ok(position) => tail.insert(self.inner.stream.tail(position)),
                    Err(err) => {
                        tracing::debug!(%err, "event tail: Redis unreachable");
                        if sleep_or_cancel(&mut backoff, &cancel).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            let read = tokio::select! {
                read = t.next(BLOCK) => read,
                _ = cancel.cancelled() => return,
            };
            match read {
                Ok(events) if events.is_empty() => {
                    // Idle: make sure the stream is still the one we follow.
                    let (epoch, position) = {
                        let l = self.live();
                        (l.epoch, l.position)
                    };
                    let changed = match self.inner.stream.epoch_number().await {
                        Ok(now) => now != epoch,
                        Err(_) => false,
                    };
                    if changed || t.position() != position {
                        tail = None;
                    }
                }
                Ok(events) => {
                    backoff = Duration::from_millis(50);
                    let mut l = self.live();
                    let epoch = l.epoch;
                    for event in &events {
                        if let Some(e) = decode(event, epoch) {
                            // No receiver is fine: nobody is watching.
                            let _ = l.tx.send(e);
                        }
                    }
                    l.position = t.position();
                }
                Err(ClusterError::Lagged(m)) => {
                    // Watchers see the jump in seqs and are told to resume.
                    tracing::warn!("{m}; skipping to the newest event");
                    tail = None;
                    self.live().epoch = 0;
                }
                Err(err) => {
                    tracing::debug!(%err, "event tail: read failed; retrying");
                    tail = None;
                    if sleep_or_cancel(&mut backoff, &cancel).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Waits `backoff` (then doubles it, up to a bound); `true` if cancelled meanwhile.
async fn sleep_or_cancel(backoff: &mut Duration, cancel: &CancellationToken) -> bool {
    let stop = tokio::select! {
        _ = tokio::time::sleep(*backoff) => false,
        _ = cancel.cancelled() => true,
    };
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    stop
}

/// One stored event as the control plane's event, numbered by the stream.
fn decode(stored: &StoredEvent, epoch: u64) -> Option<Arc<pb::Event>> {
    let event = hex::decode(&stored.data)
        .ok()
        .and_then(|bytes| pb::Event::decode(bytes.as_slice()).ok());
    let Some(mut event) = event else {
        tracing::warn!(seq = stored.seq, node = %stored.node, "undecodable entry in the event stream");
        return None;
    };
    event.seq = stored.seq;
    event.epoch = epoch;
    if event.node_id.is_empty() {
        event.node_id.clone_from(&stored.node);
    }
    Some(Arc::new(event))
}
