//! A simulated network for one real gateway session (tests only): an in-process webrtc-rs
//! publisher (sans-IO, the offerer, with an H264 and an Opus track) negotiated against
//! `PeerFactory::negotiate`, the gateway `Session` built as `Media::publish` builds it, and
//! the datagrams between them shuttled in memory on a simulated clock. Nothing waits on a
//! real clock: when nothing is in flight, time jumps to the earliest timer of either side.
//! The only sockets are the loopback consumer targets the forwarded RTP is read from.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry as Interceptors, Slot};
use rtc::interceptor::{StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Unmarshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::batch::ForwardBatch;
use super::forward::{ForwardSockets, Forwarder};
use super::mux::{Datagram, UdpMux};
use super::observe::Observers;
use super::peer::PeerFactory;
use super::session::{Egress, Progress, Session, SessionTimers};
use super::simulcast::LayerSelector;
use crate::codec::{AudioCodec, VideoCodec};
use crate::metrics::Metrics;
use crate::registry::{Admitted, Caps, IngestSpec, Limits, Registry};

/// The publisher's (made-up) address and the gateway's advertised candidate.
pub(super) const PUBLISHER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);
const GATEWAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8189);
/// The publisher's payload types.
pub(super) const VIDEO_PT: u8 = 102;
const AUDIO_PT: u8 = 111;
/// Timer firings at one instant beyond which a side is spinning (a bug, not a simulation).
const MAX_FIRINGS_AT_ONCE: usize = 1_000;

/// Marks every inbound RTCP packet for the application: the test publisher looks at what
/// the gateway sends it (NACKs, receiver reports, PLIs).
#[derive(Default)]
struct DeliverRtcp {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverRtcp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for DeliverRtcp {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// One of the publisher's outgoing streams.
pub(super) struct Track {
    sender: RTCRtpSenderId,
    pub(super) ssrc: u32,
    /// The sequence number of the next packet.
    pub(super) seq: u16,
    timestamp: u32,
}

/// The publisher: a webrtc-rs peer connection as a browser would offer it (no interceptors
/// of its own, so it neither answers NACKs nor sends reports).
pub(super) struct Publisher {
    peer: RTCPeerConnection,
    pub(super) video: Track,
    pub(super) audio: Track,
    /// RTCP from the gateway, and when it arrived.
    pub(super) rtcp: Vec<(Instant, Box<dyn rtc::rtcp::Packet>)>,
    pub(super) connected: bool,
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str) -> RTCRtpCodec {
    let fb = |parameter: &str| RTCPFeedback {
        typ: "nack".to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: if channels == 0 {
            vec![fb(""), fb("pli")]
        } else {
            Vec::new()
        },
    }
}

fn video_codec() -> RTCRtpCodec {
    let fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
    codec(MIME_TYPE_H264, 90_000, 0, fmtp)
}

fn audio_codec() -> RTCRtpCodec {
    codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1")
}

impl Publisher {
    /// A publisher at `now` and its offer.
    fn new(now: Instant) -> (Publisher, String) {
        let mut media = MediaEngine::default();
        for (codec, payload_type, kind) in [
            (video_codec(), VIDEO_PT, RtpCodecKind::Video),
            (audio_codec(), AUDIO_PT, RtpCodecKind::Audio),
        ] {
            let parameters = RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type,
            };
            media.register_codec(parameters, kind).expect("codec");
        }
        let provider = rtc::crypto::default_provider().expect("crypto provider");
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["publisher".to_owned()]).expect("params"),
        )
        .expect("certificate");
        let mut peer = RTCPeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_certificates(vec![certificate])
                    .build(),
            )
            .with_media_engine(media)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_interceptor_registry(
                Interceptors::new().with(Slot::from(11_500), DeliverRtcp::default()),
            )
            .build(now)
            .expect("publisher peer");
        let mut track = |kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec| {
            let track = MediaStreamTrack::new(
                "publisher".to_owned(),
                format!("{kind}"),
                format!("{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            );
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            };
            let id = peer
                .add_transceiver_from_track(track, Some(init))
                .expect("transceiver");
            Track {
                sender: RTCRtpSenderId::from(id),
                ssrc,
                seq: 65_530,
                timestamp: 0,
            }
        };
        let video = track(RtpCodecKind::Video, 0x1111_1111, video_codec());
        let audio = track(RtpCodecKind::Audio, 0x2222_2222, audio_codec());
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: PUBLISHER.ip().to_string(),
                port: PUBLISHER.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("candidate");
        let candidate = RTCIceCandidate::from(&candidate).to_json().expect("json");
        peer.add_local_candidate(candidate)
            .expect("local candidate");
        let offer = peer.create_offer(None).expect("offer");
        peer.set_local_description(now, offer)
            .expect("local description");
        let sdp = peer.local_description().expect("offer sdp").sdp;
        let publisher = Publisher {
            peer,
            video,
            audio,
            rtcp: Vec::new(),
            connected: false,
        };
        (publisher, sdp)
    }

    /// Handles what arrived: connection state, RTCP.
    fn drain(&mut self, now: Instant) {
        while let Some(event) = self.peer.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                self.connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(message) = self.peer.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                self.rtcp.extend(packets.into_iter().map(|p| (now, p)));
            }
        }
    }

    /// RTCP packets of type `T` received so far, with their arrival times.
    pub(super) fn received<T: 'static + Clone>(&self) -> Vec<(Instant, T)> {
        self.rtcp
            .iter()
            .filter_map(|(at, p)| p.as_any().downcast_ref::<T>().map(|t| (*at, t.clone())))
            .collect()
    }
}

