//! One publisher's session, sans-IO: its peer connection (webrtc-rs's `rtc`), loss repair,
//! simulcast layer choice, stream facts, Sender Reports and the rewrite into the ingest's output
//! streams. Its owner feeds it input with the time ([`Session::handle_input`]) and takes what
//! it produced ([`Session::poll_output`]), in order: datagrams for the publisher, packets for the
//! consumers, events for the registry, and finally when to call it again. It does no I/O and
//! reads no clock: the gateway's driver (`crates/gateway`, `driver/`) owns the sockets
//! and the timers, and the tests here run whole sessions on simulated time (`sim`).
//!
//! A session ends on ICE failure, inactivity, a cap or the publisher's RTCP BYE ([`Session::end`]);
//! its owner ends it from outside (DELETE, teardown, shutdown) by dropping it after
//! [`Session::close`].

mod counters;
pub(crate) mod early;
mod event;
pub(crate) mod forward;
mod housekeeping;
mod meter;
mod observe;
pub(crate) mod restart;
#[cfg(test)]
mod sim;
mod simulcast;
mod sr;
#[cfg(test)]
mod tests;

pub use counters::{CountersSnapshot, Limits, SessionCounters};
pub use event::Event;
pub use forward::Targets;
pub use meter::Meter;
pub use restart::RestartError;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
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
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use uuid::Uuid;

use crate::codec::{MediaKind, OfferPlan};
use crate::continuity::Continuity;
use crate::keyframe::starts_keyframe;
use crate::repair::{Arrival, Repair};
use early::EarlyRecords;
use forward::Forwarder;
use observe::Observers;
use simulcast::LayerSelector;

/// One datagram from the publisher, as the media port (or an ICE-TCP connection) received it.
#[derive(Debug)]
pub struct Datagram {
    /// The bytes.
    pub data: BytesMut,
    /// The publisher's address.
    pub from: SocketAddr,
    /// When it arrived (the session's clock for media).
    pub at: Instant,
    /// Arrived over ICE-TCP rather than the UDP port.
    pub tcp: bool,
}

/// What a session is fed ([`Session::handle_input`]).
#[derive(Debug)]
pub enum Input {
    /// A datagram from the publisher (already routed to this session).
    Datagram(Datagram),
    /// Run the timers due now (the instant of the last [`Output::Timeout`] has come).
    Timeout,
    /// Periodic work, a few times a second: caps and timeouts, simulcast layer review,
    /// synthesized Sender Reports, and timers well overdue (a starved worker's safety net).
    Housekeeping,
    /// Statistics over the `elapsed` time since the last ones (an [`Event::Stats`]); the
    /// bitrate cap is checked on them.
    Stats {
        /// Since the previous `Stats`.
        elapsed: Duration,
    },
    /// The ingest's caps as they stand now (SetCaps may change them while the session runs).
    Limits(Limits),
    /// Ask the publisher for a keyframe (RTCP PLI) on the forwarded video stream.
    RequestKeyframe,
    /// Forward this simulcast layer (`None`: the highest bitrate), from its next keyframe.
    SelectLayer(Option<String>),
}

/// What a session produced ([`Session::poll_output`]), in the order it must be applied.
pub enum Output {
    /// A datagram for the publisher; its transport says UDP or ICE-TCP, and where.
    Transmit(TaggedBytesMut),
    /// A packet for a consumer's UDP target.
    Forward(Forward),
    /// A change the registry records.
    Event(Event),
    /// Nothing more for now: call [`Session::handle_input`] with [`Input::Timeout`] at this
    /// instant (`None`: no timer; only input wakes the session).
    Timeout(Option<Instant>),
}

/// A packet for a consumer.
#[derive(Debug)]
pub struct Forward {
    /// Which stream (and so which target, payload type and counters).
    pub kind: MediaKind,
    /// The target: the RTP port for RTP, the next one for RTCP.
    pub to: SocketAddr,
    /// The packet, already rewritten into the ingest's output stream.
    pub packet: Forwarded,
}

/// A forwarded packet.
#[derive(Debug)]
pub enum Forwarded {
    /// RTP, to be marshalled by the driver (into its send batch: no copy here).
    Rtp(rtp::Packet),
    /// RTCP (a Sender Report), marshalled.
    Rtcp(Bytes),
}

