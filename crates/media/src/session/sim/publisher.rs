//! The simulated publisher: a webrtc-rs peer connection as a browser offers it (sendonly
//! H264 and Opus, transport-wide sequence numbers), with no other interceptors of its own (it
//! neither answers NACKs nor sends reports) but one that hands it every RTCP packet the
//! gateway sends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry as Interceptors, Slot};
use rtc::interceptor::{StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MediaEngine,
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
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;

use super::PUBLISHER;
use crate::peer::ice_credentials;

/// The publisher's payload types.
pub(in crate::session) const VIDEO_PT: u8 = 102;
pub(in crate::session) const AUDIO_PT: u8 = 111;
/// RTX for `VIDEO_PT` and RED for `AUDIO_PT`, when the publisher offers them.
pub(in crate::session) const RTX_PT: u8 = 103;
pub(in crate::session) const RED_PT: u8 = 63;
/// The SSRC of the video's RTX stream.
const RTX_SSRC: u32 = 0x1111_2222;

/// Marks every inbound RTCP packet for the application: the test publisher looks at what
/// the gateway sends it (NACKs, receiver reports, PLIs).
#[derive(Default)]
struct DeliverRtcp {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// SSRC, payload type and sequence number for the next RTP packet written: how the test
    /// sends on its RTX stream (webrtc-rs's sender writes only on a track's media SSRC).
    rewrite: Arc<Mutex<Option<(u32, u8, u16)>>>,
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
    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(packet) = &mut msg.message.packet
            && let Some((ssrc, payload_type, seq)) = self.rewrite.lock().expect("lock").take()
        {
            packet.header.ssrc = ssrc;
            packet.header.payload_type = payload_type;
            packet.header.sequence_number = seq;
        }
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

/// What the publisher does for ICE consent (RFC 7675) once connected.
pub(in crate::session) enum Consent {
    /// As browsers and libdatachannel: a check on the selected pair every 2 s, and its pair
    /// disconnected and failed when nothing comes back (webrtc-rs's defaults).
    Checks,
    /// As FFmpeg's WHIP muxer: no STUN at all once connected, and it never gives up itself.
    None,
}

/// One of the publisher's outgoing streams.
pub(in crate::session) struct Track {
    sender: RTCRtpSenderId,
    pub(in crate::session) ssrc: u32,
    /// The sequence number of the next packet.
    pub(in crate::session) seq: u16,
    /// The timestamp of the latest packet.
    pub(in crate::session) timestamp: u32,
}

/// The publisher: a webrtc-rs peer connection as a browser would offer it (no interceptors
/// of its own, so it neither answers NACKs nor sends reports).
pub(in crate::session) struct Publisher {
    pub(in crate::session) peer: RTCPeerConnection,
    pub(in crate::session) video: Track,
    pub(in crate::session) audio: Track,
    /// RTCP from the gateway, and when it arrived.
    pub(in crate::session) rtcp: Vec<(Instant, Box<dyn rtc::rtcp::Packet>)>,
    pub(in crate::session) connected: bool,
    /// See [`DeliverRtcp::rewrite`].
    rewrite: Arc<Mutex<Option<(u32, u8, u16)>>>,
    /// The sequence number of the next RTX packet.
    rtx_seq: u16,
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
    pub(in crate::session) fn new(
        now: Instant,
        consent: Consent,
        repair: bool,
    ) -> (Publisher, String) {
        let mut media = MediaEngine::default();
        let mut codecs = vec![
            (video_codec(), VIDEO_PT, RtpCodecKind::Video),
            (audio_codec(), AUDIO_PT, RtpCodecKind::Audio),
        ];
        if repair {
            codecs.push((
                codec(MIME_TYPE_RTX, 90_000, 0, &format!("apt={VIDEO_PT}")),
                RTX_PT,
                RtpCodecKind::Video,
            ));
            codecs.push((
                codec("audio/red", 48_000, 2, &format!("{AUDIO_PT}/{AUDIO_PT}")),
                RED_PT,
                RtpCodecKind::Audio,
            ));
        }
        for (codec, payload_type, kind) in codecs {
            let parameters = RTCRtpCodecParameters {
                rtp_codec: codec,
                payload_type,
            };
            media.register_codec(parameters, kind).expect("codec");
        }
        // Transport-wide sequence numbers on every packet, as browsers send them.
        let rewrite = Arc::new(Mutex::new(None));
        let deliver = DeliverRtcp {
            rewrite: Arc::clone(&rewrite),
            ..DeliverRtcp::default()
        };
        let interceptors = Interceptors::new().with(Slot::from(11_500), deliver);
        let interceptors =
            configure_twcc_sender_only(interceptors, &mut media).expect("TWCC sender");
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
            .with_setting_engine({
                let settings = SettingEngineBuilder::new()
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
                match consent {
                    Consent::Checks => settings,
                    // Zero turns each off: no keepalive checks, no disconnected or failed state.
                    Consent::None => settings.with_ice_timeouts(
                        Some(Duration::ZERO),
                        Some(Duration::ZERO),
                        Some(Duration::ZERO),
                    ),
                }
                .build()
            })
            .with_interceptor_registry(interceptors)
            .build(now)
            .expect("publisher peer");
        let mut track = |kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec, rtx: Option<u32>| {
            let track = MediaStreamTrack::new(
                "publisher".to_owned(),
                format!("{kind}"),
                format!("{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        rtx: rtx.map(|ssrc| RTCRtpRtxParameters { ssrc }),
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
        let rtx = repair.then_some(RTX_SSRC);
        let video = track(RtpCodecKind::Video, 0x1111_1111, video_codec(), rtx);
        let audio = track(RtpCodecKind::Audio, 0x2222_2222, audio_codec(), None);
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
            rewrite,
            rtx_seq: 7_000,
        };
        (publisher, sdp)
    }

    /// Handles what arrived: connection state, RTCP.
    pub(in crate::session) fn drain(&mut self, now: Instant) {
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
    pub(in crate::session) fn received<T: 'static + Clone>(&self) -> Vec<(Instant, T)> {
        self.rtcp
            .iter()
            .filter_map(|(at, p)| p.as_any().downcast_ref::<T>().map(|t| (*at, t.clone())))
            .collect()
    }
}

impl Publisher {
    /// Sends one video packet of `size` payload bytes (an H264 IDR or non-IDR slice) with
    /// the video track's next sequence number, at `now`; returns that number.
    pub(in crate::session) fn send_video(
        &mut self,
        now: Instant,
        size: usize,
        keyframe: bool,
    ) -> u16 {
        let mut payload = vec![0xab; size.max(2)];
        payload[0] = if keyframe { 0x65 } else { 0x41 };
        let seq = self.video.seq;
        self.video.seq = seq.wrapping_add(1);
        // 20 ms on the 90 kHz clock: the pace of every test.
        self.video.timestamp = self.video.timestamp.wrapping_add(1_800);
        self.write_rtp(now, true, seq, payload.into());
        seq
    }

    /// Sends one 20 ms audio packet at `now`.
    pub(in crate::session) fn send_audio(&mut self, now: Instant) {
        let seq = self.audio.seq;
        self.audio.seq = seq.wrapping_add(1);
        self.audio.timestamp = self.audio.timestamp.wrapping_add(960);
        self.write_rtp(now, false, seq, Bytes::from_static(&[0xfc; 80]));
    }

    /// Sends one video access unit at `now`: one packet per payload, in order, all with the
    /// next timestamp and the marker bit on the last only; returns their sequence numbers.
    pub(in crate::session) fn send_access_unit(
        &mut self,
        now: Instant,
        payloads: &[Bytes],
    ) -> Vec<u16> {
        self.video.timestamp = self.video.timestamp.wrapping_add(1_800);
        let last = payloads.len().saturating_sub(1);
        let mut sent = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            let seq = self.video.seq;
            self.video.seq = seq.wrapping_add(1);
            self.write_rtp_marked(now, true, seq, i == last, payload.clone());
            sent.push(seq);
        }
        sent
    }

    /// Sends RTP packet `seq` of the video (or audio) track at `now`, with the track's
    /// latest timestamp.
    pub(in crate::session) fn write_rtp(
        &mut self,
        now: Instant,
        video: bool,
        seq: u16,
        payload: Bytes,
    ) {
        self.write_rtp_marked(now, video, seq, true, payload);
    }

    /// [`Publisher::write_rtp`] with the marker bit as given.
    fn write_rtp_marked(
        &mut self,
        now: Instant,
        video: bool,
        seq: u16,
        marker: bool,
        payload: Bytes,
    ) {
        let (track, payload_type) = if video {
            (&self.video, VIDEO_PT)
        } else {
            (&self.audio, AUDIO_PT)
        };
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                timestamp: track.timestamp,
                ssrc: track.ssrc,
                marker,
                ..Default::default()
            },
            payload,
        };
        let mut sender = self.peer.rtp_sender(track.sender).expect("sender");
        sender.write_rtp(now, packet).expect("write RTP");
    }

    /// Sends video packet `osn` again on the RTX stream (RFC 4588: the original sequence
    /// number, then the payload), with the RTX stream's next sequence number, at `now`. An
    /// empty `payload` and no `osn` make a padding-only probe.
    pub(in crate::session) fn send_rtx(&mut self, now: Instant, osn: Option<u16>, payload: &[u8]) {
        let seq = self.rtx_seq;
        self.rtx_seq = seq.wrapping_add(1);
        *self.rewrite.lock().expect("lock") = Some((RTX_SSRC, RTX_PT, seq));
        let body: Vec<u8> = match osn {
            Some(osn) => osn.to_be_bytes().iter().chain(payload).copied().collect(),
            None => Vec::new(),
        };
        let track = &self.video;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                padding: osn.is_none(),
                payload_type: VIDEO_PT,
                sequence_number: seq,
                timestamp: track.timestamp,
                ssrc: track.ssrc,
                ..Default::default()
            },
            payload: body.into(),
        };
        let mut sender = self.peer.rtp_sender(track.sender).expect("sender");
        sender.write_rtp(now, packet).expect("write RTX");
    }

    /// Sends one 20 ms audio packet as RED (RFC 2198) at `now`: `payload` as the primary and
    /// `redundant` (timestamp offset, frame; oldest first) before it.
    pub(in crate::session) fn send_red(
        &mut self,
        now: Instant,
        redundant: &[(u16, &[u8])],
        payload: &[u8],
    ) -> (u16, u32) {
        let seq = self.audio.seq;
        self.audio.seq = seq.wrapping_add(1);
        self.audio.timestamp = self.audio.timestamp.wrapping_add(960);
        let mut body = Vec::new();
        for (offset, frame) in redundant {
            let len = frame.len();
            body.push(0x80 | AUDIO_PT);
            body.push((offset >> 6) as u8);
            body.push((((offset & 0x3f) << 2) as u8) | ((len >> 8) as u8 & 0x03));
            body.push((len & 0xff) as u8);
        }
        body.push(AUDIO_PT);
        for (_, frame) in redundant {
            body.extend_from_slice(frame);
        }
        body.extend_from_slice(payload);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: RED_PT,
                sequence_number: seq,
                timestamp: self.audio.timestamp,
                ssrc: self.audio.ssrc,
                marker: false,
                ..Default::default()
            },
            payload: body.into(),
        };
        let mut sender = self.peer.rtp_sender(self.audio.sender).expect("sender");
        sender.write_rtp(now, packet).expect("write RED");
        (seq, self.audio.timestamp)
    }

    /// Sends an RTCP packet at `now`.
    pub(in crate::session) fn write_rtcp(
        &mut self,
        now: Instant,
        packet: Box<dyn rtc::rtcp::Packet>,
    ) {
        let mut sender = self.peer.rtp_sender(self.video.sender).expect("sender");
        sender.write_rtcp(now, vec![packet]).expect("write RTCP");
    }
}

