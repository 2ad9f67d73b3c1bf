//! A session's events recorded in the registry, and its counters on the gateway's Prometheus
//! metrics: the driver's side of the session core's `Output::Event` and `Meter`.

use std::time::Duration;

use prometheus::IntCounter;
use uuid::Uuid;
use whipgate_media::codec::MediaKind;
use whipgate_media::session::{EndCause, Event, Meter};

use crate::metrics::{KindCounters, Metrics};
use crate::registry::{EndReason, Registry};

/// Records one event of session `session_id`.
pub(crate) fn record(registry: &Registry, session_id: Uuid, event: Event) {
    match event {
        Event::Connected { remote } => registry.session_connected(session_id, remote),
        Event::TrackStarted {
            kind,
            codec,
            ssrc,
            rid,
        } => registry.track_started(session_id, kind, codec, ssrc, rid.as_deref()),
        Event::Simulcast { layers, forwarded } => {
            registry.simulcast_state(session_id, &layers, forwarded.as_deref());
        }
        Event::FirstKeyframe { after } => registry.first_keyframe_forwarded(session_id, after),
        Event::Warning { kind, warning } => {
            registry.metrics().stream_warnings.inc();
            registry.stream_warning(session_id, kind, warning);
        }
        Event::Stats {
            facts,
            bitrate_bps,
            video_jitter_ms,
        } => {
            registry.set_session_facts(session_id, facts);
            registry.session_stats(session_id, bitrate_bps, video_jitter_ms);
        }
    }
}

/// Why the registry records a session ended, for a cause from within.
pub(crate) fn end_reason(cause: EndCause) -> EndReason {
    match cause {
        EndCause::IceFailure => EndReason::IceFailure,
        EndCause::Inactivity => EndReason::Inactivity,
        EndCause::PublisherClose => EndReason::PublisherClose,
        EndCause::BitrateCap => EndReason::BitrateCap,
        EndCause::DurationCap => EndReason::DurationCap,
    }
}

/// A session's [`Meter`]: the gateway's counters, with the per-packet ones resolved once.
pub(crate) struct SessionMeter {
    metrics: std::sync::Arc<Metrics>,
    /// Video, audio.
    kinds: [KindCounters; 2],
    nacks: IntCounter,
    plis: IntCounter,
}

impl SessionMeter {
    pub(crate) fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        SessionMeter {
            kinds: [
                metrics.kind(MediaKind::Video),
                metrics.kind(MediaKind::Audio),
            ],
            nacks: metrics.nacks_sent.clone(),
            plis: metrics.plis_sent.clone(),
            metrics,
        }
    }
}

impl Meter for SessionMeter {
    fn received(&self, kind: MediaKind, bytes: usize) {
        let counters = &self.kinds[usize::from(kind == MediaKind::Audio)];
        counters.packets_received.inc();
        counters.bytes_received.inc_by(bytes as u64);
    }

    fn dtls_before_ice(&self, outcome: &'static str, records: u64) {
        self.metrics
            .dtls_records_before_ice
            .with_label_values(&[outcome])
            .inc_by(records);
    }

    fn red_malformed(&self) {
        self.metrics.red_malformed.inc();
    }

    fn duplicate_dropped(&self, kind: MediaKind) {
        self.metrics
            .rtp_duplicates_dropped
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    fn hole_filled(&self, kind: MediaKind, by: &'static str, open: Duration) {
        let k = kind.as_str();
        self.metrics
            .rtp_holes_filled
            .with_label_values(&[k, by])
            .inc();
        self.metrics
            .rtp_hole_duration
            .with_label_values(&[k])
            .observe(open.as_secs_f64());
    }

    fn holes_unrepaired(&self, kind: MediaKind, what: &'static str, packets: u64) {
        self.metrics
            .rtp_holes_unrepaired
            .with_label_values(&[kind.as_str(), what])
            .inc_by(packets);
    }

    fn nack_sent(&self) {
        self.nacks.inc();
    }

    fn pli_sent(&self) {
        self.plis.inc();
    }

    fn repair_pli_sent(&self) {
        self.metrics.repair_plis_sent.inc();
    }

    fn sender_report_synthesized(&self) {
        self.metrics.sender_reports_synthesized.inc();
    }

    fn packets_lost(&self, packets: u64) {
        self.metrics.rtp_packets_lost.inc_by(packets);
    }

    fn ingest_bytes_received(&self, ingest: &str, kind: MediaKind, bytes: u64) {
        if self.metrics.ingest_label {
            self.metrics
                .ingest_bytes_received
                .with_label_values(&[ingest, kind.as_str()])
                .inc_by(bytes);
        }
    }
}
