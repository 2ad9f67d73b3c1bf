//! What a session counts for the operator: the gateway implements [`Meter`] over its
//! Prometheus counters, resolved once per session (no label lookup on the packet path);
//! tests count in memory. Per-session counters the registry reads are
//! [`SessionCounters`](super::SessionCounters), updated by the session directly.

use std::time::Duration;

use crate::codec::MediaKind;

/// The counters a session updates as it goes. Label values are `&'static str` from fixed
/// sets: nothing from outside becomes a label here, except the ingest id in
/// [`Meter::ingest_bytes_received`], which the gateway emits only when an operator asked for
/// per-ingest series.
pub trait Meter: Send + Sync {
    /// An RTP packet of `bytes` received (before repair and forwarding).
    fn received(&self, kind: MediaKind, bytes: usize);
    /// DTLS records that came before ICE selected a pair: `"deferred"` or `"dropped"`.
    fn dtls_before_ice(&self, outcome: &'static str, records: u64);
    /// A RED packet that does not parse.
    fn red_malformed(&self);
    /// A packet received twice and dropped.
    fn duplicate_dropped(&self, kind: MediaKind);
    /// A hole filled `by` a retransmission (`"resent"`) or a RED copy (`"red"`), `open` after
    /// it was seen.
    fn hole_filled(&self, kind: MediaKind, by: &'static str, open: Duration);
    /// Holes given up: `what` is `"media"` or `"probe"` (padding).
    fn holes_unrepaired(&self, kind: MediaKind, what: &'static str, packets: u64);
    /// A NACK sent to the publisher.
    fn nack_sent(&self);
    /// A PLI sent to the publisher.
    fn pli_sent(&self);
    /// A PLI sent because a video hole was given up.
    fn repair_pli_sent(&self);
    /// A Sender Report made for a publisher that sends none.
    fn sender_report_synthesized(&self);
    /// Packets lost since the last statistics, as the receiver statistics count them.
    fn packets_lost(&self, packets: u64);
    /// Bytes received for one ingest since the last statistics.
    fn ingest_bytes_received(&self, ingest: &str, kind: MediaKind, bytes: u64);
}
