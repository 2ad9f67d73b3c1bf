//! A simulated network for one real gateway session (tests only): an in-process webrtc-rs
//! publisher (sans-IO, the offerer, with an H264 and an Opus track) negotiated against
//! `PeerFactory::negotiate`, the gateway `Session` built as `Media::publish` builds it, and
//! the datagrams between them shuttled in memory on a simulated clock. Nothing waits on a
//! real clock: when nothing is in flight, time jumps to the earliest timer of either side.
//! The only sockets are on loopback: the consumer targets the forwarded RTP and RTCP are
//! read from, the forwarder's sending socket, and the mux's (bound, never used).

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::batch::ForwardBatch;
use super::forward::{ForwardSockets, Forwarder};
use super::mux::Datagram;
use super::observe::Observers;
use super::peer::PeerFactory;
use super::session::{Progress, Session, SessionTimers};
use super::simulcast::LayerSelector;
use crate::metrics::Metrics;
use crate::registry::{Admitted, Caps, IngestSpec, Limits, Registry};
use publisher::Publisher;
pub(super) use publisher::{AUDIO_PT, Consent, RED_PT, RTX_PT, VIDEO_PT};
use whipgate_media::codec::{AudioCodec, VideoCodec};

mod publisher;

/// The publisher's (made-up) address and the gateway's advertised candidate.
pub(super) const PUBLISHER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8189);
/// Timer firings at one instant beyond which a side is spinning (a bug, not a simulation).
const MAX_FIRINGS_AT_ONCE: usize = 1_000;

/// The consumer's side: the ingest's targets (RTP port, and RTCP port = RTP port + 1).
struct Sinks {
    video: (UdpSocket, UdpSocket),
    audio: (UdpSocket, UdpSocket),
}

/// Which of the publisher's datagrams the network loses.
pub(super) type Loss = Box<dyn FnMut(&[u8]) -> bool>;

/// A publisher and one gateway session on one simulated clock.
pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) session: Session,
    pub(super) progress: Progress,
    pub(super) publisher: Publisher,
    pub(super) registry: Registry,
    pub(super) ingest: String,
    /// The gateway's ICE ufrag from the negotiation.
    pub(super) ufrag: String,
    /// The gateway's ICE pwd (what the publisher's checks are signed with).
    pub(super) pwd: String,
    /// The publisher's ICE ufrag, from its offer.
    pub(super) publisher_ufrag: String,
    pub(super) batch: ForwardBatch,
    sinks: Sinks,
    pub(super) lose: Loss,
    /// The session's timers are not run when due (a starved worker): only `outside` work,
    /// such as housekeeping's safety net, runs them.
    pub(super) starved: bool,
    /// When the publisher's last STUN message (connectivity or consent check) arrived.
    pub(super) last_check: Instant,
    /// Keeps the tokio sockets of the mux and the forwarder registered.
    _runtime: tokio::runtime::Runtime,
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("loopback UDP socket")
}

/// Two loopback sockets on consecutive ports, as a consumer binds RTP and RTCP.
fn loopback_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..64 {
        let rtp = loopback();
        let port = rtp.local_addr().expect("addr").port();
        if let Some(rtcp) = port
            .checked_add(1)
            .and_then(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
        {
            return (rtp, rtcp);
        }
    }
    panic!("no two consecutive free loopback ports");
}

/// Everything queued on a non-blocking socket.
fn datagrams(socket: &UdpSocket) -> Vec<BytesMut> {
    socket.set_nonblocking(true).expect("non-blocking");
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(BytesMut::from(&buf[..n]));
    }
    out
}

impl Sim {
    /// Negotiates a publisher against a gateway session with these timers and ingest limits.
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let tokio_socket = |socket: UdpSocket| {
            let _entered = runtime.enter();
            socket.set_nonblocking(true).expect("non-blocking");
            tokio::net::UdpSocket::from_std(socket).expect("tokio socket")
        };
        let sinks = Sinks {
            video: loopback_pair(),
            audio: loopback_pair(),
        };
        let metrics = Arc::new(Metrics::new(false).expect("metrics"));
        let registry = Registry::new(Caps { max_publishers: 4 }, 256, Arc::clone(&metrics));
        let spec = IngestSpec {
            id: "sim".to_owned(),
            video_target: Some(sinks.video.0.local_addr().expect("addr")),
            audio_target: Some(sinks.audio.0.local_addr().expect("addr")),
            bearer_token: None,
            labels: Default::default(),
            video_codecs: vec![VideoCodec::H264],
            audio_codecs: vec![AudioCodec::Opus],
            limits,
            redirect_url: None,
            simulcast_layer: None,
            replace_publisher: false,
        };
        registry.register(spec.clone(), false).expect("register");