/// The consumer's side: the ingest's targets.
struct Sinks {
    video: UdpSocket,
    audio: UdpSocket,
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
    batch: ForwardBatch,
    sinks: Sinks,
    pub(super) lose: Loss,
    /// Keeps the tokio sockets of the mux and the forwarder registered.
    _runtime: tokio::runtime::Runtime,
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("loopback UDP socket")
}

impl Sim {
    /// Negotiates a publisher against a gateway session with these timers and ingest limits.
    pub(super) fn new(timers: SessionTimers, limits: Limits) -> Sim {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let tokio_socket = |socket: UdpSocket| {
            let _entered = runtime.enter();
            socket.set_nonblocking(true).expect("non-blocking");
            Arc::new(tokio::net::UdpSocket::from_std(socket).expect("tokio socket"))
        };
        let sinks = Sinks {
            video: loopback(),
            audio: loopback(),
        };
        let metrics = Arc::new(Metrics::new(false).expect("metrics"));
        let registry = Registry::new(Caps { max_publishers: 4 }, 256, Arc::clone(&metrics));
        let spec = IngestSpec {
            id: "sim".to_owned(),
            video_target: Some(sinks.video.local_addr().expect("addr")),
            audio_target: Some(sinks.audio.local_addr().expect("addr")),
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
        let (mut publisher, offer) = Publisher::new(start);
        let plan = crate::whip::plan_offer(&offer, &spec).expect("the offer plans");
        let Ok(Admitted::Session(admission, ())) = registry.admit(&spec.id, None, |_| Ok(()))
        else {
            panic!("not admitted");
        };
        let admission = *admission;
        let factory =
            PeerFactory::new(vec![GATEWAY], vec![], timers.media_timeout).expect("factory");
        let negotiated = factory.negotiate(offer, &plan, start).expect("negotiate");
        let answer = RTCSessionDescription::answer(negotiated.answer_sdp).expect("answer");
        publisher
            .peer
            .set_remote_description(start, answer)
            .expect("remote description");

        let forward = ForwardSockets {
            v4: tokio_socket(loopback()),
            v6: None,
        };
        let session = Session {
            layers: LayerSelector::new(admission.spec.simulcast_layer.clone()),
            forwarder: Forwarder::new(forward.clone(), &admission, &plan, &metrics),
            observers: Observers::new(&plan, &admission.spec, start),
            admission,
            plan,
            peer: negotiated.peer,
            egress: Egress::Held(VecDeque::new()),
            rids: Default::default(),
            ice_local: factory.ice_local_addr(false),
            ice_local_tcp: factory.ice_local_addr(true),
            mux: UdpMux::new(tokio_socket(loopback()), factory.crypto()),
            timers,
        };
        Sim {
            start,
            now: start,
            session,
            progress: Progress::new(start),
            publisher,
            registry,
            ingest: spec.id,
            batch: ForwardBatch::new(forward, &metrics),
            sinks,
            lose: Box::new(|_| false),
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
                let datagram = Datagram {
                    data: out.message,
                    from: PUBLISHER,
                    at: self.now,
                    tcp: false,
                };
                self.session.read(datagram, &mut self.progress);
                self.session.drain(&mut self.progress, &mut self.batch);
            }
            let Egress::Held(held) = &mut self.session.egress else {
                panic!("the simulated session sends on a socket");
            };
            for out in std::mem::take(held) {
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
            let session_due = self.session.next_timeout();
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
            }
        }
        self.now = self.now.max(until);
        self.exchange();
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
        let mut payload = vec![0xab; size.max(2)];
        payload[0] = if keyframe { 0x65 } else { 0x41 };
        let seq = self.publisher.video.seq;
        self.publisher.video.seq = seq.wrapping_add(1);
        self.publisher.video.timestamp = self.publisher.video.timestamp.wrapping_add(3_000);
        self.write(true, seq, payload.into());
        seq
    }

