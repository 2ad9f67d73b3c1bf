//! One publisher's session: its peer connection (webrtc-rs's sans-IO `rtc`), fed the datagrams
//! the mux routes to it; forwards its RTP and reports to the registry. It sends nothing itself:
//! what it has for the publisher waits in [`Session::poll_transmit`] for its driver
//! (`driver::Driver` on a media worker, a setup thread or the control task; `sim::Sim` in tests),
//! which sends it on the media socket or the publisher's ICE-TCP connection. Ends on
//! cancellation (DELETE, teardown, unregister, shutdown), ICE failure, inactivity or a cap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::goodbye::Goodbye;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::batch::ForwardBatch;
use super::early::{self, EarlyRecords};
use super::forward::Forwarder;
use super::mux::Datagram;
use super::observe::Observers;
use super::report::Report;
use super::simulcast::LayerSelector;
use crate::metrics::Metrics;
use crate::registry::{Admission, EndReason, IceRestarted, Limits};
use whipgate_media::codec::{MediaKind, OfferPlan};
use whipgate_media::keyframe::starts_keyframe;
use whipgate_media::repair::{Arrival, Repair};

/// Timing knobs of a session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionTimers {
    pub(crate) media_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) stats_interval: Duration,
}

/// Everything a session task owns.
pub(crate) struct Session {
    pub(crate) admission: Admission,
    pub(crate) plan: OfferPlan,
    pub(crate) peer: RTCPeerConnection,
    /// Datagrams for the publisher, in order, until the driver takes them (`poll_transmit`).
    pub(crate) transmits: VecDeque<TaggedBytesMut>,
    /// Changes for the registry, in order, until the driver takes them (`poll_report`).
    pub(crate) reports: VecDeque<Report>,
    /// The gateway's counters (Prometheus): the session counts, the registry is not asked.
    pub(crate) metrics: Arc<Metrics>,
    /// The ingest's caps as the driver last read them from the registry.
    pub(crate) limits: Limits,
    pub(crate) ice_local: SocketAddr,
    pub(crate) ice_local_tcp: SocketAddr,
    pub(crate) forwarder: Forwarder,
    pub(crate) layers: LayerSelector,
    /// SSRC -> simulcast RID, learnt from the receiver.
    pub(crate) rids: HashMap<u32, String>,
    pub(crate) timers: SessionTimers,
    /// Stream facts and Sender Report synthesis.
    pub(crate) observers: Observers,
    /// Our current ICE ufrag (a new one after each ICE restart).
    pub(crate) ufrag: String,
    /// Loss repair: duplicates, NACKs, holes given up.
    pub(crate) repair: Repair,
}

/// The ICE credentials an ICE restart gave the session: its driver routes the new ufrag.
pub(crate) struct IceCredentials {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
}

/// Mutable bookkeeping of the loop.
pub(crate) struct Progress {
    pub(super) remote: Option<SocketAddr>,
    /// ICE selected a pair (the publisher nominated one): DTLS may flow.
    pub(super) ice_selected: bool,
    /// DTLS records that came before `ice_selected`.
    pub(super) early: EarlyRecords,
    pub(super) connected: bool,
    /// When DTLS connected.
    pub(super) connected_at: Option<Instant>,
    /// A keyframe has been forwarded to the consumer.
    pub(super) keyframe_forwarded: bool,
    /// SSRC and RTP timestamp of the last keyframe counted (a sliced IDR counts once).
    pub(super) last_keyframe: Option<(u32, u32)>,
    pub(super) last_media: Instant,
    /// When the datagram being handled arrived (the session's clock for media).
    pub(super) input_at: Instant,
    pub(super) started: Instant,
    /// SSRC of the forwarded video stream (the current layer with simulcast).
    pub(super) video_ssrc: Option<u32>,
    pub(super) audio_ssrc: Option<u32>,
    /// Every video SSRC seen (track-started fires once per SSRC).
    pub(super) seen_ssrcs: HashSet<u32>,
    pub(super) housekeeping_ticks: u64,
    /// Video and audio bytes received at the last statistics report.
    pub(super) bytes_at_last_stats: (u64, u64),
    /// The publisher's streams it has said RTCP BYE for (only SSRCs it sent: bounded).
    pub(super) goodbyes: HashSet<u32>,
    pub(super) end: Option<(EndReason, String)>,
}

