//! The shared registry: ingests, live sessions, caps and the event log, behind one lock.
//!
//! Both the WHIP edge and the gRPC service hold a clone of [`Registry`]; neither keeps state of
//! its own. Methods are plain `fn`: nothing is awaited under the lock. A change and its event
//! happen in the same critical section. The registry stores metadata, counters and a
//! cancellation handle per session, never the peer connection: each session's task owns that.

mod events;
mod model;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use events::{EndReason, Event, EventPayload, RejectReason, Subscription};
pub use model::{
    Caps, CountersSnapshot, IngestSpec, IngestView, Limits, SessionCounters, SessionState,
    SessionView, validate_ingest_id,
};

use crate::codec::MediaKind;
use crate::continuity::Continuity;
use crate::error::Error;
use crate::metrics::Metrics;
use events::{EventLog, SubscribeError};

/// Commands the control plane sends to a live session's task.
#[derive(Debug)]
pub enum SessionCommand {
    /// Send an RTCP PLI to the publisher.
    RequestKeyframe,
    /// Forward this simulcast layer (`None`: the highest bitrate).
    SelectLayer(Option<String>),
    /// Restart ICE with the publisher's new credentials (a trickle-ice-sdpfrag); the reply is
    /// the gateway's fragment (new ufrag, pwd, candidates) and new ETag.
    IceRestart {
        /// The publisher's fragment.
        fragment: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<IceRestarted, String>>,
    },
}

/// The gateway's side of a completed ICE restart.
#[derive(Debug)]
pub struct IceRestarted {
    /// `application/trickle-ice-sdpfrag` body for the 200.
    pub fragment: String,
    /// The new ETag (one per ICE session).
    pub etag: String,
}

/// Handle to the shared state; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

struct State {
    ingests: HashMap<String, IngestEntry>,
    /// Session id -> ingest id.
    sessions: HashMap<Uuid, String>,
    caps: Caps,
    draining: bool,
    events: EventLog,
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
    spec: IngestSpec,
    created_at: SystemTime,
    session: Option<SessionEntry>,
    /// Output SSRCs and numbering, shared by the ingest's successive sessions.
    continuity: Arc<Mutex<Continuity>>,
    /// Limits set with SetCaps; they win over the registered ones and do not make a later
    /// identical RegisterIngest a conflict.
    limits_override: Option<Limits>,
    /// Simulcast layer chosen with SelectSimulcastLayer (`Some(None)`: highest bitrate).
    layer_override: Option<Option<String>>,
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
}

/// A publish that won admission: what the session task needs to run.
pub struct Admission {
    /// New session id (UUIDv4).
    pub session_id: Uuid,
    /// The ingest as registered at admission.
    pub spec: IngestSpec,
    /// Cancelled when the session is ended from outside.
    pub cancel: CancellationToken,
    /// Control-plane commands for this session.
    pub commands: mpsc::Receiver<SessionCommand>,
    /// Counters shared with the registry.
    pub counters: Arc<SessionCounters>,
    /// The ingest's output stream state (continuity across reconnects).
    pub continuity: Arc<Mutex<Continuity>>,
    /// Ends the session (reason: error) if its owner goes away without ending it.
    pub guard: SessionGuard,
}

/// Ends its session when dropped, unless it already ended. Makes leaks impossible.
pub struct SessionGuard {
    registry: Registry,
    session_id: Uuid,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry
            .end_session(self.session_id, EndReason::Error, "session task exited");
    }
}

