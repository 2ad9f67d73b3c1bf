//! Live sessions: what their tasks report, how they end, and the commands the control plane
//! and the WHIP edge send them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{EndReason, EventPayload, Registry, RegistryError, SessionState, State};
use whipgate_media::codec::{AudioCodec, MediaKind, VideoCodec};
use whipgate_media::facts::{StreamFacts, StreamWarning};

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
        reply: oneshot::Sender<Result<IceRestarted, crate::error::Error>>,
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

impl Registry {
    /// Hands a command to the live session `session_id` of `ingest_id`.
    pub fn command_session(
        &self,
        ingest_id: &str,
        session_id: Uuid,
        command: SessionCommand,
    ) -> Result<(), RegistryError> {
        let commands = {
            let state = self.lock();
            state
                .ingests
                .get(ingest_id)
                .and_then(|e| e.session.as_ref())
                .filter(|s| s.id == session_id && s.announced)
                .map(|s| s.commands.clone())
                .ok_or(RegistryError::SessionNotFound)?
        };
        commands
            .try_send(command)
            .map_err(|_| RegistryError::SessionBusy)
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

    /// Marks a session connected (ICE + DTLS up).
    pub fn session_connected(&self, session_id: Uuid, remote_addr: Option<SocketAddr>) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        session.state = SessionState::Connected;
        session.remote_addr = remote_addr;
        let connect_time = session.started.elapsed();
        session.timings.connect = Some(connect_time);
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

    /// Records the first keyframe forwarded to the consumer, `after` the session connected
    /// (once per session: later calls change nothing).
    pub fn first_keyframe_forwarded(&self, session_id: Uuid, after: Duration) {
        let mut state = self.lock();
        let Some((_, session)) = state.session_mut(session_id) else {
            return;
        };
        if session.timings.first_keyframe.is_none() {
            session.timings.first_keyframe = Some(after);
            self.inner
                .metrics
                .first_keyframe_duration
                .observe(after.as_secs_f64());
        }
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
        let (video, audio) = (session.video_codec.clone(), session.audio_codec.clone());
        let consumer_sdp = state.ingests.get(&ingest_id).map_or_else(String::new, |e| {
            e.spec.negotiated_sdp(video.as_deref(), audio.as_deref())
        });
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::TrackStarted {
                kind,
                codec: codec.to_owned(),
                ssrc,
                rid: rid.map(str::to_owned),
                consumer_sdp,
            },
        );
    }

    /// Records the codecs a session negotiated (before its first packet), so its view and its
    /// track-started events carry the SDP of exactly those.
    pub fn session_negotiated(
        &self,
        session_id: Uuid,
        video: Option<VideoCodec>,
        audio: Option<AudioCodec>,
    ) {
        if let Some((_, session)) = self.lock().session_mut(session_id) {
            session.video_codec = video.map(|c| c.encoding_name().to_owned());
            session.audio_codec = audio.map(|c| c.encoding_name().to_owned());
        }
    }

    /// Emits a periodic stats event for a live session.
    pub fn session_stats(&self, session_id: Uuid, bitrate_bps: u64, video_jitter_ms: f64) {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return;
        };
        let counters = session.counters.snapshot();
        let facts = session.facts;
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::SessionStats {
                bitrate_bps,
                counters,
                video_jitter_ms,
                facts,
            },
        );
    }

    /// Records what a live session's media is: GetIngest shows it, the next stats event
    /// carries it.
    pub fn set_session_facts(&self, session_id: Uuid, facts: StreamFacts) {
        let mut state = self.lock();
        if let Some((_, session)) = state.session_mut(session_id) {
            session.facts = facts;
        }
    }

    /// Emits a warning about a live session's stream (the session sends each kind once).
    pub fn stream_warning(&self, session_id: Uuid, kind: MediaKind, warning: StreamWarning) {
        let mut state = self.lock();
        let Some((ingest_id, _)) = state.session_mut(session_id) else {
            return;
        };
        self.emit(
            &mut state,
            &ingest_id,
            Some(session_id),
            EventPayload::StreamWarning { kind, warning },
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

    /// Closes an ingest's live publisher; the registration stays.
    pub fn teardown(&self, ingest_id: &str, detail: &str) -> Result<bool, RegistryError> {
        let cancel = {
            let mut state = self.lock();
            if !state.ingests.contains_key(ingest_id) {
                return Err(RegistryError::IngestNotFound(ingest_id.to_owned()));
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
    pub fn request_keyframe(&self, ingest_id: &str) -> Result<(), RegistryError> {
        let commands = {
            let state = self.lock();
            let entry = state
                .ingests
                .get(ingest_id)
                .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))?;
            entry
                .session
                .as_ref()
                .map(|s| s.commands.clone())
                .ok_or(RegistryError::SessionNotFound)?
        };
        // Full queue: keyframe requests are already pending, which is as good.
        let _ = commands.try_send(SessionCommand::RequestKeyframe);
        Ok(())
    }

    /// Chooses the simulcast layer of an ingest, for its live session (if any) and later ones.
    /// Returns whether a live session was told.
    pub fn select_layer(
        &self,
        ingest_id: &str,
        rid: Option<String>,
    ) -> Result<bool, RegistryError> {
        let commands = {
            let mut state = self.lock();
            let entry = state
                .ingests
                .get_mut(ingest_id)
                .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))?;
            entry.layer_override = Some(rid.clone());
            let commands = entry.session.as_ref().map(|s| s.commands.clone());
            Self::touch(&mut state, ingest_id, false);
            commands
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

    /// Removes the live session of `ingest_id` and emits its end; returns its token to cancel
    /// once the lock is released.
    pub(super) fn end_locked(
        &self,
        state: &mut State,
        ingest_id: &str,
        reason: EndReason,
        detail: &str,
    ) -> Option<CancellationToken> {
        let session = state.ingests.get_mut(ingest_id)?.session.take()?;
        state.sessions.remove(&session.id);
        // The one line per ended session, whoever ended it (a publisher's DELETE says so).
        tracing::info!(
            session_id = %session.id,
            ingest_id,
            reason = reason.as_str(),
            detail,
            "session ended"
        );
        // Checkpoint the ingest's output streams now: their state is final until the next
        // publisher.
        self.inner.checkpoint_soon.notify_one();
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