impl Progress {
    /// A session's bookkeeping as it starts at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Progress {
            remote: None,
            ice_selected: false,
            early: EarlyRecords::default(),
            connected: false,
            connected_at: None,
            keyframe_forwarded: false,
            last_keyframe: None,
            last_media: now,
            input_at: now,
            started: now,
            video_ssrc: None,
            audio_ssrc: None,
            seen_ssrcs: HashSet::new(),
            housekeeping_ticks: 0,
            bytes_at_last_stats: (0, 0),
            goodbyes: HashSet::new(),
            end: None,
        }
    }
}

/// How late a timer may run before the session's housekeeping runs it itself (a worker's
/// timer queue was full or its worker is overloaded).
const OVERDUE: Duration = Duration::from_millis(250);

impl Session {
    /// When the peer connection or loss repair next needs `handle_timeout`.
    pub(crate) fn next_timeout(&mut self) -> Option<Instant> {
        match (self.peer.poll_timeout(), self.repair.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs timers that are well overdue (housekeeping's safety net).
    pub(crate) fn run_overdue_timers(&mut self, now: Instant) {
        if self.next_timeout().is_some_and(|t| t + OVERDUE < now) {
            self.handle_timeout(now);
        }
    }

    /// Closes the peer connection and sends what closing produced (DTLS close_notify).
    pub(crate) fn close(&mut self) {
        if let Err(err) = self.peer.close() {
            tracing::debug!(%err, "closing peer connection");
        }
        self.flush();
    }

    /// Runs the peer connection's timers that are due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Err(err) = self.peer.handle_timeout(now) {
            tracing::debug!(%err, "peer timeout handling");
        }
        self.repair.advance(now);
    }

    /// Queues everything the peer connection has for the publisher (`poll_transmit`). STUN
    /// goes first: the answer to the check that selected the pair must reach the
    /// publisher before the DTLS ClientHello it triggered (whipgate is the DTLS client when the
    /// publisher offers `a=setup:passive`, as FFmpeg does), or a publisher still waiting for
    /// that answer discards the ClientHello and the handshake waits for its retransmission.
    fn flush(&mut self) {
        let first = self.transmits.len();
        while let Some(out) = self.peer.poll_write() {
            self.transmits.push_back(out);
        }
        // A stable partition of the new datagrams: STUN (first byte 0 or 1) before the rest.
        let fresh = self.transmits.make_contiguous();
        if let Some(fresh) = fresh.get_mut(first..) {
            fresh.sort_by_key(|out| out.message.first().is_none_or(|b| *b >= 2));
        }
    }

    /// The next datagram for the publisher (its transport names UDP or ICE-TCP), in order.
    pub(crate) fn poll_transmit(&mut self) -> Option<TaggedBytesMut> {
        self.transmits.pop_front()
    }

    /// The next change for the registry, in order.
    pub(crate) fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// Feeds one datagram to the peer connection (`drain` handles what it produced). A DTLS
    /// record that comes before ICE selected a pair is held until it is (`early`).
    pub(crate) fn read(&mut self, d: Datagram, p: &mut Progress) {
        if self.is_stale_check(&d.data) {
            // A check under the ufrag an ICE restart replaced: the mux still routes it (the
            // publisher's address stays bound until it moves over), but the agent would only
            // refuse it, with a warning per check.
            tracing::debug!(from = %d.from, "check with a replaced ICE ufrag");
            return;
        }
        if !p.ice_selected && early::is_dtls(&d.data) {
            let outcome = match p.early.hold(d) {
                Ok(()) => "deferred",
                Err(d) => {
                    tracing::debug!(from = %d.from, "dropping a DTLS record before ICE selection");
                    "dropped"
                }
            };
            self.metrics
                .dtls_records_before_ice
                .with_label_values(&[outcome])
                .inc();
            return;
        }
        self.feed(d, p);
    }

    /// A connectivity check whose USERNAME names a ufrag of ours that is no longer current.
    fn is_stale_check(&self, data: &[u8]) -> bool {
        if data.first().is_none_or(|b| *b >= 2) {
            return false;
        }
        matches!(super::ice_auth::parse(data), Ok(Some(request)) if request.ufrag != self.ufrag)
    }

    fn feed(&mut self, d: Datagram, p: &mut Progress) {
        p.remote = Some(d.from);
        p.input_at = d.at;
        let tagged = TaggedBytesMut {
            now: d.at,
            transport: TransportContext {
                local_addr: if d.tcp {
                    self.ice_local_tcp
                } else {
                    self.ice_local
                },
                peer_addr: d.from,
                ecn: None,
                transport_protocol: if d.tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: d.data,
        };
        if let Err(err) = self.peer.handle_read(tagged) {
            tracing::debug!(%err, from = %d.from, "dropping datagram");
        }
    }

    /// Handles events, queues received media in `batch` and sends queued output; once ICE
    /// selected a pair, feeds the DTLS records held until then. Events come before output:
    /// the session is recorded connected before the DTLS flight that completes the
    /// publisher's handshake leaves, so nobody sees the publisher connected first.
    pub(crate) fn drain(&mut self, p: &mut Progress, batch: &mut ForwardBatch) {
        loop {
            while let Some(event) = self.peer.poll_event() {
                self.on_event(event, p);
            }
            while let Some(message) = self.peer.poll_read() {
                tracing::trace!(message = ?std::mem::discriminant(&message.message), "peer message");
                match message.message {
                    RTCMessage::RtpPacket(_, mut packet) => self.on_rtp(&mut packet, p, batch),
                    RTCMessage::RtcpPacket(_, packets) => self.on_rtcp(&packets, p),
                    _ => {}
                }
            }
            self.run_repair(p);
            self.flush();
            if !p.ice_selected || p.early.is_empty() {
                break;
            }
            for d in p.early.take() {
                self.feed(d, p);
            }
        }
    }

    fn on_event(&mut self, event: RTCPeerConnectionEvent, p: &mut Progress) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                tracing::debug!(%state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Connected if !p.connected => {
                        p.connected = true;
                        p.connected_at = Some(p.input_at);
                        p.last_media = p.input_at;
                        self.reports
                            .push_back(Report::Connected { remote: p.remote });
                    }
                    RTCPeerConnectionState::Failed => {
                        p.end = Some((EndReason::IceFailure, "ICE/DTLS failed".into()));
                    }
                    // `Closed` only follows our own `close()`, after the loop: nothing to
                    // record. (A publisher's DTLS close_notify leaves the state "connected";
                    // its session ends by the media timeout, as an inactivity.)
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Failed,
            ) => {
                p.end = Some((EndReason::IceFailure, "ICE consent lost".into()));
            }
            // An ICE-lite agent connects when the publisher nominates a pair.
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
            ) => {
                p.ice_selected = true;
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                tracing::debug!(track = %init.track_id, "track open");
            }
            _ => {}
        }
    }

    fn on_rtp(
        &mut self,
        packet: &mut rtc::rtp::Packet,
        p: &mut Progress,
        batch: &mut ForwardBatch,
    ) {
        let Some(kind) = self.plan.kind_of(packet.header.payload_type) else {
            return;
        };
        let size = packet.marshal_size();
        let counters = &self.admission.counters;
        p.last_media = p.input_at;
        self.forwarder.count_received(kind, size);
        let (packets, bytes) = match kind {
            MediaKind::Video => (&counters.video_packets, &counters.video_bytes),
            MediaKind::Audio => (&counters.audio_packets, &counters.audio_bytes),
        };
        packets.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(size as u64, Ordering::Relaxed);
        if kind == MediaKind::Audio && self.plan.audio_red == Some(packet.header.payload_type) {
            self.on_red(packet, p, batch);
        } else {
            self.on_media(kind, packet, p, batch, false);
        }
    }

    /// A RED packet (RFC 2198): each redundant block whose packet did not arrive is forwarded
    /// as that packet (plain Opus), then the primary block as this one.
    fn on_red(
        &mut self,
        packet: &mut rtc::rtp::Packet,
        p: &mut Progress,
        batch: &mut ForwardBatch,
    ) {
        let Some(opus) = self.plan.audio.as_ref().map(|a| a.payload_type) else {
            return;
        };
        let Some(split) = whipgate_media::red::split(&packet.payload) else {
            self.metrics.red_malformed.inc();
            return;
        };
        let (ssrc, seq, ts) = (
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
        );
        let blocks = split.redundant.len();
        for (i, block) in split.redundant.into_iter().enumerate() {
            let back = (blocks - i) as u16;
            let copy_seq = seq.wrapping_sub(back);
            if block.payload_type != opus
                || block.payload.is_empty()
                || self.repair.has(ssrc, copy_seq)
            {
                continue;
            }
            let mut copy = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    sequence_number: copy_seq,
                    timestamp: ts.wrapping_sub(u32::from(block.timestamp_offset)),
                    payload_type: opus,
                    marker: false,
                    padding: false,
                    ..packet.header.clone()
                },
                payload: block.payload,
            };
            self.on_media(MediaKind::Audio, &mut copy, p, batch, true);
        }
        if split.primary.payload_type != opus {
            return;
        }
        packet.header.payload_type = opus;
        packet.header.padding = false;
        packet.payload = split.primary.payload;
        self.on_media(MediaKind::Audio, packet, p, batch, false);
    }

    /// One media packet (a retransmission already unwrapped from RTX, a frame already taken
    /// out of RED; `recovered`: from a redundant RED block): dropped when it arrived before,
    /// else forwarded (padding only: skipped, closing its gap).
    fn on_media(
        &mut self,
        kind: MediaKind,
        packet: &mut rtc::rtp::Packet,
        p: &mut Progress,
        batch: &mut ForwardBatch,
        recovered: bool,
    ) {
        let ssrc = packet.header.ssrc;
        let padding_only = packet.payload.is_empty();
        let arrival = self.repair.arrive(
            kind,
            ssrc,
            packet.header.sequence_number,
            padding_only,
            kind == MediaKind::Video,
            p.input_at,
        );
        if !self.count_arrival(kind, arrival, recovered) {
            return;
        }
        let counters = Arc::clone(&self.admission.counters);
        let mut keyframe = false;
        match kind {
            MediaKind::Video => {
                let Some(codec) = self.plan.video.as_ref().map(|v| v.codec) else {
                    return;
                };
                keyframe = starts_keyframe(codec, &packet.payload);
                let unit = (ssrc, packet.header.timestamp);
                if keyframe && p.last_keyframe != Some(unit) {
                    p.last_keyframe = Some(unit);
                    counters.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                let rid = self.rid_of(ssrc);
                if p.video_ssrc != Some(ssrc) && p.seen_ssrcs.insert(ssrc) {
                    self.reports.push_back(Report::TrackStarted {
                        kind,
                        codec: codec.encoding_name(),
                        ssrc,
                        rid: rid.clone(),
                    });
                }
                let size = packet.marshal_size();
                let forward = match &rid {
                    Some(rid) => self.layers.on_packet(rid, ssrc, size, keyframe),
                    None => true,
                };
                if !forward {
                    return;
                }
                if p.video_ssrc != Some(ssrc) {
                    let first = p.video_ssrc.is_none();
                    p.video_ssrc = Some(ssrc);
                    if rid.is_some() {
                        self.reports.push_back(Report::Simulcast {
                            layers: self.plan.simulcast_rids.clone(),
                            forwarded: rid.clone(),
                        });
                    }
                    if first {
                        // The consumer can only start decoding at a keyframe: ask for one now.
                        self.request_keyframe(p, p.input_at);
                    }
                }
            }
            MediaKind::Audio => {
                if p.audio_ssrc != Some(ssrc) {
                    p.audio_ssrc = Some(ssrc);
                    if let Some(audio) = &self.plan.audio {
                        self.reports.push_back(Report::TrackStarted {
                            kind,
                            codec: audio.codec.encoding_name(),
                            ssrc,
                            rid: None,
                        });
                    }
                }
            }
        }
        if padding_only {
            // Padding only (bandwidth probes, sent on the media SSRC when RTX is not
            // negotiated): nothing for a consumer, and the output closes the gap.
            self.forwarder.skip(kind, packet, p.input_at);
            return;
        }
        self.observe_input(kind, packet, keyframe);
        if self.forwarder.forward(kind, packet, batch, p.input_at) {
            counters.packets_forwarded.fetch_add(1, Ordering::Relaxed);
            self.observe_output(kind, packet, p.input_at);
            if keyframe && !p.keyframe_forwarded {
                p.keyframe_forwarded = true;
                let after = p.connected_at.map_or(Duration::ZERO, |at| {
                    p.input_at.saturating_duration_since(at)
                });
                self.reports.push_back(Report::FirstKeyframe { after });
            }
        }
    }

    /// Forwards the publisher's Sender Reports to the consumer's RTCP port (RTP port + 1);
    /// ends the session once the publisher has said BYE for every stream it sends.
    fn on_rtcp(&mut self, packets: &[Box<dyn rtc::rtcp::Packet>], p: &mut Progress) {
        for packet in packets {
            if let Some(bye) = packet.as_any().downcast_ref::<Goodbye>() {
                on_goodbye(bye, p);
                continue;
            }
            let Some(report) = packet.as_any().downcast_ref::<SenderReport>() else {
                continue;
            };
            let kind = if Some(report.ssrc) == p.video_ssrc {
                MediaKind::Video
            } else if Some(report.ssrc) == p.audio_ssrc {
                MediaKind::Audio
            } else {
                continue;
            };
            self.observe_publisher_report(p.input_at);
            self.forwarder.forward_rtcp(kind, report);
        }
    }

    /// Counts what became of an arriving packet; returns whether it is to be forwarded.
    fn count_arrival(&mut self, kind: MediaKind, arrival: Arrival, recovered: bool) -> bool {
        if arrival == Arrival::New && !recovered {
            // The packet path's common case: nothing to count.
            return true;
        }
        let counters = &self.admission.counters;
        let metrics = &self.metrics;
        let k = kind.as_str();
        match arrival {
            Arrival::Duplicate => {
                counters.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                metrics.rtp_duplicates_dropped.with_label_values(&[k]).inc();
                return false;
            }
            // A hole filled: by the packet itself (late or retransmitted), or by a redundant
            // RED copy, which may restore a packet whose hole was not seen yet (the packet
            // carrying the copy is the next one): a hole filled at once.
            Arrival::Filled(_) | Arrival::New => {
                let (by, open) = match arrival {
                    Arrival::Filled(open) if !recovered => ("resent", open),
                    Arrival::Filled(open) => ("red", open),
                    _ => ("red", Duration::ZERO),
                };
                counters.packets_repaired.fetch_add(1, Ordering::Relaxed);
                metrics.rtp_holes_filled.with_label_values(&[k, by]).inc();
                metrics
                    .rtp_hole_duration
                    .with_label_values(&[k])
                    .observe(open.as_secs_f64());
            }
        }
        if recovered {
            counters.red_recovered.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Sends the NACKs that are due and counts the holes given up; a video hole given up on
    /// the forwarded stream asks for a keyframe (at most one PLI per `repair::PLI_INTERVAL`).
    fn run_repair(&mut self, p: &Progress) {
        let Some(now) = self.repair.now() else {
            return;
        };
        let due = self.repair.poll(now);
        for (media_ssrc, lost) in due.nacks {
            self.send_nack(media_ssrc, &lost, now);
        }
        let mut pli = false;
        for gave_up in due.gave_up {
            let counters = &self.admission.counters;
            counters
                .packets_unrepaired
                .fetch_add(gave_up.media, Ordering::Relaxed);
            let metrics = &self.metrics;
            let k = gave_up.kind.as_str();
            for (what, n) in [("media", gave_up.media), ("probe", gave_up.probes)] {
                if n > 0 {
                    metrics
                        .rtp_holes_unrepaired
                        .with_label_values(&[k, what])
                        .inc_by(n);
                }
            }
            pli |= gave_up.kind == MediaKind::Video
                && gave_up.media > 0
                && p.video_ssrc == Some(gave_up.ssrc);
        }
        if pli && self.repair.may_send_pli(now) {
            self.request_keyframe(p, now);
            self.metrics.repair_plis_sent.inc();
        }
    }

    /// Sends one generic NACK (RFC 4585) for `lost` packets of `media_ssrc` at `now`.
    fn send_nack(&mut self, media_ssrc: u32, lost: &[u16], now: Instant) {
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(lost),
        };
        let receivers: Vec<_> = self.peer.get_receivers().collect();
        let Some(video) = receivers.into_iter().find(|id| {
            self.peer
                .rtp_receiver(*id)
                .is_some_and(|r| r.track().kind() == RtpCodecKind::Video)
        }) else {
            return;
        };
        let Some(mut receiver) = self.peer.rtp_receiver(video) else {
            return;
        };
        match receiver.write_rtcp(now, vec![Box::new(nack)]) {
            Ok(()) => {
                self.admission
                    .counters
                    .nacks_sent
                    .fetch_add(1, Ordering::Relaxed);
                self.metrics.nacks_sent.inc();
            }
            Err(err) => tracing::debug!(%err, "sending NACK"),
        }
    }

    /// Sends an RTCP PLI for the forwarded video stream at `now`, if there is one yet.
    pub(crate) fn request_keyframe(&mut self, p: &Progress, now: Instant) {
        if let Some(media_ssrc) = p.video_ssrc {
            self.send_pli(media_ssrc, now);
        }
    }

    /// Sends an RTCP PLI for one video SSRC at `now`.
    pub(super) fn send_pli(&mut self, media_ssrc: u32, now: Instant) {
        let receivers: Vec<_> = self.peer.get_receivers().collect();
        for id in receivers {
            let Some(mut receiver) = self.peer.rtp_receiver(id) else {
                continue;
            };
            if receiver.track().kind() != RtpCodecKind::Video {
                continue;
            }
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match receiver.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => {
                    self.admission
                        .counters
                        .plis_sent
                        .fetch_add(1, Ordering::Relaxed);
                    self.metrics.plis_sent.inc();
                }
                Err(err) => tracing::debug!(%err, "sending PLI"),
            }
        }
    }

    /// Restarts ICE at `now`; the driver routes the returned ufrag to this session (the
    /// previous one keeps working until the publisher moves over; older ones stop).
    pub(crate) fn ice_restart(
        &mut self,
        fragment: &str,
        now: Instant,
    ) -> Result<(IceRestarted, IceCredentials), crate::error::Error> {
        let restarted = super::restart::restart(&mut self.peer, fragment, now)?;
        let etag = format!("\"{}\"", restarted.ufrag);
        self.ufrag = restarted.ufrag.clone();
        Ok((
            IceRestarted {
                fragment: restarted.fragment,
                etag,
            },
            IceCredentials {
                ufrag: restarted.ufrag,
                pwd: restarted.pwd,
            },
        ))
    }
}

