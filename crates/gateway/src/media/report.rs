//! What a session tells the registry. The session queues reports ([`Session::poll_report`]);
//! its driver applies them to the registry after each round of input, before it sends the
//! datagrams that round produced (so nobody sees the publisher connected before the registry
//! does). The session itself never calls the registry.
//!
//! [`Session::poll_report`]: super::session::Session::poll_report

use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;
use whipgate_media::codec::MediaKind;
use whipgate_media::facts::{StreamFacts, StreamWarning};

use super::session::Session;
use crate::registry::Registry;

/// One change of a live session the registry records (and turns into events).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// ICE and DTLS are done; the publisher's address.
    Connected { remote: Option<SocketAddr> },
    /// A media stream's first packet (per SSRC for video: each simulcast layer).
    TrackStarted {
        kind: MediaKind,
        codec: &'static str,
        ssrc: u32,
        rid: Option<String>,
    },
    /// The simulcast layers offered and the one forwarded now.
    Simulcast {
        layers: Vec<String>,
        forwarded: Option<String>,
    },
    /// The first keyframe reached the consumer, `after` the session connected.
    FirstKeyframe { after: Duration },
    /// Something about the stream a consumer should know (B-frames, ...).
    Warning {
        kind: MediaKind,
        warning: StreamWarning,
    },
    /// Periodic statistics, with the stream facts as they stand.
    Stats {
        facts: StreamFacts,
        bitrate_bps: u64,
        video_jitter_ms: f64,
    },
}

impl Report {
    /// Records the report for `session_id`.
    pub(crate) fn apply(self, registry: &Registry, session_id: Uuid) {
        match self {
            Report::Connected { remote } => registry.session_connected(session_id, remote),
            Report::TrackStarted {
                kind,
                codec,
                ssrc,
                rid,
            } => registry.track_started(session_id, kind, codec, ssrc, rid.as_deref()),
            Report::Simulcast { layers, forwarded } => {
                registry.simulcast_state(session_id, &layers, forwarded.as_deref());
            }
            Report::FirstKeyframe { after } => registry.first_keyframe_forwarded(session_id, after),
            Report::Warning { kind, warning } => {
                registry.metrics().stream_warnings.inc();
                registry.stream_warning(session_id, kind, warning);
            }
            Report::Stats {
                facts,
                bitrate_bps,
                video_jitter_ms,
            } => {
                registry.set_session_facts(session_id, facts);
                registry.session_stats(session_id, bitrate_bps, video_jitter_ms);
            }
        }
    }
}

/// The driver's side of [`Session::poll_report`]: records every queued report in the registry
/// (through the session's admission, which holds the registry handle).
pub(crate) fn apply_all(session: &mut Session) {
    let session_id = session.admission.session_id;
    while let Some(report) = session.poll_report() {
        report.apply(session.admission.guard.registry(), session_id);
    }
}

/// The driver reads the ingest's caps (SetCaps may have changed them) into the session before
/// its housekeeping and statistics.
pub(crate) fn refresh_limits(session: &mut Session) {
    let registry = session.admission.guard.registry();
    session.limits = registry
        .limits(&session.admission.spec.id)
        .unwrap_or_default();
}
