//! Admission of publishers: checks, the atomic one-publisher-per-stream decision, and the
//! publish-accepted / publish-rejected events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    EndReason, EventPayload, IngestSpec, Registry, RegistryError, RejectReason, SessionCommand,
    SessionCounters, SessionEntry, SessionState, State,
};
use crate::error::Error;
use whipgate_media::continuity::Continuity;

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
    /// The registry, for the session task's updates.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// What an admission call decided.
pub enum Admitted<P> {
    /// The ingest is served by another node: answer 307 with this Location.
    Redirect(String),
    /// A session slot is reserved; `P` is what the edge's planner made of the offer.
    Session(Box<Admission>, P),
}

impl Registry {
    /// Checks the bearer token of a request on a session URL (PATCH, DELETE): an ingest with a
    /// token wants it there too. An unknown ingest passes (DELETE stays idempotent; PATCH then
    /// answers 404).
    pub fn authorize_session(
        &self,
        ingest_id: &str,
        bearer: Option<&str>,
    ) -> Result<(), RegistryError> {
        match self.lock().ingests.get(ingest_id) {
            Some(entry) => check_token(entry.token.as_ref(), bearer),
            None => Ok(()),
        }
    }

    /// The POST's credential check against this node's copy of the registration, before
    /// anything costs more than a map lookup (no store or Redis read, no write lock): an
    /// unknown ingest is `IngestNotFound`, a missing or wrong token `Unauthorized`. Not
    /// recorded: the edge records what it refuses.
    pub fn authenticate_publish(
        &self,
        ingest_id: &str,
        bearer: Option<&str>,
    ) -> Result<(), RegistryError> {
        match self.lock().ingests.get(ingest_id) {
            Some(entry) => check_token(entry.token.as_ref(), bearer),
            None => Err(RegistryError::IngestNotFound(ingest_id.to_owned())),
        }
    }

    /// Whether `bearer` is the token of `ingest_id`, an ingest registered with one, while this
    /// node is below its publisher cap: a publisher the per-address rate limit should not
    /// hold back (a studio's encoders share one public address).
    pub fn vouches_for(&self, ingest_id: &str, bearer: &str) -> bool {
        let state = self.lock();
        state.sessions.len() < state.caps.max_publishers && token_matches(&state, ingest_id, bearer)
    }

    /// Whether `ingest_id` is registered here without a static token (with signed-token keys
    /// configured, a signed token opens it).
    pub fn is_open(&self, ingest_id: &str) -> bool {
        (self.lock().ingests.get(ingest_id)).is_some_and(|entry| entry.token.is_none())
    }

    /// Whether `ingest_id` is registered here.
    pub fn contains(&self, ingest_id: &str) -> bool {
        self.lock().ingests.contains_key(ingest_id)
    }

    /// Whether `bearer` is the token of the token-protected ingest `ingest_id` (a session's
    /// PATCH and DELETE: its publisher, at any load).
    pub fn token_matches(&self, ingest_id: &str, bearer: &str) -> bool {
        token_matches(&self.lock(), ingest_id, bearer)
    }

    /// Admits a publisher in one critical section: draining, lookup, redirect, token, the
    /// offer plan, one publisher per stream and the global cap are each checked once, and the
    /// slot is reserved in the same step, so two racing publishes can never both win.
    ///
    /// `plan` is the edge's pure offer check against the ingest's spec (codec matching on an
    /// SDP bounded by `max_sdp_bytes`: microseconds); its error's text is the publisher's 400.
    /// A refusal is recorded (publish-rejected event, metric) with its reason derived here.
    /// The slot is reserved silently; [`Registry::publish_accepted`] announces it once the
    /// answer exists, so a failed negotiation shows up as one publish-rejected event only.
    pub fn admit<P>(
        &self,
        ingest_id: &str,
        bearer: Option<&str>,
        plan: impl FnOnce(&IngestSpec) -> Result<P, Error>,
    ) -> Result<Admitted<P>, RegistryError> {
        self.admit_with(ingest_id, Some(bearer), plan)
    }

    /// [`Registry::admit`] for a POST another node of the cluster authenticated and routed
    /// here (cluster mode): no token to check.
    pub fn admit_vouched<P>(
        &self,
        ingest_id: &str,
        plan: impl FnOnce(&IngestSpec) -> Result<P, Error>,
    ) -> Result<Admitted<P>, RegistryError> {
        self.admit_with(ingest_id, None, plan)
    }

    /// `bearer`: `None` when vouched for.
    fn admit_with<P>(
        &self,
        ingest_id: &str,
        bearer: Option<Option<&str>>,
        plan: impl FnOnce(&IngestSpec) -> Result<P, Error>,
    ) -> Result<Admitted<P>, RegistryError> {
        match self.admit_locked(ingest_id, bearer, plan) {
            Ok((admitted, replaced)) => {
                if let Some(token) = replaced {
                    token.cancel();
                }
                Ok(admitted)
            }
            Err(err) => {
                self.publish_rejected(ingest_id, err.reject_reason(), &err.to_string());
                Err(err)
            }
        }
    }

