//! The shared registry: ingests, live sessions, caps and the event log, behind one lock.
//!
//! Both the WHIP edge and the gRPC service hold a clone of [`Registry`]; neither keeps state of
//! its own. Methods are plain `fn`: nothing is awaited under the lock. A change and its event
//! happen in the same critical section. The registry stores metadata, counters and a
//! cancellation handle per session, never the peer connection: each session's task owns that.

mod caps;
mod durable;
pub(crate) use durable::record_is_valid;
mod error;
mod events;
mod model;
mod publish;
mod session;
mod shared;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use durable::{CHECKPOINT_INTERVAL, Persist, SEQ_BLOCK};
pub use error::RegistryError;
pub use events::{EndReason, Event, EventPayload, RejectReason, Subscription};
pub use model::MAX_INGEST_ID_LEN;
pub use model::{
    Caps, CountersSnapshot, IngestSpec, IngestView, Limits, SessionCounters, SessionState,
    SessionTimings, SessionView, validate_ingest_id,
};
pub use publish::{Admission, Admitted, SessionGuard};
pub use session::{IceRestarted, SessionCommand};
pub use shared::DIRTY_GUARD;

use crate::metrics::Metrics;
use crate::secret::TokenHash;
use crate::store::{EventClock, Store};
use events::{EventLog, SubscribeError};
use whipgate_media::continuity::Continuity;
use whipgate_media::facts::StreamFacts;

/// Handle to the shared state; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Where changes are made durable; `None`: nothing outlives the process.
    store: Option<Arc<dyn Store>>,
    /// Serialises store writes: each writer reads the newest in-memory state once it holds
    /// this, so the last write always carries the last change.
    write_lock: tokio::sync::Mutex<()>,
    /// Wakes the checkpointer early (a session ended, sequence numbers run low).
    checkpoint_soon: tokio::sync::Notify,
    /// `--max-publishers` at boot (stored with a SetCaps value, see `CapsRecord`).
    configured_max_publishers: usize,
    /// Cluster mode: where events also go (the cluster event stream's publisher).
    sink: OnceLock<shared::EventSink>,
}

struct State {
    ingests: HashMap<String, IngestEntry>,
    /// Session id -> ingest id.
    sessions: HashMap<Uuid, String>,
    caps: Caps,
    draining: bool,
    events: EventLog,
    /// Counter of local changes (see `shared`).
    local_rev: u64,
    /// Ingests unregistered here whose removal is not written yet (see `shared`).
    removed: HashMap<String, shared::Dirty>,
}

impl State {
    /// The live session `session_id` and its ingest id.
    fn session_mut(&mut self, session_id: Uuid) -> Option<(String, &mut SessionEntry)> {
        let ingest_id = self.sessions.get(&session_id)?.clone();
        let session = self.ingests.get_mut(&ingest_id)?.session.as_mut()?;
        Some((ingest_id, session))
    }
}

struct IngestEntry {
    /// The registration, its `bearer_token` always `None`: see `token`.
    spec: IngestSpec,
    /// The WHIP bearer token's salted hash: the clear token is never kept.
    token: Option<TokenHash>,
    created_at: SystemTime,
    session: Option<SessionEntry>,
    /// Output SSRCs and numbering, shared by the ingest's successive sessions.
    continuity: Arc<Mutex<Continuity>>,
    /// Limits set with SetCaps; they win over the registered ones and do not make a later
    /// identical RegisterIngest a conflict.
    limits_override: Option<Limits>,
    /// Simulcast layer chosen with SelectSimulcastLayer (`Some(None)`: highest bitrate).
    layer_override: Option<Option<String>>,
    /// A local change not written to the store yet (see `shared`).
    dirty: Option<shared::Dirty>,
    /// Refusals not reported in an event yet, and when the last event went out.
    rejections: publish::Rejections,
}

impl IngestEntry {
    fn limits(&self) -> Limits {
        self.limits_override.unwrap_or(self.spec.limits)
    }

    fn simulcast_layer(&self) -> Option<String> {
        self.layer_override
            .clone()
            .unwrap_or_else(|| self.spec.simulcast_layer.clone())
    }
}

struct SessionEntry {
    id: Uuid,
    state: SessionState,
    remote_addr: Option<SocketAddr>,
    video_codec: Option<String>,
    audio_codec: Option<String>,
    started_at: SystemTime,
    started: Instant,
    counters: Arc<SessionCounters>,
    cancel: CancellationToken,
    commands: mpsc::Sender<SessionCommand>,
    simulcast_layers: Vec<String>,
    forwarded_layer: Option<String>,
    /// Announced (publish-accepted emitted): only announced sessions emit session-ended.
    announced: bool,
    etag: String,
    /// What the media is, as the session task last reported.
    facts: StreamFacts,
    /// How long connecting and the first keyframe took.
    timings: SessionTimings,
}