/// Records an RTCP BYE (it is SRTCP, so only the authenticated publisher can send one) and
/// ends the session when every stream the publisher sent has said goodbye: it closed its peer
/// connection. A BYE for some streams only (audio stopped, or one simulcast layer paused by
/// the browser under congestion) ends nothing.
fn on_goodbye(bye: &Goodbye, p: &mut Progress) {
    for &ssrc in &bye.sources {
        let sent = p.seen_ssrcs.contains(&ssrc)
            || Some(ssrc) == p.video_ssrc
            || Some(ssrc) == p.audio_ssrc;
        if sent {
            p.goodbyes.insert(ssrc);
        }
    }
    let mut streams = p
        .seen_ssrcs
        .iter()
        .copied()
        .chain(p.video_ssrc)
        .chain(p.audio_ssrc)
        .peekable();
    let any = streams.peek().is_some();
    if any && streams.all(|ssrc| p.goodbyes.contains(&ssrc)) && p.end.is_none() {
        p.end = Some((EndReason::PublisherClose, "RTCP BYE".into()));
    }
}

#[cfg(test)]
mod goodbye_tests {
    use super::*;

    fn progress(video: Option<u32>, audio: Option<u32>) -> Progress {
        Progress {
            connected: true,
            video_ssrc: video,
            audio_ssrc: audio,
            ..Progress::new(Instant::now())
        }
    }

