//! Prometheus metrics, in a `prometheus::Registry` owned by the gateway and passed down
//! explicitly (no global registry). Label sets are bounded: the ingest id appears only in the
//! opt-in per-ingest family.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    TextEncoder,
};

use whipgate_media::codec::MediaKind;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: prometheus::Registry,
    /// Per-ingest labels enabled by configuration.
    pub ingest_label: bool,
    /// WHIP requests by route, method and status code.
    pub whip_requests: IntCounterVec,
    /// WHIP request latency by route.
    pub whip_request_duration: HistogramVec,
    /// Refused publishes by reason.
    pub publish_rejections: IntCounterVec,
    /// Signed publish tokens checked, by result (`accepted` or why refused).
    pub signed_tokens: IntCounterVec,
    /// WHIP requests refused by the per-client rate limit.
    pub whip_rate_limited: IntCounter,
    /// HTTP connections open now.
    pub http_connections: IntGauge,
    /// HTTP connections closed by the header-read timeout or a protocol error.
    pub http_connection_errors: IntCounter,
    /// TLS handshakes that failed or timed out, by listener (`http`, `grpc`).
    pub tls_handshake_failures: IntCounterVec,
    /// Connections (and event-stream watchers) refused by a cap, by listener (`http`, `grpc`,
    /// `events`) and reason (`per_client`, `total`).
    pub connections_refused: IntCounterVec,
    /// gRPC connections open now.
    pub grpc_connections: IntGauge,
    /// ICE+DTLS establishment time by result.
    pub ice_connect_duration: HistogramVec,
    /// From connected to the first keyframe forwarded to the consumer.
    pub first_keyframe_duration: Histogram,
    /// How long POSTs waited for a negotiation slot (those that got one).
    pub negotiation_wait: Histogram,
    /// DTLS records that arrived before ICE selected a pair, by outcome: `deferred` (held
    /// and handled once the publisher nominated the pair) or `dropped` (over the per-source
    /// bound, or the session ended first).
    pub dtls_records_before_ice: IntCounterVec,
    /// Live publishers.
    pub live_publishers: IntGauge,
    /// Sessions admitted.
    pub sessions_started: IntCounter,
    /// Sessions ended by reason.
    pub sessions_ended: IntCounterVec,
    /// RTP packets received by kind.
    pub rtp_packets_received: IntCounterVec,
    /// RTP bytes received by kind.
    pub rtp_bytes_received: IntCounterVec,
    /// RTP packets forwarded by kind.
    pub rtp_packets_forwarded: IntCounterVec,
    /// RTP bytes forwarded by kind.
    pub rtp_bytes_forwarded: IntCounterVec,
    /// Forwarding failures (socket errors, full buffers) by kind.
    pub rtp_forward_errors: IntCounterVec,
    /// Packets lost (receiver statistics).
    pub rtp_packets_lost: IntCounter,
    /// NACKs sent to publishers.
    pub nacks_sent: IntCounter,
    /// PLIs sent to publishers.
    pub plis_sent: IntCounter,
    /// Holes in received streams filled later, by kind and by what filled them
    /// (`resent`: the packet itself, late or retransmitted; `red`: a redundant RED copy).
    pub rtp_holes_filled: IntCounterVec,
    /// Holes given up after the repair window, by kind and by what they probably were
    /// (`media`, or `probe`: next to padding-only probes of a publisher without RTX).
    pub rtp_holes_unrepaired: IntCounterVec,
    /// How long filled holes stayed open, by kind.
    pub rtp_hole_duration: HistogramVec,
    /// Packets received twice and dropped, by kind.
    pub rtp_duplicates_dropped: IntCounterVec,
    /// RED payloads that did not parse (dropped).
    pub red_malformed: IntCounter,
    /// PLIs sent because a video hole was given up.
    pub repair_plis_sent: IntCounter,
    /// RTCP Sender Reports the gateway made for publishers that send none.
    pub sender_reports_synthesized: IntCounter,
    /// Stream warnings (B-frames).
    pub stream_warnings: IntCounter,
    /// Media datagrams (UDP) and ICE-TCP frames or connections dropped, by transport and
    /// reason (a fixed set: see `media_drop`).
    pub media_dropped: IntCounterVec,
    /// UDP datagrams received by each media worker (one label value per worker).
    pub media_worker_datagrams: IntCounterVec,
    /// Control RPCs by method and gRPC code.
    pub control_requests: IntCounterVec,
    /// Events emitted by kind.
    pub events: IntCounterVec,
    /// Cluster mode: events dropped because the queue to the cluster event stream was full.
    pub cluster_events_dropped: IntCounter,
    /// Cluster mode: routed calls, answers and records read from Redis that did not
    /// authenticate and were ignored, by kind.
    pub cluster_untrusted: IntCounterVec,
    /// Bytes received per ingest (only when `ingest_label` is on).
    pub ingest_bytes_received: IntCounterVec,
}