/// Why a session ended from within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// ICE or DTLS failed, or ICE consent was lost.
    IceFailure,
    /// Never connected in time, or no media for the media timeout.
    Inactivity,
    /// The publisher said RTCP BYE for every stream it sent.
    PublisherClose,
    /// Above the ingest's bitrate cap.
    BitrateCap,
    /// Longer than the ingest's duration cap.
    DurationCap,
}

/// The ICE credentials and answer fragment of an ICE restart: the driver routes the new ufrag
/// to this session and answers the PATCH with the fragment.
#[derive(Debug)]
pub struct IceRestart {
    /// Our new ufrag.
    pub ufrag: String,
    /// Our new pwd (what the publisher's checks are signed with).
    pub pwd: String,
    /// The `application/trickle-ice-sdpfrag` answer.
    pub fragment: String,
}

/// Everything a session starts with.
pub struct Params {
    /// The session's id.
    pub id: Uuid,
    /// The ingest it publishes to (logs, per-ingest series).
    pub ingest: String,
    /// The ingest's UDP targets.
    pub targets: Targets,
    /// The simulcast layer the ingest prefers, if any.
    pub preferred_layer: Option<String>,
    /// What the offer negotiated.
    pub plan: OfferPlan,
    /// The negotiated peer connection (`crate::peer::PeerFactory::negotiate`).
    pub peer: RTCPeerConnection,
    /// Our ICE ufrag from the negotiation.
    pub ufrag: String,
    /// The local addresses the peer connection was told (UDP, ICE-TCP).
    pub ice_local: SocketAddr,
    /// See `ice_local`.
    pub ice_local_tcp: SocketAddr,
    /// The ingest's output streams (shared by its sessions over time).
    pub continuity: Arc<Mutex<Continuity>>,
    /// Counters the registry reads.
    pub counters: Arc<SessionCounters>,
    /// The operator's counters.
    pub meter: Arc<dyn Meter>,
    /// Timeouts and the statistics interval.
    pub timers: SessionTimers,
    /// When the session starts.
    pub now: Instant,
    /// The wall clock at `now` (the NTP time of the Sender Reports it makes for publishers
    /// that send none): the session reads no clock itself.
    pub wall_clock: SystemTime,
}

/// A publisher's session (see the module docs).
pub struct Session {
    core: Core,
    progress: Progress,
}

/// Timing knobs of a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionTimers {
    /// No media for this long ends a connected session.
    pub media_timeout: Duration,
    /// Not connected this long after it started ends a session.
    pub connect_timeout: Duration,
    /// How often its owner asks for statistics (for the record; the owner keeps the clock).
    pub stats_interval: Duration,
}

