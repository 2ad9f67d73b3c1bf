//! Session events: what happened, in order, with a gap-free sequence number.
//!
//! Events are created by the registry inside the critical section that makes the change, so
//! their order is the order things happened. A bounded history lets a watcher resume from a
//! sequence number; the live tail comes from a `broadcast` channel subscribed under the same
//! lock, so nothing falls between the replay and the live stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use uuid::Uuid;

use super::model::{Caps, CountersSnapshot, IngestView, Limits};
use crate::store::EventClock;
use whipgate_media::codec::MediaKind;
use whipgate_media::facts::{StreamFacts, StreamWarning};

/// When fewer sequence numbers than this are left in the reservation, the next block is asked
/// for (see `durable`).
pub(crate) const SEQ_LOW_WATER: u64 = 500;
/// Sequence numbers reserved at a time.
pub(crate) const SEQ_BLOCK_SIZE: u64 = 1000;

/// Why a publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Global publisher cap.
    Cap,
    /// The ingest already has a publisher.
    Conflict,
    /// Bad or missing bearer token.
    Auth,
    /// No such ingest.
    NotFound,
    /// Offer unusable.
    BadSdp,
    /// Gateway shutting down.
    Draining,
    /// Failure inside the gateway (including answer timeouts).
    Internal,
}

impl RejectReason {
    /// Lower-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Cap => "cap",
            RejectReason::Conflict => "conflict",
            RejectReason::Auth => "auth",
            RejectReason::NotFound => "not_found",
            RejectReason::BadSdp => "bad_sdp",
            RejectReason::Draining => "draining",
            RejectReason::Internal => "internal",
        }
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The publisher sent DELETE.
    PublisherDelete,
    /// ICE failed or disconnected for good (consent lost).
    IceFailure,
    /// No media for the configured timeout (or never connected).
    Inactivity,
    /// `TeardownStream` on the control plane.
    Teardown,
    /// The ingest was unregistered.
    Unregister,
    /// The gateway shut down.
    Shutdown,
    /// Above the ingest's bitrate cap.
    BitrateCap,
    /// Longer than the ingest's duration cap.
    DurationCap,
    /// The ingest was replaced with different media parameters.
    Replaced,
    /// Negotiation or internal failure.
    Error,
    /// The publisher said goodbye in-band: an RTCP BYE for every stream it was sending (a
    /// browser closing its peer connection or tab, a tool stopping), so the session ends
    /// at once instead of by the media timeout.
    PublisherClose,
}

impl EndReason {
    /// Lower-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::PublisherDelete => "publisher_delete",
            EndReason::IceFailure => "ice_failure",
            EndReason::Inactivity => "inactivity",
            EndReason::Teardown => "teardown",
            EndReason::Unregister => "unregister",
            EndReason::Shutdown => "shutdown",
            EndReason::BitrateCap => "bitrate_cap",
            EndReason::DurationCap => "duration_cap",
            EndReason::Replaced => "replaced",
            EndReason::Error => "error",
            EndReason::PublisherClose => "publisher_close",
        }
    }
}

/// What an event says.
#[derive(Clone, Debug, PartialEq)]
pub enum EventPayload {
    /// A new ingest.
    IngestRegistered(Box<IngestView>),
    /// An ingest replaced with new parameters.
    IngestUpdated(Box<IngestView>),
    /// An ingest removed.
    IngestUnregistered,
    /// A publish was admitted (answer about to be sent).
    PublishAccepted {
        /// HTTP peer of the POST.
        remote_addr: Option<SocketAddr>,
    },
    /// A publish was refused.
    PublishRejected {
        /// Category.
        reason: RejectReason,
        /// The message the publisher got.
        detail: String,
        /// Refusals this event stands for: this one and those since the previous event.
        count: u32,
    },
    /// ICE and DTLS are up.
    SessionConnected {
        /// Media address of the publisher.
        remote_addr: Option<SocketAddr>,
        /// From admission to connected.
        connect_time: Duration,
    },
    /// First packet of a track.
    TrackStarted {
        /// Audio or video.
        kind: MediaKind,
        /// Negotiated codec.
        codec: String,
        /// Publisher SSRC.
        ssrc: u32,
        /// Simulcast layer, if any.
        rid: Option<String>,
        /// SDP for what the session forwards (its negotiated codecs only).
        consumer_sdp: String,
    },
    /// Periodic statistics of a live session.
    SessionStats {
        /// Received bitrate over the last interval.
        bitrate_bps: u64,
        /// Counters so far.
        counters: CountersSnapshot,
        /// Video interarrival jitter.
        video_jitter_ms: f64,
        /// What the media is.
        facts: StreamFacts,
    },
    /// Something about a live stream the operator should fix (B-frames).
    StreamWarning {
        /// The stream concerned.
        kind: MediaKind,
        /// What.
        warning: StreamWarning,
    },
    /// A session is gone.
    SessionEnded {
        /// Why.
        reason: EndReason,
        /// Human-readable detail.
        detail: String,
        /// How long it lived.
        duration: Duration,
        /// Final counters.
        counters: CountersSnapshot,
    },
    /// Caps changed (global, or one ingest's limits).
    CapsChanged {
        /// Global caps after the change.
        caps: Caps,
        /// The ingest's new limits when the change was per-ingest.
        limits: Option<Limits>,
    },
}

