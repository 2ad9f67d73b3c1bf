//! RTP -> UDP: rewrite the payload type to the consumer SDP's and send, without re-encoding
//! and without per-packet allocation (packets are marshalled into the worker's send batch).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::rtcp::sender_report::SenderReport;
use uuid::Uuid;

use rtc::rtp;
use rtc::shared::marshal::{Marshal, MarshalSize};
use tokio::net::UdpSocket;

use super::batch::ForwardBatch;
use crate::metrics::{KindCounters, Metrics};
use crate::registry::Admission;
use whipgate_media::codec::{MediaKind, OfferPlan};
use whipgate_media::continuity::{Continuity, InputPacket, OutputStream};

/// Sockets used to send forwarded media (one per address family), with their UDP GSO state
/// where the kernel offers segmentation offload.
#[derive(Clone)]
pub(crate) struct ForwardSockets {
    pub(crate) v4: Arc<UdpSocket>,
    pub(crate) v6: Option<Arc<UdpSocket>>,
    pub(crate) gso4: Option<Arc<quinn_udp::UdpSocketState>>,
    pub(crate) gso6: Option<Arc<quinn_udp::UdpSocketState>>,
}

impl ForwardSockets {
    pub(crate) async fn bind() -> std::io::Result<Self> {
        let v4 = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
        let v6 = UdpSocket::bind(SocketAddr::from(([0u16; 8], 0))).await.ok();
        Ok(Self::new(v4, v6))
    }

    /// Wraps bound sockets.
    pub(crate) fn new(v4: UdpSocket, v6: Option<UdpSocket>) -> Self {
        let gso = |socket: &UdpSocket| {
            quinn_udp::UdpSocketState::new(socket.into())
                .ok()
                .filter(|state| state.max_gso_segments() > 1)
                .map(Arc::new)
        };
        ForwardSockets {
            gso4: gso(&v4),
            gso6: v6.as_ref().and_then(gso),
            v4: Arc::new(v4),
            v6: v6.map(Arc::new),
        }
    }

    fn for_addr(&self, addr: SocketAddr) -> Option<&Arc<UdpSocket>> {
        if addr.is_ipv4() {
            Some(&self.v4)
        } else {
            self.v6.as_ref()
        }
    }
}

struct Target {
    addr: SocketAddr,
    payload_type: u8,
    clock_rate: u32,
    counters: KindCounters,
}

/// Forwards one session's packets to its ingest's targets.
pub(crate) struct Forwarder {
    session: Uuid,
    continuity: Arc<Mutex<Continuity>>,
    sockets: ForwardSockets,
    video: Option<Target>,
    audio: Option<Target>,
    video_received: KindCounters,
    audio_received: KindCounters,
}

impl Forwarder {
    pub(crate) fn new(
        sockets: ForwardSockets,
        admission: &Admission,
        plan: &OfferPlan,
        metrics: &Metrics,
    ) -> Self {
        let video_counters = metrics.kind(MediaKind::Video);
        let audio_counters = metrics.kind(MediaKind::Audio);
        Forwarder {
            video: admission
                .spec
                .video_target
                .zip(plan.video.as_ref())
                .map(|(addr, chosen)| Target {
                    addr,
                    payload_type: chosen.codec.consumer_payload_type(),
                    clock_rate: chosen.clock_rate,
                    counters: video_counters.clone(),
                }),
            audio: admission
                .spec
                .audio_target
                .zip(plan.audio.as_ref())
                .map(|(addr, chosen)| Target {
                    addr,
                    payload_type: chosen.codec.consumer_payload_type(),
                    clock_rate: chosen.clock_rate,
                    counters: audio_counters.clone(),
                }),
            session: admission.session_id,
            continuity: Arc::clone(&admission.continuity),
            video_received: video_counters,
            audio_received: audio_counters,
            sockets,
        }
    }

    /// The target of a kind, if the ingest forwards that kind.
    fn target(&self, kind: MediaKind) -> Option<&Target> {
        target_of(&self.video, &self.audio, kind)
    }

    /// Records a packet that is not forwarded (padding only) and arrived at `now`, so the
    /// output has no gap.
    pub(crate) fn skip(&mut self, kind: MediaKind, packet: &rtp::Packet, now: Instant) {
        if let Some(clock_rate) = self.target(kind).map(|t| t.clock_rate) {
            let input = self.input_of(packet, clock_rate);
            self.with_stream(kind, |stream| stream.skip(input, now));
        }
    }