impl Registry {
    /// An empty registry that persists nothing (epoch 1, events from 1).
    pub fn new(caps: Caps, event_history: usize, metrics: Arc<Metrics>) -> Self {
        let clock = EventClock {
            epoch: 1,
            first_seq: 1,
            reserved_to: u64::MAX,
        };
        Self::with_state(caps, HashMap::new(), event_history, clock, metrics, None)
    }

    fn with_state(
        caps: Caps,
        ingests: HashMap<String, IngestEntry>,
        event_history: usize,
        clock: EventClock,
        metrics: Arc<Metrics>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        let configured_max_publishers = caps.max_publishers;
        Registry {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ingests,
                    sessions: HashMap::new(),
                    caps,
                    draining: false,
                    events: EventLog::new(event_history, clock),
                    local_rev: 0,
                    removed: HashMap::new(),
                }),
                metrics,
                store,
                write_lock: tokio::sync::Mutex::new(()),
                checkpoint_soon: tokio::sync::Notify::new(),
                configured_max_publishers,
                sink: OnceLock::new(),
            }),
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves plain data behind; keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(
        &self,
        state: &mut State,
        ingest_id: &str,
        session_id: Option<Uuid>,
        payload: EventPayload,
    ) {
        self.inner
            .metrics
            .events
            .with_label_values(&[payload.kind_name()])
            .inc();
        let (event, low) = state.events.emit(ingest_id, session_id, payload);
        if low {
            // Sequence numbers are running low: reserve the next block soon.
            self.inner.checkpoint_soon.notify_one();
        }
        if let Some(sink) = self.inner.sink.get()
            && sink.offer(event)
        {
            self.inner.metrics.cluster_events_dropped.inc();
        }
    }

    // ---- ingests -------------------------------------------------------------------------

    /// Registers an ingest. Identical re-registration (the same token included, checked
    /// against its stored hash) is a no-op (`created == false`); a different one fails with
    /// [`RegistryError::IngestExists`] unless `replace` is set. Only the token's salted hash is
    /// kept; the clear token is dropped when this returns.
    pub fn register(
        &self,
        mut spec: IngestSpec,
        replace: bool,
    ) -> Result<(IngestView, bool), RegistryError> {
        validate_ingest_id(&spec.id)?;
        let clear_token = spec.bearer_token.take();
        let same = |e: &IngestEntry| {
            e.spec == spec && TokenHash::same_token(e.token.as_ref(), clear_token.as_deref())
        };
        let mut cancel = None;
        let result = {
            let mut state = self.lock();
            let id = spec.id.clone();
            match state.ingests.get(&id).map(same) {
                Some(true) => Ok((view_of(&state.ingests[&id]), false)),
                Some(false) if !replace => Err(RegistryError::IngestExists(id)),
                Some(false) => {
                    let must_close = state.ingests.get_mut(&id).is_some_and(|existing| {
                        existing.limits_override = None;
                        existing.layer_override = None;
                        // The same token keeps its stored hash: hashes change with tokens only.
                        let token_changed =
                            !TokenHash::same_token(existing.token.as_ref(), clear_token.as_deref());
                        if token_changed {
                            existing.token = clear_token.as_deref().map(TokenHash::new);
                        }
                        let old = std::mem::replace(&mut existing.spec, spec);
                        old.media_differs(&existing.spec) || token_changed
                    });
                    Self::touch(&mut state, &id, false);
                    if must_close {
                        cancel = self.end_locked(
                            &mut state,
                            &id,
                            EndReason::Replaced,
                            "ingest replaced",
                        );
                    }
                    let view = view_of(&state.ingests[&id]);
                    self.emit(
                        &mut state,
                        &id,
                        None,
                        EventPayload::IngestUpdated(Box::new(view.clone())),
                    );
                    Ok((view, false))
                }
                None => {
                    let entry = IngestEntry {
                        spec,
                        token: clear_token.as_deref().map(TokenHash::new),
                        created_at: SystemTime::now(),
                        session: None,
                        continuity: Arc::default(),
                        limits_override: None,
                        layer_override: None,
                        dirty: None,
                        rejections: Default::default(),
                    };
                    let view = view_of(&entry);
                    state.ingests.insert(id.clone(), entry);
                    Self::touch(&mut state, &id, false);
                    self.emit(
                        &mut state,
                        &id,
                        None,
                        EventPayload::IngestRegistered(Box::new(view.clone())),
                    );
                    Ok((view, true))
                }
            }
        };
        if let Some(token) = cancel {
            token.cancel();
        }
        result
    }

    /// Removes an ingest, closing its live publisher. Returns whether a session was closed.
    pub fn unregister(&self, ingest_id: &str) -> Result<bool, RegistryError> {
        self.unregister_as(ingest_id, true)
    }

    pub(super) fn unregister_as(
        &self,
        ingest_id: &str,
        announce: bool,
    ) -> Result<bool, RegistryError> {
        let cancel = {
            let mut state = self.lock();
            if !state.ingests.contains_key(ingest_id) {
                return Err(RegistryError::IngestNotFound(ingest_id.to_owned()));
            }
            let cancel = self.end_locked(
                &mut state,
                ingest_id,
                EndReason::Unregister,
                "ingest unregistered",
            );
            state.ingests.remove(ingest_id);
            Self::touch(&mut state, ingest_id, true);
            if announce {
                self.emit(
                    &mut state,
                    ingest_id,
                    None,
                    EventPayload::IngestUnregistered,
                );
            }
            cancel
        };
        let closed = cancel.is_some();
        if let Some(token) = cancel {
            token.cancel();
        }
        Ok(closed)
    }

    /// One ingest.
    pub fn get(&self, ingest_id: &str) -> Result<IngestView, RegistryError> {
        self.lock()
            .ingests
            .get(ingest_id)
            .map(view_of)
            .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))
    }

    /// All ingests, sorted by id.
    pub fn list(&self) -> Vec<IngestView> {
        let mut all: Vec<IngestView> = self.lock().ingests.values().map(view_of).collect();
        all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        all
    }

    /// Subscribes to events from `from_seq` (0: live only).
    pub fn subscribe(&self, from_seq: u64) -> Result<Subscription, RegistryError> {
        self.subscribe_at(0, from_seq)
    }

    /// Subscribes to events from `from_seq` of run `epoch` (0: whichever run this is). A
    /// watcher resuming across a restart names the epoch its `from_seq` came from and is told
    /// plainly that those events are gone.
    pub fn subscribe_at(&self, epoch: u64, from_seq: u64) -> Result<Subscription, RegistryError> {
        let state = self.lock();
        let current = state.events.epoch();
        if epoch != 0 && epoch != current {
            return Err(RegistryError::StaleEpoch {
                requested: epoch,
                current,
                oldest: state.events.oldest_seq(),
            });
        }
        state.events.subscribe(from_seq).map_err(|err| match err {
            SubscribeError::Gone { oldest } => RegistryError::EventsGone { from_seq, oldest },
            SubscribeError::Future { newest } => RegistryError::EventsAhead { from_seq, newest },
        })
    }

    /// This run's event epoch.
    pub fn epoch(&self) -> u64 {
        self.lock().events.epoch()
    }

    /// Refuses new publishes (503) while live sessions go on: the drain window before
    /// [`Registry::start_draining`] ends them.
    pub fn stop_admitting(&self) {
        self.lock().draining = true;
    }

    /// Stops admitting publishers and ends every live session (reason: shutdown).
    pub fn start_draining(&self) {
        let tokens: Vec<CancellationToken> = {
            let mut state = self.lock();
            state.draining = true;
            let ids: Vec<String> = state.sessions.values().cloned().collect();
            ids.iter()
                .filter_map(|id| {
                    self.end_locked(&mut state, id, EndReason::Shutdown, "gateway shutting down")
                })
                .collect()
        };
        for token in tokens {
            token.cancel();
        }
    }

    /// Whether the gateway is draining.
    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Live publishers.
    pub fn live_count(&self) -> usize {
        self.lock().sessions.len()
    }
}

fn view_of(entry: &IngestEntry) -> IngestView {
    let mut spec = entry.spec.clone();
    spec.limits = entry.limits();
    spec.simulcast_layer = entry.simulcast_layer();
    spec.bearer_token = None;
    let has_bearer_token = entry.token.is_some();
    IngestView {
        consumer_sdp: spec.consumer_sdp(),
        spec,
        has_bearer_token,
        created_at: entry.created_at,
        session: entry.session.as_ref().map(|s| SessionView {
            id: s.id,
            state: s.state,
            remote_addr: s.remote_addr,
            video_codec: s.video_codec.clone(),
            audio_codec: s.audio_codec.clone(),
            started_at: s.started_at,
            counters: s.counters.snapshot(),
            simulcast_layers: s.simulcast_layers.clone(),
            forwarded_layer: s.forwarded_layer.clone(),
            consumer_sdp: entry
                .spec
                .negotiated_sdp(s.video_codec.as_deref(), s.audio_codec.as_deref()),
            facts: s.facts,
            timings: s.timings,
        }),
    }
}

#[cfg(test)]
mod tests;