impl EventPayload {
    /// Stable kind name (metric label, filter key).
    pub fn kind_name(&self) -> &'static str {
        match self {
            EventPayload::IngestRegistered(_) => "ingest_registered",
            EventPayload::IngestUpdated(_) => "ingest_updated",
            EventPayload::IngestUnregistered => "ingest_unregistered",
            EventPayload::PublishAccepted { .. } => "publish_accepted",
            EventPayload::PublishRejected { .. } => "publish_rejected",
            EventPayload::SessionConnected { .. } => "session_connected",
            EventPayload::TrackStarted { .. } => "track_started",
            EventPayload::SessionStats { .. } => "session_stats",
            EventPayload::StreamWarning { .. } => "stream_warning",
            EventPayload::SessionEnded { .. } => "session_ended",
            EventPayload::CapsChanged { .. } => "caps_changed",
        }
    }
}

/// One registry change.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The gateway run (boot epoch) that emitted it.
    pub epoch: u64,
    /// Without gaps within a run, and increasing across runs on the same data dir (each run
    /// starts above every number an earlier run may have used).
    pub seq: u64,
    /// Wall-clock time of the change.
    pub at: SystemTime,
    /// The ingest concerned; empty for gateway-wide caps changes.
    pub ingest_id: String,
    /// The session concerned, if any.
    pub session_id: Option<Uuid>,
    /// What happened.
    pub payload: EventPayload,
}

/// Sequence numbers, history and the live channel. Lives inside the registry lock.
pub(crate) struct EventLog {
    epoch: u64,
    next_seq: u64,
    /// Sequence numbers up to here are durably reserved for this run.
    reserved_to: u64,
    /// A reservation above `reserved_to` has been asked for and not confirmed yet.
    reserving: bool,
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    live: broadcast::Sender<Arc<Event>>,
}

/// Why a resume point cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// Older than the history holds.
    Gone { oldest: u64 },
    /// Beyond the next event to come.
    Future { newest: u64 },
}

/// What a new watcher gets: the replay and the live receiver, taken atomically.
pub struct Subscription {
    /// Events from the requested sequence number that the history still held.
    pub replay: Vec<Arc<Event>>,
    /// Everything after the replay.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// Sequence number of the first event the live receiver will get (where a live-only
    /// watcher that lags must resume).
    pub next_seq: u64,
}

impl EventLog {
    pub(crate) fn new(capacity: usize, clock: EventClock) -> Self {
        // The live channel is as deep as the history: a watcher that falls further behind
        // than a resume could recover is told it lagged.
        let (live, _) = broadcast::channel(capacity.max(16));
        EventLog {
            epoch: clock.epoch,
            next_seq: clock.first_seq.max(1),
            reserved_to: clock.reserved_to,
            reserving: false,
            history: VecDeque::with_capacity(capacity),
            capacity,
            live,
        }
    }

    /// Appends an event; returns it, and `true` when the sequence-number reservation runs low
    /// and the next block should be reserved.
    pub(crate) fn emit(
        &mut self,
        ingest_id: &str,
        session_id: Option<Uuid>,
        payload: EventPayload,
    ) -> (Arc<Event>, bool) {
        let event = Arc::new(Event {
            epoch: self.epoch,
            seq: self.next_seq,
            at: SystemTime::now(),
            ingest_id: ingest_id.to_owned(),
            session_id,
            payload,
        });
        self.next_seq += 1;
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(Arc::clone(&event));
        // No receiver is fine: nobody is watching.
        let _ = self.live.send(Arc::clone(&event));
        let low = self.reserved_to.saturating_sub(self.next_seq) < SEQ_LOW_WATER;
        if low && !self.reserving {
            self.reserving = true;
            return (event, true);
        }
        (event, false)
    }

    /// This run's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The oldest sequence number a resume can start from.
    pub(crate) fn oldest_seq(&self) -> u64 {
        self.history.front().map_or(self.next_seq, |e| e.seq)
    }

    /// The reservation to make next, if one is due: `Some(new reserved_to)`.
    pub(crate) fn reservation_due(&self) -> Option<u64> {
        self.reserving.then(|| self.next_seq + SEQ_BLOCK_SIZE)
    }

    /// Records a completed reservation.
    pub(crate) fn reserved(&mut self, reserved_to: u64) {
        self.reserved_to = self.reserved_to.max(reserved_to);
        self.reserving = self.reserved_to.saturating_sub(self.next_seq) < SEQ_LOW_WATER;
    }

    /// Last sequence number handed out (0 before the first event).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Replays from `from_seq` (0, or the next sequence number: live only).
    pub(crate) fn subscribe(&self, from_seq: u64) -> Result<Subscription, SubscribeError> {
        let live = self.live.subscribe();
        if from_seq == 0 || from_seq == self.next_seq {
            return Ok(Subscription {
                replay: Vec::new(),
                live,
                next_seq: self.next_seq,
            });
        }
        if from_seq > self.next_seq {
            return Err(SubscribeError::Future {
                newest: self.last_seq(),
            });
        }
        let oldest = self.oldest_seq();
        if from_seq < oldest {
            return Err(SubscribeError::Gone { oldest });
        }
        let skip = usize::try_from(from_seq - oldest).unwrap_or(usize::MAX);
        let replay = self.history.iter().skip(skip).cloned().collect();
        Ok(Subscription {
            replay,
            live,
            next_seq: self.next_seq,
        })
    }
}

#[cfg(test)]
mod tests;