        let start = Instant::now();
        let (mut publisher, offer) = Publisher::new(start, consent, repair);
        let plan = crate::edge::whip::plan_offer(&offer, &spec).expect("the offer plans");
        let Ok(Admitted::Session(admission, ())) = registry.admit(&spec.id, None, |_| Ok(()))
        else {
            panic!("not admitted");
        };
        let admission = *admission;
        let factory = PeerFactory::new(vec![GATEWAY], vec![]).expect("factory");
        let (publisher_ufrag, _) =
            super::peer::ice_credentials(&offer).expect("the offer's ICE credentials");
        let negotiated = factory.negotiate(offer, &plan, start).expect("negotiate");
        let ufrag = negotiated.ufrag.clone();
        let pwd = negotiated.pwd.clone();
        let answer = RTCSessionDescription::answer(negotiated.answer_sdp).expect("answer");
        publisher
            .peer
            .set_remote_description(start, answer)
            .expect("remote description");

        let forward = ForwardSockets::new(tokio_socket(loopback()), None);
        // Tokio sends (the forwarded RTCP) only once its reactor has seen the socket writable.
        runtime
            .block_on(forward.v4.writable())
            .expect("writable forward socket");
        let session = Session {
            layers: LayerSelector::new(admission.spec.simulcast_layer.clone()),
            forwarder: Forwarder::new(forward.clone(), &admission, &plan, &metrics),
            observers: Observers::new(&plan, &admission.spec, start),
            admission,
            plan,
            peer: negotiated.peer,
            transmits: VecDeque::new(),
            reports: VecDeque::new(),
            metrics: Arc::clone(&metrics),
            limits: Default::default(),
            rids: Default::default(),
            ice_local: factory.ice_local_addr(false),
            ice_local_tcp: factory.ice_local_addr(true),
            timers,
            ufrag: ufrag.clone(),
            repair: Default::default(),
        };
        Sim {
            start,
            now: start,
            session,
            progress: Progress::new(start),
            publisher,
            registry,
            ingest: spec.id,
            ufrag,
            pwd,
            publisher_ufrag,
            batch: ForwardBatch::new(forward, &metrics),
            sinks,
            lose: Box::new(|_| false),
            starved: false,
            last_check: start,
            _runtime: runtime,
        }
    }

    /// Simulated time since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
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
                self.session.read(datagram, &mut self.progress);
                self.session.drain(&mut self.progress, &mut self.batch);
                super::report::apply_all(&mut self.session);
            }
            while let Some(out) = self.session.poll_transmit() {
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
        self.batch.flush();
    }

    /// Runs both sides up to `until`: deliveries, then each timer as it falls due.
    pub(super) fn run_until(&mut self, until: Instant) {
        let mut firings = 0;
        loop {
            self.exchange();
            let publisher_due = self.publisher.peer.poll_timeout();
            let session_due = self.session.next_timeout().filter(|_| !self.starved);
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
                self.session.handle_timeout(self.now);
                self.session.drain(&mut self.progress, &mut self.batch);
                super::report::apply_all(&mut self.session);
            }
        }
        self.now = self.now.max(until);
        self.exchange();
    }

    /// Runs `f` on the session at `now` outside input (a command, housekeeping), then sends
    /// what it produced, as `Cell::outside` does.
    pub(super) fn outside(&mut self, f: impl FnOnce(&mut Session, &mut Progress, Instant)) {
        f(&mut self.session, &mut self.progress, self.now);
        self.session.drain(&mut self.progress, &mut self.batch);
        super::report::apply_all(&mut self.session);
        self.exchange();
    }

    /// The control task's housekeeping at `now` (caps read from the registry first).
    pub(super) fn check_limits(&mut self, now: Instant) {
        super::report::refresh_limits(&mut self.session);
        self.session.check_limits(&mut self.progress, now);
        super::report::apply_all(&mut self.session);
    }

    /// The control task's statistics report for `elapsed` up to `now`.
    pub(super) fn report_stats(&mut self, elapsed: Duration, now: Instant) {
        super::report::refresh_limits(&mut self.session);
        self.session.report_stats(&mut self.progress, elapsed, now);
        super::report::apply_all(&mut self.session);
    }

    /// Runs both sides for `d` of simulated time.
    pub(super) fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs until both sides are connected (ICE, DTLS, SRTP); the simulated time it took.
    pub(super) fn connect(&mut self) -> Duration {
        let limit = self.now + Duration::from_secs(5);
        while !(self.progress.connected && self.publisher.connected) {
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
        let (socket, _) = if video {
            &self.sinks.video
        } else {
            &self.sinks.audio
        };
        datagrams(socket)
            .into_iter()
            .map(|mut d| rtc::rtp::Packet::unmarshal(&mut d).expect("forwarded RTP"))
            .collect()
    }

    /// The Sender Reports the consumer received on the video (or audio) RTCP port since the
    /// last call.
    pub(super) fn forwarded_reports(&mut self, video: bool) -> Vec<SenderReport> {
        let (_, socket) = if video {
            &self.sinks.video
        } else {
            &self.sinks.audio
        };
        datagrams(socket)
            .into_iter()
            .map(|mut d| SenderReport::unmarshal(&mut d).expect("a Sender Report"))
            .collect()
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
