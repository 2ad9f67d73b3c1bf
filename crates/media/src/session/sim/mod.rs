//! A simulated network for one real session (tests only): an in-process webrtc-rs publisher
//! (sans-IO, the offerer, with an H264 and an Opus track) negotiated against
//! `PeerFactory::negotiate`, the `Session` built as the gateway builds it, and the datagrams
//! between them shuttled in memory on a simulated clock. Nothing waits on a real clock: when
//! nothing is in flight, time jumps to the earliest timer of either side. No socket at all:
//! the session's forwarded packets are taken from its output (marshalled and parsed back, as
//! they would cross the wire), its events are kept, and its meter counts in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use uuid::Uuid;

use super::{
    Core, Datagram, Event, Forwarded, Input, Limits, Meter, Output, Params, Progress, Session,
    SessionCounters, SessionTimers, Targets,
};
use crate::codec::{AudioCodec, MediaKind, VideoCodec};
use crate::continuity::Continuity;
use crate::offer::{self, Accepted};
use crate::peer::PeerFactory;
use publisher::Publisher;
pub(super) use publisher::{AUDIO_PT, Consent, RED_PT, RTX_PT, VIDEO_PT};

mod publisher;

/// The publisher's (made-up) address and the gateway's advertised candidate.
pub(super) const PUBLISHER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8189);
/// The consumer's targets (never bound: nothing is sent).
const VIDEO_TARGET: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);
const AUDIO_TARGET: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_002);
/// Timer firings at one instant beyond which a side is spinning (a bug, not a simulation).
const MAX_FIRINGS_AT_ONCE: usize = 1_000;

/// A [`Meter`] that counts in memory, by name and label.
#[derive(Default)]
pub(super) struct CountingMeter {
    counts: Mutex<HashMap<(&'static str, String), u64>>,
}

impl CountingMeter {
    fn add(&self, name: &'static str, label: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((name, label.to_owned())).or_default() += n;
    }

    /// The count of `name` with `label` ("" when it has none).
    pub(super) fn get(&self, name: &'static str, label: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&(name, label.to_owned())).copied().unwrap_or(0)
    }
}

impl Meter for CountingMeter {
    fn received(&self, kind: MediaKind, _bytes: usize) {
        self.add("received", kind.as_str(), 1);
    }
    fn dtls_before_ice(&self, outcome: &'static str, records: u64) {
        self.add("dtls_before_ice", outcome, records);
    }
    fn red_malformed(&self) {
        self.add("red_malformed", "", 1);
    }
    fn duplicate_dropped(&self, kind: MediaKind) {
        self.add("duplicate_dropped", kind.as_str(), 1);
    }
    fn hole_filled(&self, kind: MediaKind, by: &'static str, _open: Duration) {
        self.add("hole_filled", &format!("{}/{by}", kind.as_str()), 1);
    }
    fn holes_unrepaired(&self, kind: MediaKind, what: &'static str, packets: u64) {
        self.add(
            "holes_unrepaired",
            &format!("{}/{what}", kind.as_str()),
            packets,
        );
    }
    fn nack_sent(&self) {
        self.add("nack_sent", "", 1);
    }
    fn pli_sent(&self) {
        self.add("pli_sent", "", 1);
    }
    fn repair_pli_sent(&self) {
        self.add("repair_pli_sent", "", 1);
    }
    fn sender_report_synthesized(&self) {
        self.add("sender_report_synthesized", "", 1);
    }
    fn packets_lost(&self, packets: u64) {
        self.add("packets_lost", "", packets);
    }
    fn ingest_bytes_received(&self, _ingest: &str, kind: MediaKind, bytes: u64) {
        self.add("ingest_bytes_received", kind.as_str(), bytes);
    }
}

/// What reached the consumer, per kind: RTP, and RTCP on the next port.
#[derive(Default)]
struct Consumer {
    video: Vec<rtc::rtp::Packet>,
    audio: Vec<rtc::rtp::Packet>,
    video_reports: Vec<SenderReport>,
    audio_reports: Vec<SenderReport>,
}

/// Which of the publisher's datagrams the network loses.
pub(super) type Loss = Box<dyn FnMut(&[u8]) -> bool>;

/// A publisher and one session on one simulated clock.
pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) session: Session,
    pub(super) publisher: Publisher,
    /// The ingest's caps, given to the session before its housekeeping and statistics.
    pub(super) limits: Limits,
    /// Every event the session produced, in order.
    pub(super) events: Vec<Event>,
    pub(super) meter: Arc<CountingMeter>,
    /// The gateway's ICE ufrag from the negotiation.
    pub(super) ufrag: String,
    /// The gateway's ICE pwd (what the publisher's checks are signed with).
    pub(super) pwd: String,
    /// The publisher's ICE ufrag, from its offer.
    pub(super) publisher_ufrag: String,
    consumer: Consumer,
    /// The session's datagrams for the publisher, until `exchange` delivers them.
    to_publisher: Vec<TaggedBytesMut>,
    pub(super) lose: Loss,
    /// The session's timers are not run when due (a starved worker): only `outside` work,
    /// such as housekeeping's safety net, runs them.
    pub(super) starved: bool,
    /// When the publisher's last STUN message (connectivity or consent check) arrived.
    pub(super) last_check: Instant,
}