    fn bye(sources: &[u32]) -> Goodbye {
        Goodbye {
            sources: sources.to_vec(),
            reason: Default::default(),
        }
    }

    #[test]
    fn the_session_ends_once_every_forwarded_stream_said_goodbye() {
        let mut p = progress(Some(1), Some(2));
        on_goodbye(&bye(&[1]), &mut p);
        assert!(p.end.is_none(), "audio is still live");
        // Another simulcast layer's SSRC, or an unknown one, changes nothing.
        on_goodbye(&bye(&[7, 8]), &mut p);
        assert!(p.end.is_none());
        on_goodbye(&bye(&[2]), &mut p);
        assert!(matches!(p.end, Some((EndReason::PublisherClose, _))));

        let mut p = progress(Some(1), Some(2));
        on_goodbye(&bye(&[2, 1]), &mut p);
        assert!(matches!(p.end, Some((EndReason::PublisherClose, _))));
    }

    #[test]
    fn a_paused_simulcast_layer_is_not_a_goodbye() {
        // Three layers seen, the middle one forwarded, no audio.
        let mut p = progress(Some(2), None);
        p.seen_ssrcs.extend([1, 2, 3]);
        on_goodbye(&bye(&[2]), &mut p);
        assert!(p.end.is_none(), "the browser paused the forwarded layer");
        on_goodbye(&bye(&[1, 3]), &mut p);
        assert!(matches!(p.end, Some((EndReason::PublisherClose, _))));
    }

    #[test]
    fn a_goodbye_before_any_stream_or_after_an_end_changes_nothing() {
        let mut p = progress(None, None);
        on_goodbye(&bye(&[1]), &mut p);
        assert!(p.end.is_none(), "nothing forwarded yet: nothing to close");

        let mut p = progress(Some(1), None);
        p.end = Some((EndReason::Teardown, "first".into()));
        on_goodbye(&bye(&[1]), &mut p);
        assert!(
            matches!(p.end, Some((EndReason::Teardown, _))),
            "the first end wins"
        );
    }
}