    /// Sends one 20 ms audio packet at `now`.
    pub(super) fn send_audio(&mut self) {
        let seq = self.publisher.audio.seq;
        self.publisher.audio.seq = seq.wrapping_add(1);
        self.publisher.audio.timestamp = self.publisher.audio.timestamp.wrapping_add(960);
        self.write(false, seq, Bytes::from_static(&[0xfc; 80]));
    }

    /// Sends a video packet again (a retransmission), at `now`.
    pub(super) fn resend_video(&mut self, seq: u16) {
        self.write(true, seq, Bytes::from_static(&[0x41, 0xab, 0xab]));
    }

    fn write(&mut self, video: bool, seq: u16, payload: Bytes) {
        let (track, payload_type) = if video {
            (&self.publisher.video, VIDEO_PT)
        } else {
            (&self.publisher.audio, AUDIO_PT)
        };
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                timestamp: track.timestamp,
                ssrc: track.ssrc,
                marker: true,
                ..Default::default()
            },
            payload,
        };
        let sender = track.sender;
        let mut sender = self.publisher.peer.rtp_sender(sender).expect("sender");
        sender.write_rtp(self.now, packet).expect("write RTP");
        self.exchange();
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

    /// The RTP the consumer received on the video (or audio) target so far.
    pub(super) fn forwarded(&mut self, video: bool) -> Vec<rtc::rtp::Packet> {
        let socket = if video {
            &self.sinks.video
        } else {
            &self.sinks.audio
        };
        socket.set_nonblocking(true).expect("non-blocking");
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            let mut data = BytesMut::from(&buf[..n]);
            packets.push(rtc::rtp::Packet::unmarshal(&mut data).expect("forwarded RTP"));
        }
        packets
    }
}

impl Sim {
    /// The publisher says RTCP BYE for `sources`, at `now`.
    pub(super) fn send_goodbye(&mut self, sources: Vec<u32>) {
        let bye = rtc::rtcp::goodbye::Goodbye {
            sources,
            reason: Bytes::from_static(b"closing"),
        };
        let sender = self.publisher.video.sender;
        let mut sender = self.publisher.peer.rtp_sender(sender).expect("sender");
        sender
            .write_rtcp(self.now, vec![Box::new(bye)])
            .expect("write RTCP");
        self.exchange();
    }
}