impl Sim {
    /// Negotiates a publisher against a session with these timers and ingest limits.
    pub(super) fn new(timers: SessionTimers, limits: Limits) -> Sim {
        Sim::with_consent(timers, limits, Consent::Checks)
    }

    /// [`Sim::new`] with a publisher that keeps (or does not keep) consent as `consent` says.
    pub(super) fn with_consent(timers: SessionTimers, limits: Limits, consent: Consent) -> Sim {
        Sim::build(timers, limits, consent, false)
    }

    /// [`Sim::new`] with a publisher that offers RTX for its video (its retransmissions on
    /// their own SSRC, named by `a=ssrc-group:FID`) and RED for its Opus, as browsers do.
    pub(super) fn with_repair(timers: SessionTimers, limits: Limits) -> Sim {
        Sim::build(timers, limits, Consent::Checks, true)
    }

    fn build(timers: SessionTimers, limits: Limits, consent: Consent, repair: bool) -> Sim {
        let start = Instant::now();
        let (mut publisher, offer) = Publisher::new(start, consent, repair);
        let accepted = Accepted {
            video: &[VideoCodec::H264],
            audio: &[AudioCodec::Opus],
        };
        let plan = offer::plan(&offer, accepted).expect("the offer plans");
        let factory = PeerFactory::new(vec![GATEWAY], vec![]).expect("factory");
        let (publisher_ufrag, _) =
            crate::peer::ice_credentials(&offer).expect("the offer's ICE credentials");
        let negotiated = factory.negotiate(offer, &plan, start).expect("negotiate");
        let ufrag = negotiated.ufrag.clone();
        let pwd = negotiated.pwd.clone();
        let answer = RTCSessionDescription::answer(negotiated.answer_sdp).expect("answer");
        publisher
            .peer
            .set_remote_description(start, answer)
            .expect("remote description");
        let meter = Arc::new(CountingMeter::default());
        let session = Session::new(Params {
            id: Uuid::new_v4(),
            ingest: "sim".to_owned(),
            targets: Targets {
                video: Some(VIDEO_TARGET),
                audio: Some(AUDIO_TARGET),
            },
            preferred_layer: None,
            plan,
            peer: negotiated.peer,
            ufrag: ufrag.clone(),
            ice_local: factory.ice_local_addr(false),
            ice_local_tcp: factory.ice_local_addr(true),
            continuity: Arc::new(Mutex::new(Continuity::default())),
            counters: Arc::new(SessionCounters::default()),
            meter: Arc::clone(&meter) as Arc<dyn Meter>,
            timers,
            now: start,
            wall_clock: std::time::SystemTime::now(),
        });
        Sim {
            start,
            now: start,
            session,
            publisher,
            limits,
            events: Vec::new(),
            meter,
            ufrag,
            pwd,
            publisher_ufrag,
            consumer: Consumer::default(),
            to_publisher: Vec::new(),
            lose: Box::new(|_| false),
            starved: false,
            last_check: start,
        }
    }

    /// Simulated time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    /// Feeds one input to the session at `now` and applies its output.
    pub(super) fn input(&mut self, input: Input) {
        self.session.handle_input(self.now, input);
        self.apply();
    }