    fn input_of(&self, packet: &rtp::Packet, clock_rate: u32) -> InputPacket {
        InputPacket {
            session: self.session,
            ssrc: packet.header.ssrc,
            seq: packet.header.sequence_number,
            ts: packet.header.timestamp,
            clock_rate,
        }
    }

    /// Runs `f` on a kind's output stream, under the ingest's continuity lock.
    fn with_stream<T>(&self, kind: MediaKind, f: impl FnOnce(&mut OutputStream) -> T) -> T {
        let mut continuity = self.continuity.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            MediaKind::Video => f(&mut continuity.video),
            MediaKind::Audio => f(&mut continuity.audio),
        }
    }

    /// Counts a received packet (forwarded or not).
    pub(crate) fn count_received(&self, kind: MediaKind, size: usize) {
        let received = match kind {
            MediaKind::Video => &self.video_received,
            MediaKind::Audio => &self.audio_received,
        };
        received.packets_received.inc();
        received.bytes_received.inc_by(size as u64);
    }

    /// Queues a packet that arrived at `now` for its kind's target in `batch` (sent when the
    /// batch is flushed); returns whether it was queued.
    pub(crate) fn forward(
        &mut self,
        kind: MediaKind,
        packet: &mut rtp::Packet,
        batch: &mut ForwardBatch,
        now: Instant,
    ) -> bool {
        let Some(target) = self.target(kind) else {
            return false;
        };
        let (addr, payload_type) = (target.addr, target.payload_type);
        let input = self.input_of(packet, target.clock_rate);
        let mapped = self.with_stream(kind, |stream| stream.map(input, now));
        packet.header.payload_type = payload_type;
        packet.header.ssrc = mapped.ssrc;
        packet.header.sequence_number = mapped.seq;
        packet.header.timestamp = mapped.ts;
        let queued = batch.push(addr, kind, packet.marshal_size(), |buf| {
            packet
                .marshal_to(buf)
                .map_err(|err| tracing::debug!(%err, "marshalling RTP"))
                .ok()
        });
        let Some(target) = self.target(kind) else {
            return false;
        };
        match queued {
            Some(n) => {
                target.counters.packets_forwarded.inc();
                target.counters.bytes_forwarded.inc_by(n as u64);
                true
            }
            None => {
                target.counters.forward_errors.inc();
                false
            }
        }
    }
}

impl Forwarder {
    /// Sends a Sender Report, mapped to the output stream, to the RTCP port of a kind's target
    /// (RTP port + 1).
    pub(crate) fn forward_rtcp(&mut self, kind: MediaKind, report: &SenderReport) {
        let Some(clock_rate) = self.target(kind).map(|target| target.clock_rate) else {
            return;
        };
        let session = self.session;
        let mapped = self.with_stream(kind, |stream| {
            stream.map_report(
                session,
                report.ssrc,
                report.rtp_time,
                report.ntp_time,
                clock_rate,
            )
        });
        let Some((ssrc, rtp_time, ntp_time)) = mapped else {
            return;
        };
        let report = SenderReport {
            ssrc,
            rtp_time,
            ntp_time,
            ..report.clone()
        };
        match report.marshal() {
            Ok(bytes) => self.send_rtcp(kind, &bytes),
            Err(err) => tracing::debug!(%err, "marshalling RTCP"),
        }
    }

    /// Sends an RTCP packet to the RTCP port of a kind's target (RTP port + 1).
    pub(crate) fn send_rtcp(&self, kind: MediaKind, bytes: &[u8]) {
        let Some(target) = self.target(kind) else {
            return;
        };
        let Some(port) = target.addr.port().checked_add(1) else {
            return;
        };
        let addr = SocketAddr::new(target.addr.ip(), port);
        if let Some(socket) = self.sockets.for_addr(addr) {
            let _ = socket.try_send_to(bytes, addr);
        }
    }
}

/// The one place that maps a media kind to its target.
fn target_of<'a>(
    video: &'a Option<Target>,
    audio: &'a Option<Target>,
    kind: MediaKind,
) -> Option<&'a Target> {
    match kind {
        MediaKind::Video => video.as_ref(),
        MediaKind::Audio => audio.as_ref(),
    }
}
