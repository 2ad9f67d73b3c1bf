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
use crate::codec::{MediaKind, OfferPlan, VideoCodec};
use crate::continuity::{Continuity, InputPacket, OutputStream};
use crate::metrics::{KindCounters, Metrics};
use crate::registry::Admission;

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

/// Whether a video RTP payload starts a keyframe.
pub(crate) fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_starts_idr(payload),
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::Av1 => av1_starts_sequence(payload),
        VideoCodec::H265 => h265_starts_irap(payload),
    }
}

/// VP9 (RFC 9628): beginning of a frame (B) that is not inter-predicted (P clear).
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|d| d & 0x08 != 0 && d & 0x40 == 0)
}

/// AV1 (RTP payload format for AV1, section 4.4): N marks the first packet of a coded video
/// sequence, which starts with a keyframe.
fn av1_starts_sequence(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|aggregation| aggregation & 0x08 != 0)
}

/// H.265 (RFC 7798): an IRAP NAL unit (types 16 to 21) alone, in an aggregation packet, or the
/// start fragment of one.
fn h265_starts_irap(payload: &[u8]) -> bool {
    let irap = |nal_type: u8| (16..=21).contains(&nal_type);
    let Some(&first) = payload.first() else {
        return false;
    };
    match (first >> 1) & 0x3f {
        48 => {
            let mut rest = payload.get(2..).unwrap_or(&[]);
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|nal| irap((nal >> 1) & 0x3f)) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        49 => payload
            .get(2)
            .is_some_and(|fu| fu & 0x80 != 0 && irap(fu & 0x3f)),
        t => irap(t),
    }
}

fn h264_starts_idr(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        IDR => true,
        // STAP-A: 2-byte sizes, each followed by a NAL unit.
        24 => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|nal| nal & 0x1f == IDR) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        // FU-A: the start fragment of an IDR.
        28 => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&desc) = payload.first() else {
        return false;
    };
    let start_of_partition = desc & 0x10 != 0 && desc & 0x07 == 0;
    if !start_of_partition {
        return false;
    }
    let mut offset = 1;
    if desc & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        offset += 1;
        if ext & 0x80 != 0 {
            // Picture ID: 7 or 15 bits.
            let long = payload.get(offset).is_some_and(|b| b & 0x80 != 0);
            offset += if long { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1;
        }
        if ext & 0x30 != 0 {
            offset += 1;
        }
    }
    // VP8 payload header: P bit 0 means keyframe.
    payload.get(offset).is_some_and(|b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_idr_is_found_alone_in_stap_a_and_in_fu_a_start() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A with SPS (2 bytes) then IDR.
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x65, 0x88]
        ));
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x88]));
    }

    #[test]
    fn vp9_av1_and_h265_keyframes_are_recognised() {
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        assert!(
            !starts_keyframe(VideoCodec::Vp9, &[0x48]),
            "inter-predicted"
        );
        assert!(starts_keyframe(VideoCodec::Av1, &[0x18]));
        assert!(!starts_keyframe(VideoCodec::Av1, &[0x10]));
        // IDR_W_RADL (19) alone, a TRAIL_R (1), an FU start of CRA (21).
        assert!(starts_keyframe(VideoCodec::H265, &[19 << 1, 1, 0xaa]));
        assert!(!starts_keyframe(VideoCodec::H265, &[1 << 1, 1, 0xaa]));
        assert!(starts_keyframe(
            VideoCodec::H265,
            &[49 << 1, 1, 0x80 | 21, 0xaa]
        ));
        // Aggregation packet: VPS (32, 2 bytes) then IDR_N_LP (20).
        assert!(starts_keyframe(
            VideoCodec::H265,
            &[48 << 1, 1, 0, 2, 32 << 1, 1, 0, 2, 20 << 1, 1]
        ));
    }

    #[test]
    fn vp8_keyframe_bit_is_read_after_the_descriptor() {
        // S=1, PID=0, no extension, P=0.
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        // X=1 with a 15-bit picture id.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        // Not a partition start.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
    }
}