/// The session's parts (the peer connection and what works on its packets).
pub(crate) struct Core {
    pub(crate) id: Uuid,
    pub(crate) ingest: String,
    pub(crate) plan: OfferPlan,
    pub(crate) peer: RTCPeerConnection,
    /// What the owner takes next (`poll_output`), in order.
    pub(crate) out: VecDeque<Output>,
    /// Counters the registry reads.
    pub(crate) counters: Arc<SessionCounters>,
    /// The operator's counters.
    pub(crate) meter: Arc<dyn Meter>,
    /// The ingest's caps as the owner last gave them.
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

/// Mutable bookkeeping of the loop.
pub(crate) struct Progress {
    pub(crate) remote: Option<SocketAddr>,
    /// ICE selected a pair (the publisher nominated one): DTLS may flow.
    pub(crate) ice_selected: bool,
    /// DTLS records that came before `ice_selected`.
    pub(crate) early: EarlyRecords,
    pub(crate) connected: bool,
    /// When DTLS connected.
    pub(crate) connected_at: Option<Instant>,
    /// A keyframe has been forwarded to the consumer.
    pub(crate) keyframe_forwarded: bool,
    /// SSRC and RTP timestamp of the last keyframe counted (a sliced IDR counts once).
    pub(crate) last_keyframe: Option<(u32, u32)>,
    pub(crate) last_media: Instant,
    /// When the datagram being handled arrived (the session's clock for media).
    pub(crate) input_at: Instant,
    pub(crate) started: Instant,
    /// SSRC of the forwarded video stream (the current layer with simulcast).
    pub(crate) video_ssrc: Option<u32>,
    pub(crate) audio_ssrc: Option<u32>,
    /// Every video SSRC seen (track-started fires once per SSRC).
    pub(crate) seen_ssrcs: HashSet<u32>,
    pub(crate) housekeeping_ticks: u64,
    /// Video and audio bytes received at the last statistics report.
    pub(crate) bytes_at_last_stats: (u64, u64),
    /// The publisher's streams it has said RTCP BYE for (only SSRCs it sent: bounded).
    pub(crate) goodbyes: HashSet<u32>,
    pub(crate) end: Option<(EndCause, String)>,
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

impl Session {
    /// A session for a negotiated publish, starting at `params.now`.
    pub fn new(params: Params) -> Self {
        let Params {
            id,
            ingest,
            targets,
            preferred_layer,
            plan,
            peer,
            ufrag,
            ice_local,
            ice_local_tcp,
            continuity,
            counters,
            meter,
            timers,
            now,
            wall_clock,
        } = params;
        Session {
            core: Core {
                forwarder: Forwarder::new(id, targets, continuity, &plan),
                observers: Observers::new(&plan, targets, now, wall_clock),
                layers: LayerSelector::new(preferred_layer),
                id,
                ingest,
                plan,
                peer,
                out: VecDeque::new(),
                counters,
                meter,
                limits: Limits::default(),
                ice_local,
                ice_local_tcp,
                rids: HashMap::new(),
                timers,
                ufrag,
                repair: Repair::default(),
            },
            progress: Progress::new(now),
        }
    }

    /// Feeds one input at `now`; what it produced waits in [`Session::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        let Session { core, progress: p } = self;
        match input {
            Input::Datagram(d) => core.read(d, p),
            Input::Timeout => core.handle_timeout(now),
            Input::Housekeeping => {
                core.run_overdue_timers(now);
                core.check_limits(p, now);
                core.review_layers(p, now);
                core.send_reports(now);
            }
            Input::Stats { elapsed } => core.report_stats(p, elapsed, now),
            Input::Limits(limits) => core.limits = limits,
            Input::RequestKeyframe => core.request_keyframe(p, now),
            Input::SelectLayer(rid) => core.layers.set_preferred(rid),
        }
        core.drain(p);
    }

    /// The next output, in order; [`Output::Timeout`] when nothing else is queued.
    pub fn poll_output(&mut self) -> Output {
        match self.core.out.pop_front() {
            Some(out) => out,
            None => Output::Timeout(self.core.next_timeout()),
        }
    }

    /// Restarts ICE at `now` with the publisher's new credentials (a trickle-ice-sdpfrag,
    /// RFC 8840). The previous ufrag keeps working until the publisher moves over; older ones
    /// stop. A refusal changes nothing.
    pub fn ice_restart(
        &mut self,
        fragment: &str,
        now: Instant,
    ) -> Result<IceRestart, RestartError> {
        let restarted = self.core.ice_restart(fragment, now)?;
        self.core.drain(&mut self.progress);
        Ok(restarted)
    }

    /// Closes the peer connection (its DTLS close_notify is queued for the publisher). DTLS
    /// records still held for a pair the publisher never nominated count as dropped.
    pub fn close(&mut self) {
        let unheld = self.progress.early.len();
        if unheld > 0 {
            self.core.meter.dtls_before_ice("dropped", unheld as u64);
            drop(self.progress.early.take());
        }
        self.core.close();
    }

    /// Why the session ended from within, once it has.
    pub fn end(&self) -> Option<(EndCause, &str)> {
        self.progress
            .end
            .as_ref()
            .map(|(cause, detail)| (*cause, detail.as_str()))
    }

    /// ICE and DTLS are done.
    pub fn connected(&self) -> bool {
        self.progress.connected
    }

    /// The session's id.
    pub fn id(&self) -> Uuid {
        self.core.id
    }