    /// Takes the session's output up to its timeout, in order: datagrams for the publisher
    /// wait for `exchange`, forwarded packets reach the consumer, events are kept.
    fn apply(&mut self) {
        loop {
            match self.session.poll_output() {
                Output::Transmit(t) => self.to_publisher.push(t),
                Output::Forward(f) => self.consumer.receive(f.kind, f.to, f.packet),
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) => break,
            }
        }
    }

    /// Delivers everything in flight, at `now` (no latency), until both sides are quiet.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.publisher.peer.poll_write() {
                moved = true;
                if (self.lose)(&out.message) {
                    continue;
                }
                if out.message.first().is_some_and(|b| *b < 2) {
                    self.last_check = self.now;
                }
                let datagram = Datagram {
                    data: out.message,
                    from: PUBLISHER,
                    at: self.now,
                    tcp: false,
                };
                self.input(Input::Datagram(datagram));
            }
            for out in std::mem::take(&mut self.to_publisher) {
                moved = true;
                let _ = self.publisher.peer.handle_read(TaggedBytesMut {
                    now: self.now,
                    transport: TransportContext {
                        local_addr: PUBLISHER,
                        peer_addr: GATEWAY,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: out.message,
                });
            }
            self.publisher.drain(self.now);
            if !moved {
                break;
            }
        }
    }

    /// Runs both sides up to `until`: deliveries, then each timer as it falls due.
    pub(super) fn run_until(&mut self, until: Instant) {
        let mut firings = 0;
        loop {
            self.exchange();
            let publisher_due = self.publisher.peer.poll_timeout();
            let session_due = self.session.core.next_timeout().filter(|_| !self.starved);
            let Some(due) = [publisher_due, session_due].into_iter().flatten().min() else {
                break;
            };
            if due > until {
                break;
            }
            if due > self.now {
                self.now = due;
                firings = 0;
            }
            firings += 1;
            assert!(firings < MAX_FIRINGS_AT_ONCE, "timers spin at {:?}", due);
            if publisher_due.is_some_and(|t| t <= self.now) {
                let _ = self.publisher.peer.handle_timeout(self.now);
            }
            if session_due.is_some_and(|t| t <= self.now) {
                self.input(Input::Timeout);
            }
        }
        self.now = self.now.max(until);
        self.exchange();
    }

    /// Runs `f` on the session's parts at `now` outside input (a command, housekeeping's
    /// pieces), then takes what it produced, as the driver does after any input.
    pub(super) fn outside(&mut self, f: impl FnOnce(&mut Core, &mut Progress, Instant)) {
        let Session { core, progress } = &mut self.session;
        f(core, progress, self.now);
        core.drain(progress);
        self.apply();
        self.exchange();
    }

    /// The driver's housekeeping check of caps and timeouts at `now` (the caps given first).
    pub(super) fn check_limits(&mut self, now: Instant) {
        self.session.handle_input(now, Input::Limits(self.limits));
        let Session { core, progress } = &mut self.session;
        core.check_limits(progress, now);
        self.apply();
    }

    /// The driver's statistics for `elapsed` up to `now` (the caps given first).
    pub(super) fn report_stats(&mut self, elapsed: Duration, now: Instant) {
        self.session.handle_input(now, Input::Limits(self.limits));
        self.session.handle_input(now, Input::Stats { elapsed });
        self.apply();
    }

    /// Runs both sides for `d` of simulated time.
    pub(super) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until both sides are connected (ICE, DTLS, SRTP); the simulated time it took.
    pub(super) fn connect(&mut self) -> Duration {
        let limit = self.now + Duration::from_secs(5);
        while !(self.session.progress.connected && self.publisher.connected) {
            assert!(
                self.now < limit,
                "not connected after 5 s of simulated time"
            );
            self.run_for(Duration::from_millis(1));
        }
        self.elapsed()
    }

    /// Sends one video packet of `size` payload bytes (an H264 IDR or non-IDR slice) with
    /// the video track's next sequence number, at `now`; returns that number.
    pub(super) fn send_video(&mut self, size: usize, keyframe: bool) -> u16 {
        let seq = self.publisher.send_video(self.now, size, keyframe);
        self.exchange();
        seq
    }

    /// Sends one video access unit (a frame) at `now`, one packet per payload, the marker
    /// bit on the last; returns the packets' sequence numbers.
    pub(super) fn send_access_unit(&mut self, payloads: &[Bytes]) -> Vec<u16> {
        let sent = self.publisher.send_access_unit(self.now, payloads);
        self.exchange();
        sent
    }

    /// Sends one 20 ms audio packet at `now`.
    pub(super) fn send_audio(&mut self) {
        self.publisher.send_audio(self.now);
        self.exchange();
    }

    /// Sends a video packet again (a retransmission), at `now`.
    pub(super) fn resend_video(&mut self, seq: u16) {
        let payload = Bytes::from_static(&[0x41, 0xab, 0xab]);
        self.publisher.write_rtp(self.now, true, seq, payload);
        self.exchange();
    }

    /// Sends video packet `osn` again on the RTX stream (`None`: a padding-only probe), at
    /// `now`.
    pub(super) fn send_rtx(&mut self, osn: Option<u16>, payload: &[u8]) {
        self.publisher.send_rtx(self.now, osn, payload);
        self.exchange();
    }

    /// Sends one RED audio packet at `now`; its sequence number and timestamp.
    pub(super) fn send_red(&mut self, redundant: &[(u16, &[u8])], payload: &[u8]) -> (u16, u32) {
        let sent = self.publisher.send_red(self.now, redundant, payload);
        self.exchange();
        sent
    }

    /// Sends video and audio packets every `every` (video of `size` bytes) up to `until`,
    /// running timers in between.
    pub(super) fn stream_until(&mut self, until: Instant, every: Duration, size: usize) {
        while self.now + every <= until {
            self.run_for(every);
            self.send_video(size, false);
            self.send_audio();
        }
        self.run_until(until);
    }

    /// The RTP the consumer received on the video (or audio) target since the last call.
    pub(super) fn forwarded(&mut self, video: bool) -> Vec<rtc::rtp::Packet> {
        let received = if video {
            &mut self.consumer.video
        } else {
            &mut self.consumer.audio
        };
        std::mem::take(received)
    }

    /// The Sender Reports the consumer received on the video (or audio) RTCP port since the
    /// last call.
    pub(super) fn forwarded_reports(&mut self, video: bool) -> Vec<SenderReport> {
        let received = if video {
            &mut self.consumer.video_reports
        } else {
            &mut self.consumer.audio_reports
        };
        std::mem::take(received)
    }
}