impl SessionGuard {
    /// The guarded session.
    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// The registry, for the session task's updates.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(caps: Caps, event_history: usize, metrics: Arc<Metrics>) -> Self {
        Registry {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ingests: HashMap::new(),
                    sessions: HashMap::new(),
                    caps,
                    draining: false,
                    events: EventLog::new(event_history),
                }),
                metrics,
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
        state.events.emit(ingest_id, session_id, payload);
    }

    // ---- ingests -------------------------------------------------------------------------

    /// Registers an ingest. Identical re-registration is a no-op (`created == false`); a
    /// different one fails with [`Error::IngestExists`] unless `replace` is set.
    pub fn register(&self, spec: IngestSpec, replace: bool) -> Result<(IngestView, bool), Error> {
        validate_ingest_id(&spec.id)?;
        let mut cancel = None;
        let result = {
            let mut state = self.lock();
            let id = spec.id.clone();
            match state.ingests.get(&id).map(|e| e.spec == spec) {
                Some(true) => Ok((view_of(&state.ingests[&id]), false)),
                Some(false) if !replace => Err(Error::IngestExists(id)),
                Some(false) => {
                    let must_close = state.ingests.get_mut(&id).is_some_and(|existing| {
                        existing.limits_override = None;
                        existing.layer_override = None;
                        let old = std::mem::replace(&mut existing.spec, spec);
                        old.media_differs(&existing.spec)
                    });
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
                        created_at: SystemTime::now(),
                        session: None,
                        continuity: Arc::default(),
                        limits_override: None,
                        layer_override: None,
                    };
                    let view = view_of(&entry);
                    state.ingests.insert(id.clone(), entry);
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
    pub fn unregister(&self, ingest_id: &str) -> Result<bool, Error> {
        let cancel = {
            let mut state = self.lock();
            if !state.ingests.contains_key(ingest_id) {
                return Err(Error::IngestNotFound(ingest_id.to_owned()));
            }
            let cancel = self.end_locked(
                &mut state,
                ingest_id,
                EndReason::Unregister,
                "ingest unregistered",
            );
            state.ingests.remove(ingest_id);
            self.emit(
                &mut state,
                ingest_id,
                None,
                EventPayload::IngestUnregistered,
            );
            cancel
        };
        let closed = cancel.is_some();
        if let Some(token) = cancel {
            token.cancel();
        }
        Ok(closed)
    }

    /// One ingest.
    pub fn get(&self, ingest_id: &str) -> Result<IngestView, Error> {
        self.lock()
            .ingests
            .get(ingest_id)
            .map(view_of)
            .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))
    }

    /// All ingests, sorted by id.
    pub fn list(&self) -> Vec<IngestView> {
        let mut all: Vec<IngestView> = self.lock().ingests.values().map(view_of).collect();
        all.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
        all
    }

    // ---- caps ----------------------------------------------------------------------------

    /// Global caps and the live publisher count.
    pub fn caps(&self) -> (Caps, usize) {
        let state = self.lock();
        (state.caps, state.sessions.len())
    }

    /// Changes the global cap. Live publishers above a lowered cap stay; new ones get 503.
    pub fn set_max_publishers(&self, max_publishers: usize) -> (Caps, usize) {
        let mut state = self.lock();
        state.caps.max_publishers = max_publishers;
        let caps = state.caps;
        self.emit(
            &mut state,
            "",
            None,
            EventPayload::CapsChanged { caps, limits: None },
        );
        (caps, state.sessions.len())
    }

    /// Changes one ingest's limits.
    pub fn set_limits(&self, ingest_id: &str, limits: Limits) -> Result<(), Error> {
        let mut state = self.lock();
        let entry = state
            .ingests
            .get_mut(ingest_id)
            .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
        entry.limits_override = Some(limits);
        let caps = state.caps;
        self.emit(
            &mut state,
            ingest_id,
            None,
            EventPayload::CapsChanged {
                caps,
                limits: Some(limits),
            },
        );
        Ok(())
    }

    /// An ingest's current limits (sessions re-read them, so changes apply live).
    pub fn limits(&self, ingest_id: &str) -> Option<Limits> {
        self.lock().ingests.get(ingest_id).map(IngestEntry::limits)
    }

    // ---- publishing ----------------------------------------------------------------------

    /// Checks that a publish could be admitted (ingest exists, token right, not draining),
    /// without reserving anything. Lets the edge validate the SDP before admission.
    pub fn authorize(&self, ingest_id: &str, bearer: Option<&str>) -> Result<IngestSpec, Error> {
        let state = self.lock();
        if state.draining {
            return Err(Error::Draining);
        }
        let entry = state
            .ingests
            .get(ingest_id)
            .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
        check_token(&entry.spec, bearer)?;
        Ok(entry.spec.clone())
    }

    /// Where publishes to this ingest are redirected, if anywhere.
    pub fn redirect_of(&self, ingest_id: &str) -> Result<Option<String>, Error> {
        let state = self.lock();
        if state.draining {
            return Err(Error::Draining);
        }
        let entry = state
            .ingests
            .get(ingest_id)
            .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
        Ok(entry.spec.redirect_url.clone())
    }

    /// Admits a publisher: all checks and the insertion happen in one critical section, so two
    /// racing publishes can never both win.
    ///
    /// The slot is reserved silently; [`Registry::publish_accepted`] announces it once the
    /// answer exists, so a failed negotiation shows up as one publish-rejected event only.
    pub fn admit(&self, ingest_id: &str, bearer: Option<&str>) -> Result<Admission, Error> {
        let (admission, replaced) = self.admit_locked(ingest_id, bearer)?;
        if let Some(token) = replaced {
            token.cancel();
        }
        Ok(admission)
    }

    /// [`Registry::admit`] under the lock; also returns the token of a replaced session, to
    /// cancel once the lock is released.
    fn admit_locked(
        &self,
        ingest_id: &str,
        bearer: Option<&str>,
    ) -> Result<(Admission, Option<CancellationToken>), Error> {
        let mut state = self.lock();
        if state.draining {
            return Err(Error::Draining);
        }
        let live = state.sessions.len();
        let max = state.caps.max_publishers;
        let entry = state
            .ingests
            .get_mut(ingest_id)
            .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
        check_token(&entry.spec, bearer)?;
        let replace = entry.spec.replace_publisher;
        if entry.session.is_some() && !replace {
            return Err(Error::PublisherConflict(ingest_id.to_owned()));
        }
        // A replaced publisher frees its own slot.
        let replacing = usize::from(entry.session.is_some());
        if live - replacing >= max {
            return Err(Error::CapReached(live));
        }
        let replaced = self.end_locked(
            &mut state,
            ingest_id,
            EndReason::Replaced,
            "a new publisher took over",
        );
        let Some(entry) = state.ingests.get_mut(ingest_id) else {
            return Err(Error::IngestNotFound(ingest_id.to_owned()));
        };
        let session_id = Uuid::new_v4();
        let cancel = CancellationToken::new();
        let counters = Arc::new(SessionCounters::default());
        let (commands_tx, commands) = mpsc::channel(8);
        entry.session = Some(SessionEntry {
            id: session_id,
            state: SessionState::Connecting,
            remote_addr: None,
            video_codec: None,
            audio_codec: None,
            started_at: SystemTime::now(),
            started: Instant::now(),
            counters: Arc::clone(&counters),
            cancel: cancel.clone(),
            commands: commands_tx,
            announced: false,
            etag: String::new(),
            simulcast_layers: Vec::new(),
            forwarded_layer: None,
        });
        let mut spec = entry.spec.clone();
        spec.simulcast_layer = entry.simulcast_layer();
        let continuity = Arc::clone(&entry.continuity);
        state.sessions.insert(session_id, ingest_id.to_owned());
        self.inner
            .metrics
            .live_publishers
            .set(state.sessions.len() as i64);
        let admission = Admission {
            session_id,
            spec,
            cancel,
            commands,
            counters,
            continuity,
            guard: SessionGuard {
                registry: self.clone(),
                session_id,
            },
        };
        Ok((admission, replaced))
    }

    /// Announces an admitted session whose answer is ready (publish-accepted event).
    pub fn publish_accepted(&self, session_id: Uuid, http_peer: Option<SocketAddr>, etag: &str) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        session.announced = true;
        session.etag = etag.to_owned();
        self.inner.metrics.sessions_started.inc();
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::PublishAccepted {
                remote_addr: http_peer,
            },
        );
    }

    /// Hands a command to the live session `session_id` of `ingest_id`.
    pub fn command_session(
        &self,
        ingest_id: &str,
        session_id: Uuid,
        command: SessionCommand,
    ) -> Result<(), Error> {
        let commands = {
            let state = self.lock();
            state
                .ingests
                .get(ingest_id)
                .and_then(|e| e.session.as_ref())
                .filter(|s| s.id == session_id && s.announced)
                .map(|s| s.commands.clone())
                .ok_or(Error::SessionNotFound)?
        };
        commands
            .try_send(command)
            .map_err(|_| Error::Unprocessable("the session is busy; retry".into()))
    }

    /// Records a session's new ETag (after an ICE restart).
    pub fn set_session_etag(&self, ingest_id: &str, session_id: Uuid, etag: &str) {
        let mut state = self.lock();
        if let Some(session) = state
            .ingests
            .get_mut(ingest_id)
            .and_then(|e| e.session.as_mut())
            .filter(|s| s.id == session_id)
        {
            session.etag = etag.to_owned();
        }
    }

    /// The ETag of a live session of `ingest_id`.
    pub fn session_etag(&self, ingest_id: &str, session_id: Uuid) -> Option<String> {
        let state = self.lock();
        let session = state.ingests.get(ingest_id)?.session.as_ref()?;
        (session.id == session_id).then(|| session.etag.clone())
    }

    /// Records a refused publish (event + metric).
    pub fn publish_rejected(&self, ingest_id: &str, err: &Error) {
        let reason = err.reject_reason();
        self.inner
            .metrics
            .publish_rejections
            .with_label_values(&[reason.as_str()])
            .inc();
        let mut state = self.lock();
        self.emit(
            &mut state,
            ingest_id,
            None,
            EventPayload::PublishRejected {
                reason,
                detail: err.to_string(),
            },
        );
    }

    /// Marks a session connected (ICE + DTLS up).
    pub fn session_connected(&self, session_id: Uuid, remote_addr: Option<SocketAddr>) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        session.state = SessionState::Connected;
        session.remote_addr = remote_addr;
        let connect_time = session.started.elapsed();
        self.inner
            .metrics
            .ice_connect("connected")
            .observe(connect_time.as_secs_f64());
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::SessionConnected {
                remote_addr,
                connect_time,
            },
        );
    }

    /// Records the first packet of a track.
    pub fn track_started(
        &self,
        session_id: Uuid,
        kind: MediaKind,
        codec: &str,
        ssrc: u32,
        rid: Option<&str>,
    ) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        match kind {
            MediaKind::Video => session.video_codec = Some(codec.to_owned()),
            MediaKind::Audio => session.audio_codec = Some(codec.to_owned()),
        }
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::TrackStarted {
                kind,
                codec: codec.to_owned(),
                ssrc,
                rid: rid.map(str::to_owned),
            },
        );
    }

    /// Emits a periodic stats event for a live session.
    pub fn session_stats(&self, session_id: Uuid, bitrate_bps: u64, video_jitter_ms: f64) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        let counters = session.counters.snapshot();
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::SessionStats {
                bitrate_bps,
                counters,
                video_jitter_ms,
            },
        );
    }

    /// Ends a session: removes it, emits session-ended, then cancels its task (after the lock
    /// is released). Idempotent: returns `false` if it was already gone.
    pub fn end_session(&self, session_id: Uuid, reason: EndReason, detail: &str) -> bool {
        let cancel = {
            let mut state = self.lock();
            let Some(ingest_id) = state.sessions.get(&session_id).cloned() else {
                return false;
            };
            self.end_locked(&mut state, &ingest_id, reason, detail)
        };
        match cancel {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Ends the session `session_id` only if it belongs to `ingest_id` (WHIP DELETE).
    pub fn end_publisher_session(&self, ingest_id: &str, session_id: Uuid) -> bool {
        let owned = self
            .lock()
            .sessions
            .get(&session_id)
            .is_some_and(|i| i == ingest_id);
        owned
            && self.end_session(
                session_id,
                EndReason::PublisherDelete,
                "publisher sent DELETE",
            )
    }

    /// Whether `session_id` is the live session of `ingest_id`.
    pub fn session_is_live(&self, ingest_id: &str, session_id: Uuid) -> bool {
        self.lock()
            .sessions
            .get(&session_id)
            .is_some_and(|i| i == ingest_id)
    }

    /// Closes an ingest's live publisher; the registration stays.
    pub fn teardown(&self, ingest_id: &str, detail: &str) -> Result<bool, Error> {
        let cancel = {
            let mut state = self.lock();
            if !state.ingests.contains_key(ingest_id) {
                return Err(Error::IngestNotFound(ingest_id.to_owned()));
            }
            let detail = if detail.is_empty() {
                "teardown requested"
            } else {
                detail
            };
            self.end_locked(&mut state, ingest_id, EndReason::Teardown, detail)
        };
        let closed = cancel.is_some();
        if let Some(token) = cancel {
            token.cancel();
        }
        Ok(closed)
    }

    /// Asks an ingest's live publisher for a keyframe.
    pub fn request_keyframe(&self, ingest_id: &str) -> Result<(), Error> {
        let commands = {
            let state = self.lock();
            let entry = state
                .ingests
                .get(ingest_id)
                .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
            entry
                .session
                .as_ref()
                .map(|s| s.commands.clone())
                .ok_or(Error::SessionNotFound)?
        };
        // Full queue: keyframe requests are already pending, which is as good.
        let _ = commands.try_send(SessionCommand::RequestKeyframe);
        Ok(())
    }

    /// Chooses the simulcast layer of an ingest, for its live session (if any) and later ones.
    /// Returns whether a live session was told.
    pub fn select_layer(&self, ingest_id: &str, rid: Option<String>) -> Result<bool, Error> {
        let commands = {
            let mut state = self.lock();
            let entry = state
                .ingests
                .get_mut(ingest_id)
                .ok_or_else(|| Error::IngestNotFound(ingest_id.to_owned()))?;
            entry.layer_override = Some(rid.clone());
            entry.session.as_ref().map(|s| s.commands.clone())
        };
        Ok(commands.is_some_and(|c| c.try_send(SessionCommand::SelectLayer(rid)).is_ok()))
    }

    /// Records a session's simulcast layers and the one it forwards.
    pub fn simulcast_state(&self, session_id: Uuid, layers: &[String], forwarded: Option<&str>) {
        if let Some((_, session)) = self.lock().session_mut(session_id) {
            session.simulcast_layers = layers.to_vec();
            session.forwarded_layer = forwarded.map(str::to_owned);
        }
    }

    /// Subscribes to events from `from_seq` (0: live only).
    pub fn subscribe(&self, from_seq: u64) -> Result<Subscription, Error> {
        self.lock()
            .events
            .subscribe(from_seq)
            .map_err(|err| match err {
                SubscribeError::Gone { oldest } => Error::OutOfRange(format!(
                    "from_seq {from_seq} is older than the event history (oldest held: {oldest})"
                )),
                SubscribeError::Future { newest } => Error::OutOfRange(format!(
                    "from_seq {from_seq} is beyond the newest event ({newest})"
                )),
            })
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

    /// Removes the live session of `ingest_id` and emits its end; returns its token to cancel
    /// once the lock is released.
    fn end_locked(
        &self,
        state: &mut State,
        ingest_id: &str,
        reason: EndReason,
        detail: &str,
    ) -> Option<CancellationToken> {
        let session = state.ingests.get_mut(ingest_id)?.session.take()?;
        state.sessions.remove(&session.id);
        let metrics = &self.inner.metrics;
        metrics.live_publishers.set(state.sessions.len() as i64);
        if !session.announced {
            return Some(session.cancel);
        }
        metrics
            .sessions_ended
            .with_label_values(&[reason.as_str()])
            .inc();
        if session.state == SessionState::Connecting {
            let result = match reason {
                EndReason::IceFailure => "failed",
                EndReason::Inactivity => "timeout",
                // Ended from outside (DELETE, teardown, shutdown...) before connecting.
                _ => "aborted",
            };
            metrics
                .ice_connect(result)
                .observe(session.started.elapsed().as_secs_f64());
        }
        self.emit(
            state,
            ingest_id,
            Some(session.id),
            EventPayload::SessionEnded {
                reason,
                detail: detail.to_owned(),
                duration: session.started.elapsed(),
                counters: session.counters.snapshot(),
            },
        );
        Some(session.cancel)
    }
}

fn check_token(spec: &IngestSpec, bearer: Option<&str>) -> Result<(), Error> {
    use subtle::ConstantTimeEq;
    match (&spec.bearer_token, bearer) {
        (None, _) => Ok(()),
        (Some(expected), Some(given))
            if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(Error::Unauthorized),
    }
}

fn view_of(entry: &IngestEntry) -> IngestView {
    let mut spec = entry.spec.clone();
    spec.limits = entry.limits();
    spec.simulcast_layer = entry.simulcast_layer();
    let has_bearer_token = spec.bearer_token.take().is_some();
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
        }),
    }
}

/// How long a session has left under its ingest's duration cap.
pub fn remaining(limits: Limits, lived: Duration) -> Option<Duration> {
    limits.max_session.map(|max| max.saturating_sub(lived))
}

#[cfg(test)]
mod tests;