    /// [`Registry::admit`] under the lock; also returns the token of a replaced session, to
    /// cancel once the lock is released.
    fn admit_locked<P>(
        &self,
        ingest_id: &str,
        bearer: Option<Option<&str>>,
        plan: impl FnOnce(&IngestSpec) -> Result<P, Error>,
    ) -> Result<(Admitted<P>, Option<CancellationToken>), RegistryError> {
        let mut state = self.lock();
        if state.draining {
            return Err(RegistryError::Draining);
        }
        let live = state.sessions.len();
        let max = state.caps.max_publishers;
        let entry = state
            .ingests
            .get_mut(ingest_id)
            .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))?;
        // The token first: an ingest's redirect URL is not shown to whoever guesses its id.
        if let Some(bearer) = bearer {
            check_token(entry.token.as_ref(), bearer)?;
        }
        if let Some(url) = &entry.spec.redirect_url {
            // Another node serves this ingest; the publisher re-POSTs there.
            return Ok((Admitted::Redirect(url.clone()), None));
        }
        let mut spec = entry.spec.clone();
        spec.simulcast_layer = entry.simulcast_layer();
        let planned = plan(&spec).map_err(|err| RegistryError::BadOffer(Box::new(err)))?;
        if entry.session.is_some() && !spec.replace_publisher {
            return Err(RegistryError::PublisherConflict(ingest_id.to_owned()));
        }
        // A replaced publisher frees its own slot.
        let replacing = usize::from(entry.session.is_some());
        if live - replacing >= max {
            return Err(RegistryError::CapReached(live));
        }
        let continuity = Arc::clone(&entry.continuity);
        let replaced = self.end_locked(
            &mut state,
            ingest_id,
            EndReason::Replaced,
            "a new publisher took over",
        );
        let Some(entry) = state.ingests.get_mut(ingest_id) else {
            return Err(RegistryError::IngestNotFound(ingest_id.to_owned()));
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
            facts: Default::default(),
            timings: Default::default(),
        });
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
        Ok((Admitted::Session(Box::new(admission), planned), replaced))
    }

    /// Announces an admitted session whose answer is ready (publish-accepted event). Returns
    /// false, announcing nothing, when the session already ended (replaced, torn down or
    /// unregistered during its negotiation): its publisher must not get a 201.
    #[must_use]
    pub fn publish_accepted(
        &self,
        session_id: Uuid,
        http_peer: Option<SocketAddr>,
        etag: &str,
    ) -> bool {
        let mut state = self.lock();
        let Some((ingest_id, session)) = state.session_mut(session_id) else {
            return false;
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
        true
    }

    /// Records a refused publish: always the metric (bounded labels), and an event only for a
    /// registered ingest, so anonymous POSTs to made-up ids cannot flood the event history;
    /// at most one event per ingest per [`REJECTION_INTERVAL`], whose `count` says how many
    /// refusals it stands for, so a few addresses hammering a known ingest cannot push real
    /// events out of the history either. Admission records its own refusals; the edge calls
    /// this for what it refuses itself (content type, negotiation failures).
    pub fn publish_rejected(&self, ingest_id: &str, reason: RejectReason, detail: &str) {
        self.inner
            .metrics
            .publish_rejections
            .with_label_values(&[reason.as_str()])
            .inc();
        let mut state = self.lock();
        let Some(entry) = state.ingests.get_mut(ingest_id) else {
            return;
        };
        let Some(count) = entry.rejections.record(Instant::now()) else {
            return;
        };
        self.emit(
            &mut state,
            ingest_id,
            None,
            EventPayload::PublishRejected {
                reason,
                detail: crate::net::untrusted::bounded(detail),
                count,
            },
        );
    }
}

/// Publish-rejected events are at most one per ingest per this interval.
pub(crate) const REJECTION_INTERVAL: Duration = Duration::from_secs(10);

/// An ingest's refusals since its last publish-rejected event.
#[derive(Debug, Default)]
pub(super) struct Rejections {
    last_event: Option<Instant>,
    unreported: u32,
}

impl Rejections {
    /// Counts a refusal at `now`; `Some(count)` when it is to be reported (the first, or the
    /// first after the interval), with the refusals it stands for.
    pub(super) fn record(&mut self, now: Instant) -> Option<u32> {
        self.unreported = self.unreported.saturating_add(1);
        let due = self
            .last_event
            .is_none_or(|at| now.saturating_duration_since(at) >= REJECTION_INTERVAL);
        if !due {
            return None;
        }
        self.last_event = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// Checks a publisher's bearer token against the ingest's stored hash (constant time).
pub(super) fn check_token(
    expected: Option<&crate::secret::TokenHash>,
    bearer: Option<&str>,
) -> Result<(), RegistryError> {
    match (expected, bearer) {
        (None, _) => Ok(()),
        (Some(expected), Some(given)) if expected.matches(given) => Ok(()),
        _ => Err(RegistryError::Unauthorized),
    }
}

fn token_matches(state: &State, ingest_id: &str, bearer: &str) -> bool {
    state
        .ingests
        .get(ingest_id)
        .and_then(|entry| entry.token.as_ref())
        .is_some_and(|token| token.matches(bearer))
}

#[cfg(test)]
mod tests;