impl Consumer {
    /// A forwarded packet crosses the wire: marshalled, then parsed as the consumer parses it.
    fn receive(&mut self, kind: MediaKind, to: SocketAddr, packet: Forwarded) {
        let (rtp_port, rtp, reports) = match kind {
            MediaKind::Video => (VIDEO_TARGET, &mut self.video, &mut self.video_reports),
            MediaKind::Audio => (AUDIO_TARGET, &mut self.audio, &mut self.audio_reports),
        };
        match packet {
            Forwarded::Rtp(packet) => {
                assert_eq!(to, rtp_port, "RTP to the kind's target");
                let mut wire: BytesMut = packet.marshal().expect("marshal forwarded RTP");
                rtp.push(rtc::rtp::Packet::unmarshal(&mut wire).expect("forwarded RTP"));
            }
            Forwarded::Rtcp(bytes) => {
                assert_eq!(to.port(), rtp_port.port() + 1, "RTCP to the next port");
                let mut wire = bytes;
                reports.push(SenderReport::unmarshal(&mut wire).expect("a Sender Report"));
            }
        }
    }
}

impl Sim {
    /// The publisher says RTCP BYE for `sources`, at `now`.
    pub(super) fn send_goodbye(&mut self, sources: Vec<u32>) {
        let bye = rtc::rtcp::goodbye::Goodbye {
            sources,
            reason: Bytes::from_static(b"closing"),
        };
        self.send_rtcp(Box::new(bye));
    }

    /// The publisher sends its own Sender Report for its video stream, at `now`: the video
    /// track's latest timestamp at NTP time `ntp_time`.
    pub(super) fn send_video_report(&mut self, ntp_time: u64) {
        let report = SenderReport {
            ssrc: self.publisher.video.ssrc,
            ntp_time,
            rtp_time: self.publisher.video.timestamp,
            ..SenderReport::default()
        };
        self.send_rtcp(Box::new(report));
    }

    fn send_rtcp(&mut self, packet: Box<dyn rtc::rtcp::Packet>) {
        self.publisher.write_rtcp(self.now, packet);
        self.exchange();
    }
}