impl Publisher {
    /// Restarts ICE at `now`: a new offer with fresh credentials, whose ufrag and pwd go to
    /// the gateway in a trickle-ice-sdpfrag (the WHIP PATCH body).
    pub(in crate::session) fn restart_ice(&mut self, now: Instant) -> String {
        self.peer.restart_ice();
        let offer = self.peer.create_offer(None).expect("restart offer");
        self.peer
            .set_local_description(now, offer)
            .expect("local description");
        let local = self.peer.local_description().expect("offer").sdp;
        let (ufrag, pwd) = ice_credentials(&local).expect("new credentials");
        format!(
            "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        )
    }

    /// Applies the gateway's answer fragment to the remote description, at `now`.
    pub(in crate::session) fn apply_restart(&mut self, now: Instant, fragment: &str) {
        let (ufrag, pwd) = ice_credentials(fragment).expect("gateway credentials");
        let remote = self.peer.remote_description().expect("answer").sdp.clone();
        let answer: String = remote
            .lines()
            .map(|l| {
                if l.starts_with("a=ice-ufrag:") {
                    format!("a=ice-ufrag:{ufrag}\r\n")
                } else if l.starts_with("a=ice-pwd:") {
                    format!("a=ice-pwd:{pwd}\r\n")
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect();
        let answer = RTCSessionDescription::answer(answer).expect("answer");
        self.peer
            .set_remote_description(now, answer)
            .expect("restarted answer");
    }
}
