//! RTP -> UDP targets: the consumer's payload type, and the ingest's one output SSRC and
//! sequence/timestamp space ([`crate::continuity`]), written into the packet's header. The
//! session hands the packet out as [`Output::Forward`](super::Output::Forward); its driver
//! marshals it into a send batch. No re-encoding, no copy of the payload.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp;
use uuid::Uuid;

use crate::codec::{MediaKind, OfferPlan};
use crate::continuity::{Continuity, InputPacket, OutputStream};

/// Where a kind goes and how it is written.
struct Target {
    addr: SocketAddr,
    payload_type: u8,
    clock_rate: u32,
}

/// Maps one session's packets into its ingest's output streams.
pub(crate) struct Forwarder {
    session: Uuid,
    continuity: Arc<Mutex<Continuity>>,
    video: Option<Target>,
    audio: Option<Target>,
}

impl Forwarder {
    /// For the kinds that have a target and were negotiated.
    pub(crate) fn new(
        session: Uuid,
        targets: Targets,
        continuity: Arc<Mutex<Continuity>>,
        plan: &OfferPlan,
    ) -> Self {
        let target = |addr, payload_type, clock_rate| Target {
            addr,
            payload_type,
            clock_rate,
        };
        Forwarder {
            video: (targets.video.zip(plan.video.as_ref()))
                .map(|(addr, c)| target(addr, c.codec.consumer_payload_type(), c.clock_rate)),
            audio: (targets.audio.zip(plan.audio.as_ref()))
                .map(|(addr, c)| target(addr, c.codec.consumer_payload_type(), c.clock_rate)),
            session,
            continuity,
        }
    }

    /// The target of a kind, if the ingest forwards that kind.
    fn target(&self, kind: MediaKind) -> Option<&Target> {
        match kind {
            MediaKind::Video => self.video.as_ref(),
            MediaKind::Audio => self.audio.as_ref(),
        }
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

    /// Rewrites a packet that arrived at `now` into its kind's output stream; returns its
    /// target (`None`: the ingest does not forward that kind).
    pub(crate) fn map(
        &mut self,
        kind: MediaKind,
        packet: &mut rtp::Packet,
        now: Instant,
    ) -> Option<SocketAddr> {
        let target = self.target(kind)?;
        let (addr, payload_type) = (target.addr, target.payload_type);
        let input = self.input_of(packet, target.clock_rate);
        let mapped = self.with_stream(kind, |stream| stream.map(input, now));
        packet.header.payload_type = payload_type;
        packet.header.ssrc = mapped.ssrc;
        packet.header.sequence_number = mapped.seq;
        packet.header.timestamp = mapped.ts;
        Some(addr)
    }

    /// A Sender Report mapped to a kind's output stream, and the RTCP port of its target
    /// (RTP port + 1).
    pub(crate) fn map_report(
        &mut self,
        kind: MediaKind,
        report: &SenderReport,
    ) -> Option<(SocketAddr, SenderReport)> {
        let to = self.rtcp_addr(kind)?;
        let clock_rate = self.target(kind)?.clock_rate;
        let session = self.session;
        let (ssrc, rtp_time, ntp_time) = self.with_stream(kind, |stream| {
            stream.map_report(
                session,
                report.ssrc,
                report.rtp_time,
                report.ntp_time,
                clock_rate,
            )
        })?;
        let report = SenderReport {
            ssrc,
            rtp_time,
            ntp_time,
            ..report.clone()
        };
        Some((to, report))
    }

    /// The RTCP port of a kind's target (RTP port + 1).
    pub(crate) fn rtcp_addr(&self, kind: MediaKind) -> Option<SocketAddr> {
        let target = self.target(kind)?;
        let port = target.addr.port().checked_add(1)?;
        Some(SocketAddr::new(target.addr.ip(), port))
    }
}

/// An ingest's UDP targets, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Where video RTP goes (RTCP: the next port).
    pub video: Option<SocketAddr>,
    /// Where audio RTP goes (RTCP: the next port).
    pub audio: Option<SocketAddr>,
}