    /// The counters the registry reads.
    pub fn counters(&self) -> &Arc<SessionCounters> {
        &self.core.counters
    }
}

/// How late a timer may run before the session's housekeeping runs it itself (a worker's
/// timer queue was full or its worker is overloaded).
const OVERDUE: Duration = Duration::from_millis(250);

impl Core {
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

    /// Closes the peer connection and queues what closing produced (DTLS close_notify).
    fn close(&mut self) {
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
        let mut fresh: Vec<TaggedBytesMut> =
            std::iter::from_fn(|| self.peer.poll_write()).collect();
        // A stable partition: STUN (first byte 0 or 1) before the rest.
        fresh.sort_by_key(|out| out.message.first().is_none_or(|b| *b >= 2));
        self.out.extend(fresh.into_iter().map(Output::Transmit));
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
            self.meter.dtls_before_ice(outcome, 1);
            return;
        }
        self.feed(d, p);
    }

    /// A connectivity check whose USERNAME names a ufrag of ours that is no longer current.
    fn is_stale_check(&self, data: &[u8]) -> bool {
        if data.first().is_none_or(|b| *b >= 2) {
            return false;
        }
        matches!(crate::ice_auth::parse(data), Ok(Some(request)) if request.ufrag != self.ufrag)
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

    /// Handles events and received media, and queues what they produced; once ICE selected a
    /// pair, feeds the DTLS records held until then. Events come before datagrams: the
    /// session is recorded connected before the DTLS flight that completes the publisher's
    /// handshake leaves, so nobody sees the publisher connected first.
    fn drain(&mut self, p: &mut Progress) {
        loop {
            while let Some(event) = self.peer.poll_event() {
                self.on_event(event, p);
            }
            while let Some(message) = self.peer.poll_read() {
                tracing::trace!(message = ?std::mem::discriminant(&message.message), "peer message");
                match message.message {
                    RTCMessage::RtpPacket(_, mut packet) => self.on_rtp(&mut packet, p),
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
                        let remote = p.remote;
                        self.out
                            .push_back(Output::Event(Event::Connected { remote }));
                    }
                    RTCPeerConnectionState::Failed => {
                        p.end = Some((EndCause::IceFailure, "ICE/DTLS failed".into()));
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
                p.end = Some((EndCause::IceFailure, "ICE consent lost".into()));
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

    fn on_rtp(&mut self, packet: &mut rtp::Packet, p: &mut Progress) {
        let Some(kind) = self.plan.kind_of(packet.header.payload_type) else {
            return;
        };
        let size = packet.marshal_size();
        let counters = &self.counters;
        p.last_media = p.input_at;
        self.meter.received(kind, size);
        let (packets, bytes) = match kind {
            MediaKind::Video => (&counters.video_packets, &counters.video_bytes),
            MediaKind::Audio => (&counters.audio_packets, &counters.audio_bytes),
        };
        packets.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(size as u64, Ordering::Relaxed);
        if kind == MediaKind::Audio && self.plan.audio_red == Some(packet.header.payload_type) {
            self.on_red(packet, p);
        } else {
            self.on_media(kind, packet, p, false);
        }
    }

    /// A RED packet (RFC 2198): each redundant block whose packet did not arrive is forwarded
    /// as that packet (plain Opus), then the primary block as this one.
    fn on_red(&mut self, packet: &mut rtp::Packet, p: &mut Progress) {
        let Some(opus) = self.plan.audio.as_ref().map(|a| a.payload_type) else {
            return;
        };
        let Some(split) = crate::red::split(&packet.payload) else {
            self.meter.red_malformed();
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
            let mut copy = rtp::Packet {
                header: rtp::Header {
                    sequence_number: copy_seq,
                    timestamp: ts.wrapping_sub(u32::from(block.timestamp_offset)),
                    payload_type: opus,
                    marker: false,
                    padding: false,
                    ..packet.header.clone()
                },
                payload: block.payload,
            };
            self.on_media(MediaKind::Audio, &mut copy, p, true);
        }
        if split.primary.payload_type != opus {
            return;
        }
        packet.header.payload_type = opus;
        packet.header.padding = false;
        packet.payload = split.primary.payload;
        self.on_media(MediaKind::Audio, packet, p, false);
    }

    /// One media packet (a retransmission already unwrapped from RTX, a frame already taken
    /// out of RED; `recovered`: from a redundant RED block): dropped when it arrived before,
    /// else forwarded (padding only: skipped, closing its gap).
    fn on_media(
        &mut self,
        kind: MediaKind,
        packet: &mut rtp::Packet,
        p: &mut Progress,
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
        let counters = Arc::clone(&self.counters);
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
                    self.out.push_back(Output::Event(Event::TrackStarted {
                        kind,
                        codec: codec.encoding_name(),
                        ssrc,
                        rid: rid.clone(),
                    }));
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
                        self.out.push_back(Output::Event(Event::Simulcast {
                            layers: self.plan.simulcast_rids.clone(),
                            forwarded: rid.clone(),
                        }));
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
                        self.out.push_back(Output::Event(Event::TrackStarted {
                            kind,
                            codec: audio.codec.encoding_name(),
                            ssrc,
                            rid: None,
                        }));
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
        if let Some(to) = self.forwarder.map(kind, packet, p.input_at) {
            counters.packets_forwarded.fetch_add(1, Ordering::Relaxed);
            self.observe_output(kind, packet, p.input_at);
            self.out.push_back(Output::Forward(Forward {
                kind,
                to,
                packet: Forwarded::Rtp(std::mem::take(packet)),
            }));
            if keyframe && !p.keyframe_forwarded {
                p.keyframe_forwarded = true;
                let after = p.connected_at.map_or(Duration::ZERO, |at| {
                    p.input_at.saturating_duration_since(at)
                });
                self.out
                    .push_back(Output::Event(Event::FirstKeyframe { after }));
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
            let Some((to, report)) = self.forwarder.map_report(kind, report) else {
                continue;
            };
            match report.marshal() {
                Ok(bytes) => self.out.push_back(Output::Forward(Forward {
                    kind,
                    to,
                    packet: Forwarded::Rtcp(bytes.freeze()),
                })),
                Err(err) => tracing::debug!(%err, "marshalling RTCP"),
            }
        }
    }

    /// Counts what became of an arriving packet; returns whether it is to be forwarded.
    fn count_arrival(&mut self, kind: MediaKind, arrival: Arrival, recovered: bool) -> bool {
        if arrival == Arrival::New && !recovered {
            // The packet path's common case: nothing to count.
            return true;
        }
        let counters = &self.counters;
        match arrival {
            Arrival::Duplicate => {
                counters.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                self.meter.duplicate_dropped(kind);
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
                self.meter.hole_filled(kind, by, open);
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
            self.counters
                .packets_unrepaired
                .fetch_add(gave_up.media, Ordering::Relaxed);
            for (what, n) in [("media", gave_up.media), ("probe", gave_up.probes)] {
                if n > 0 {
                    self.meter.holes_unrepaired(gave_up.kind, what, n);
                }
            }
            pli |= gave_up.kind == MediaKind::Video
                && gave_up.media > 0
                && p.video_ssrc == Some(gave_up.ssrc);
        }
        if pli && self.repair.may_send_pli(now) {
            self.request_keyframe(p, now);
            self.meter.repair_pli_sent();
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
                self.counters.nacks_sent.fetch_add(1, Ordering::Relaxed);
                self.meter.nack_sent();
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
    pub(crate) fn send_pli(&mut self, media_ssrc: u32, now: Instant) {
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
                    self.counters.plis_sent.fetch_add(1, Ordering::Relaxed);
                    self.meter.pli_sent();
                }
                Err(err) => tracing::debug!(%err, "sending PLI"),
            }
        }
    }

    /// Restarts ICE at `now` (see [`Session::ice_restart`]).
    fn ice_restart(&mut self, fragment: &str, now: Instant) -> Result<IceRestart, RestartError> {
        let restarted = restart::restart(&mut self.peer, fragment, now)?;
        self.ufrag = restarted.ufrag.clone();
        Ok(IceRestart {
            ufrag: restarted.ufrag,
            pwd: restarted.pwd,
            fragment: restarted.fragment,
        })
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
        p.end = Some((EndCause::PublisherClose, "RTCP BYE".into()));
    }
}