/// Per-kind counters resolved once per session, so the packet path does no label lookup.
#[derive(Clone)]
pub struct KindCounters {
    /// Packets received.
    pub packets_received: IntCounter,
    /// Bytes received.
    pub bytes_received: IntCounter,
    /// Packets forwarded.
    pub packets_forwarded: IntCounter,
    /// Bytes forwarded.
    pub bytes_forwarded: IntCounter,
    /// Forwarding failures.
    pub forward_errors: IntCounter,
}

fn counter_vec(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

fn histogram_vec(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(ingest_label: bool) -> prometheus::Result<Self> {
        let r = prometheus::Registry::new();
        let live_publishers = IntGauge::new("whipgate_live_publishers", "Live publishers")?;
        r.register(Box::new(live_publishers.clone()))?;
        let http_connections =
            IntGauge::new("whipgate_http_connections", "HTTP connections open now")?;
        r.register(Box::new(http_connections.clone()))?;
        let latency = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let connect = vec![
            0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
        ];
        Ok(Metrics {
            ingest_label,
            whip_requests: counter_vec(
                &r,
                "whipgate_whip_requests_total",
                "WHIP requests by route, method and status code",
                &["route", "method", "code"],
            )?,
            whip_request_duration: histogram_vec(
                &r,
                "whipgate_whip_request_duration_seconds",
                "WHIP request duration by route",
                &["route"],
                latency.clone(),
            )?,
            whip_rate_limited: counter(
                &r,
                "whipgate_whip_rate_limited_total",
                "WHIP requests refused by the per-client rate limit (429)",
            )?,
            http_connections,
            connections_refused: counter_vec(
                &r,
                "whipgate_connections_refused_total",
                "Connections and event-stream watchers refused by a cap, by listener and reason",
                &["listener", "reason"],
            )?,
            grpc_connections: {
                let g = IntGauge::new("whipgate_grpc_connections", "gRPC connections open now")?;
                r.register(Box::new(g.clone()))?;
                g
            },
            http_connection_errors: counter(
                &r,
                "whipgate_http_connection_errors_total",
                "HTTP connections ended by the header-read timeout or a protocol error",
            )?,
            tls_handshake_failures: counter_vec(
                &r,
                "whipgate_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out, by listener (http, grpc)",
                &["listener"],
            )?,
            publish_rejections: counter_vec(
                &r,
                "whipgate_publish_rejections_total",
                "Refused publishes by reason (cap, conflict, auth, not_found, bad_sdp, draining, internal)",
                &["reason"],
            )?,
            signed_tokens: counter_vec(
                &r,
                "whipgate_signed_tokens_total",
                "Signed publish tokens checked, by result (accepted, malformed, unknown_key, wrong_algorithm, bad_signature, expired, not_yet_valid, wrong_audience, wrong_scope, wrong_subject)",
                &["result"],
            )?,
            ice_connect_duration: histogram_vec(
                &r,
                "whipgate_ice_connect_duration_seconds",
                "Time from admission (POST accepted) to ICE+DTLS connected or given up, by result \
                 (connected, failed, timeout, aborted)",
                &["result"],
                connect.clone(),
            )?,
            first_keyframe_duration: histogram(
                &r,
                "whipgate_first_keyframe_seconds",
                "Time from ICE+DTLS connected to the first keyframe forwarded to the consumer",
                connect,
            )?,
            negotiation_wait: histogram(
                &r,
                "whipgate_negotiation_wait_seconds",
                "Time POSTs waited for a negotiation slot (--max-negotiations), those that got one",
                latency,
            )?,
            dtls_records_before_ice: counter_vec(
                &r,
                "whipgate_dtls_records_before_ice_total",
                "DTLS records from an authenticated address that arrived before ICE selected \
                 the pair, by outcome (deferred: handled at nomination; dropped)",
                &["outcome"],
            )?,
            live_publishers,
            sessions_started: counter(&r, "whipgate_sessions_started_total", "Sessions admitted")?,
            sessions_ended: counter_vec(
                &r,
                "whipgate_sessions_ended_total",
                "Sessions ended by reason",
                &["reason"],
            )?,
            rtp_packets_received: counter_vec(
                &r,
                "whipgate_rtp_packets_received_total",
                "RTP packets received from publishers",
                &["kind"],
            )?,
            rtp_bytes_received: counter_vec(
                &r,
                "whipgate_rtp_bytes_received_total",
                "RTP bytes received from publishers",
                &["kind"],
            )?,
            rtp_packets_forwarded: counter_vec(
                &r,
                "whipgate_rtp_packets_forwarded_total",
                "RTP packets forwarded to UDP targets",
                &["kind"],
            )?,
            rtp_bytes_forwarded: counter_vec(
                &r,
                "whipgate_rtp_bytes_forwarded_total",
                "RTP bytes forwarded to UDP targets",
                &["kind"],
            )?,
            rtp_forward_errors: counter_vec(
                &r,
                "whipgate_rtp_forward_errors_total",
                "RTP packets that could not be forwarded",
                &["kind"],
            )?,
            rtp_packets_lost: counter(
                &r,
                "whipgate_rtp_packets_lost_total",
                "RTP packets lost between publishers and the gateway",
            )?,
            nacks_sent: counter(
                &r,
                "whipgate_rtcp_nacks_sent_total",
                "RTCP NACKs sent to publishers",
            )?,
            plis_sent: counter(
                &r,
                "whipgate_rtcp_plis_sent_total",
                "RTCP PLIs sent to publishers",
            )?,
            rtp_holes_filled: counter_vec(
                &r,
                "whipgate_rtp_holes_filled_total",
                "Holes in received RTP streams filled later (by=resent: the packet itself, late or \
                 retransmitted; by=red: a redundant RED copy)",
                &["kind", "by"],
            )?,
            rtp_holes_unrepaired: counter_vec(
                &r,
                "whipgate_rtp_holes_unrepaired_total",
                "Holes in received RTP streams given up after the repair window (what=media, or \
                 what=probe: next to padding-only probes of a publisher without RTX)",
                &["kind", "what"],
            )?,
            rtp_hole_duration: histogram_vec(
                &r,
                "whipgate_rtp_hole_seconds",
                "How long holes in received RTP streams stayed open before they were filled",
                &["kind"],
                vec![
                    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                ],
            )?,
            rtp_duplicates_dropped: counter_vec(
                &r,
                "whipgate_rtp_duplicates_dropped_total",
                "RTP packets received twice and dropped (repeated retransmissions, RTX probes)",
                &["kind"],
            )?,
            red_malformed: counter(
                &r,
                "whipgate_red_malformed_total",
                "RED (RFC 2198) audio payloads that did not parse and were dropped",
            )?,
            repair_plis_sent: counter(
                &r,
                "whipgate_repair_plis_sent_total",
                "RTCP PLIs sent because a hole in a video stream was given up",
            )?,
            sender_reports_synthesized: counter(
                &r,
                "whipgate_rtcp_sender_reports_synthesized_total",
                "RTCP Sender Reports made by the gateway for publishers that send none",
            )?,
            stream_warnings: counter(
                &r,
                "whipgate_stream_warnings_total",
                "Stream warnings (B-frames) emitted",
            )?,
            media_dropped: counter_vec(
                &r,
                "whipgate_media_dropped_total",
                "Media datagrams, ICE-TCP frames and connections dropped, by transport (udp, tcp) \
                 and reason (unmatched, malformed, unknown_ufrag, unauthenticated, \
                 address_in_use, oversize, connection_limit, setup_busy)",
                &["transport", "reason"],
            )?,
            media_worker_datagrams: counter_vec(
                &r,
                "whipgate_media_worker_datagrams_total",
                "UDP datagrams received by each media worker (one socket of the media port's \
                 SO_REUSEPORT group each; the kernel spreads publishers over them by address)",
                &["worker"],
            )?,
            control_requests: counter_vec(
                &r,
                "whipgate_control_requests_total",
                "Control-plane RPCs by method and gRPC code",
                &["method", "code"],
            )?,
            events: counter_vec(
                &r,
                "whipgate_events_total",
                "Session events emitted by kind",
                &["kind"],
            )?,
            cluster_events_dropped: counter(
                &r,
                "whipgate_cluster_events_dropped_total",
                "Cluster mode: events dropped because the queue to the Redis event stream was full",
            )?,
            cluster_untrusted: counter_vec(
                &r,
                "whipgate_cluster_untrusted_total",
                "Cluster mode: routed calls, answers and records from Redis ignored because they \
                 did not authenticate (or replayed a call), by kind",
                &["kind"],
            )?,
            ingest_bytes_received: counter_vec(
                &r,
                "whipgate_ingest_bytes_received_total",
                "RTP bytes received per ingest (only with metrics_ingest_label)",
                &["ingest", "kind"],
            )?,
            registry: r,
        })
    }

    /// Counters for one media kind.
    pub fn kind(&self, kind: MediaKind) -> KindCounters {
        let k = [kind.as_str()];
        KindCounters {
            packets_received: self.rtp_packets_received.with_label_values(&k),
            bytes_received: self.rtp_bytes_received.with_label_values(&k),
            packets_forwarded: self.rtp_packets_forwarded.with_label_values(&k),
            bytes_forwarded: self.rtp_bytes_forwarded.with_label_values(&k),
            forward_errors: self.rtp_forward_errors.with_label_values(&k),
        }
    }

    /// Counts one dropped media datagram, frame or connection. `transport` and `reason` are
    /// static strings from a fixed set, so the label set stays bounded.
    pub fn media_drop(&self, transport: &'static str, reason: &'static str) {
        self.media_dropped
            .with_label_values(&[transport, reason])
            .inc();
    }

    /// The ICE connect histogram for one result.
    pub fn ice_connect(&self, result: &str) -> Histogram {
        self.ice_connect_duration.with_label_values(&[result])
    }

    /// Exports `whipgate_tasks`: the gateway's tracked tasks (sessions, listeners, helpers),
    /// read from the tracker at each scrape. A soak watches it return to its baseline.
    pub fn register_tasks(&self, tracker: tokio_util::task::TaskTracker) -> prometheus::Result<()> {
        let gauge = IntGauge::new(
            "whipgate_tasks",
            "Tasks the gateway tracks (sessions, listeners, helpers)",
        )?;
        self.registry
            .register(Box::new(TaskGauge { gauge, tracker }))
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(%err, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A gauge read from a `TaskTracker` at scrape time.
struct TaskGauge {
    gauge: IntGauge,
    tracker: tokio_util::task::TaskTracker,
}

impl prometheus::core::Collector for TaskGauge {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge
            .set(i64::try_from(self.tracker.len()).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}
