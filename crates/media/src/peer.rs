//! Builds one receive-only, ICE-lite peer connection for a publish.
//!
//! The media engine holds exactly the codecs chosen from the offer (with the publisher's payload
//! types and fmtp), so the answer keeps one video and one audio codec, plus RTX for the video
//! and RED for the Opus when the publisher offers them (`codec::OfferPlan`). Interceptors are
//! only what a receiver needs: receiver reports, TWCC feedback so that browsers ramp up to
//! their target bitrate, and a tap passing Sender Reports on for A/V sync. NACKs come from the
//! session (`repair`), which sees retransmissions after RTX is unwrapped.

mod rtcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCryptoProvider;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{ReceiverReportBuilder, Registry, Slot};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_HEVC, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
    MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind, TYPE_RTCP_FB_NACK,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::codec::{AudioCodec, Chosen, OfferPlan, VideoCodec};

/// Gateway-wide ingredients shared by every session: one DTLS certificate (no key generation
/// per publish) and the candidates to advertise.
pub struct PeerFactory {
    certificate: RTCCertificate,
    crypto: Arc<dyn RTCCryptoProvider>,
    candidates: Vec<SocketAddr>,
    tcp_candidates: Vec<SocketAddr>,
    /// `candidates` and `tcp_candidates` as webrtc-rs takes them, built once.
    local_candidates: Vec<RTCIceCandidateInit>,
}

/// A new peer connection and its answer.
pub struct Negotiated {
    pub peer: RTCPeerConnection,
    pub answer_sdp: String,
    /// Our ICE ufrag (webrtc-rs generates the credentials, fresh again on an ICE restart).
    pub ufrag: String,
    /// Our ICE pwd: the key publishers' connectivity checks are signed with.
    pub pwd: String,
}

/// The `a=ice-ufrag` and `a=ice-pwd` values of an SDP or SDP fragment (first of each).
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

impl PeerFactory {
    pub fn new(
        candidates: Vec<SocketAddr>,
        tcp_candidates: Vec<SocketAddr>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let provider = rtc::crypto::default_provider()?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["whipgate".to_owned()])?,
        )?;
        let udp = candidates.iter().map(|a| (a, "udp", TcpType::Unspecified));
        let tcp = tcp_candidates.iter().map(|a| (a, "tcp", TcpType::Passive));
        let local_candidates = udp
            .chain(tcp)
            .map(|(addr, network, tcp_type)| {
                let candidate = CandidateHostConfig {
                    base_config: CandidateConfig {
                        network: network.to_owned(),
                        address: addr.ip().to_string(),
                        port: addr.port(),
                        component: 1,
                        ..Default::default()
                    },
                    tcp_type,
                }
                .new_candidate_host()?;
                RTCIceCandidate::from(&candidate).to_json()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PeerFactory {
            certificate,
            crypto: provider,
            candidates,
            tcp_candidates,
            local_candidates,
        })
    }

    /// The crypto provider (the mux verifies connectivity checks with it).
    pub fn crypto(&self) -> Arc<dyn RTCCryptoProvider> {
        Arc::clone(&self.crypto)
    }

    /// The address ICE sees as "local" for every datagram: the first advertised candidate.
    /// The shared socket may be bound to a wildcard or sit behind NAT 1:1, so the real
    /// destination address is not known per packet; using one fixed candidate keeps ICE's
    /// local-candidate lookup consistent.
    pub fn ice_local_addr(&self, tcp: bool) -> SocketAddr {
        match self.tcp_candidates.first() {
            Some(addr) if tcp => *addr,
            _ => self.candidates[0],
        }
    }

    /// Builds the peer connection at `now`, applies the offer and produces the answer.
    pub fn negotiate(
        &self,
        offer_sdp: String,
        plan: &OfferPlan,
        now: Instant,
    ) -> rtc::shared::error::Result<Negotiated> {
        let mut media = MediaEngine::default();
        if let Some(video) = &plan.video {
            media.register_codec(video_parameters(video), RtpCodecKind::Video)?;
            if let Some(rtx) = plan.video_rtx {
                media.register_codec(rtx_parameters(video, rtx), RtpCodecKind::Video)?;
            }
        }
        if let Some(audio) = &plan.audio {
            // RED first: a browser sends RED only when the answer puts it before Opus.
            if let Some(red) = plan.audio_red {
                media.register_codec(red_parameters(audio, red), RtpCodecKind::Audio)?;
            }
            media.register_codec(audio_parameters(audio), RtpCodecKind::Audio)?;
        }
        // mid / rid / repaired-rid header extensions: simulcast layers are told apart by RID.
        configure_simulcast_extension_headers(&mut media)?;
        // No NACK generator: the session asks for lost packets itself (`repair`), as it sees
        // retransmissions only after RTX is unwrapped, and knows when to give a hole up.
        let interceptors = Registry::new()
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(Slot::from(rtcp::SLOT), rtcp::SenderReportTap::default());
        let interceptors = configure_twcc_receiver_only(interceptors, &mut media)?;

        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_answering_dtls_role(answering_dtls_role(&offer_sdp))
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // No ICE "disconnected" or "failed" (zero turns them off). rtc-ice judges the pair
            // by the STUN it receives only (media bypasses the agent), and FFmpeg's WHIP muxer
            // sends no consent checks once connected: its session would fail 45 s in while
            // its media flows. A vanished publisher is ended by the media timeout (housekeeping),
            // which always came before ICE's 15 s + max(media timeout, 30 s) anyway. An
            // ICE-lite agent sends no consent checks of its own (RFC 7675 section 4).
            .with_ice_timeouts(Some(Duration::ZERO), Some(Duration::ZERO), None)
            // SRTP's replay window as libwebrtc's (1024, the window loss repair keeps too). With
            // the default 64, a retransmission on the media SSRC (a publisher without RTX: OBS,
            // FFmpeg) arriving more than 64 packets behind the newest was refused as a replay:
            // half a keyframe at 720p.
            .with_srtp_replay_protection_window(usize::from(crate::repair::WINDOW))
            .build();
        let config = RTCConfigurationBuilder::new()
            .with_certificates(vec![self.certificate.clone()])
            .build();
        let mut peer = RTCPeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(interceptors)
            .build(now)?;

        for (present, kind) in [
            (plan.video.is_some(), RtpCodecKind::Video),
            (plan.audio.is_some(), RtpCodecKind::Audio),
        ] {
            if present {
                peer.add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )?;
            }
        }
        let offer = RTCSessionDescription::offer(offer_for_rtc(&offer_sdp, plan))?;
        peer.set_remote_description(now, offer)?;
        for candidate in &self.local_candidates {
            peer.add_local_candidate(candidate.clone())?;
        }
        peer.add_local_candidate(RTCIceCandidateInit::default())?;
        // The answer already carries the candidates (gathering is complete): its text is what
        // `local_description()` would give, without parsing and marshalling it once more.
        let answer = peer.create_answer(None)?;
        let answer_sdp = answer.sdp.clone();
        peer.set_local_description(now, answer)?;
        let (ufrag, pwd) = ice_credentials(&answer_sdp)
            .ok_or(rtc::shared::error::Error::ErrSessionDescriptionMissingIceUfrag)?;
        Ok(Negotiated {
            peer,
            answer_sdp,
            ufrag,
            pwd,
        })
    }
}

/// Our DTLS role: the server (`a=setup:passive`), unless the publisher offers to be the server
/// itself (`a=setup:passive`, as FFmpeg's WHIP muxer does): then the client (`active`), as
/// RFC 8842 section 5.3 requires of the answer.
fn answering_dtls_role(offer: &str) -> RTCDtlsRole {
    let passive = offer
        .lines()
        .any(|l| l.trim_end_matches('\r').trim() == "a=setup:passive");
    if passive {
        RTCDtlsRole::Client
    } else {
        RTCDtlsRole::Server
    }
}

/// The offer as webrtc-rs gets it: without its candidates, and with only the chosen codec in
/// each audio and video section.
///
/// Candidates: an ICE-lite agent never sends checks while controlled, but rtc-ice sends them
/// to every remote candidate once a role conflict makes it controlling (`contact_candidates`
/// of its controlling selector): with no candidates from the offer it only knows the addresses
/// that authenticated checks came from (peer-reflexive ones), so an offer cannot aim it at a
/// third party.
///
/// Codecs: the media engine holds only the chosen codecs (and their RTX and RED), so the answer
/// is the same either way,
/// but rtc parses every payload type's rtpmap, fmtp and rtcp-fb lines of the offer several
/// times while matching them (two thirds of a negotiation's CPU for a browser's offer of a
/// dozen codecs). A section whose format list lacks the chosen payload type is left whole.
pub fn offer_for_rtc(sdp: &str, plan: &OfferPlan) -> String {
    let mut out = String::with_capacity(sdp.len());
    // The payload types kept in the current media section, when it is pruned.
    let mut keep: Vec<u8> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if let Some(media) = line.strip_prefix("m=") {
            let (chosen, repair) = match media.split(' ').next() {
                Some("video") => (plan.video.as_ref().map(|c| c.payload_type), plan.video_rtx),
                Some("audio") => (plan.audio.as_ref().map(|c| c.payload_type), plan.audio_red),
                _ => (None, None),
            };
            let fields: Vec<&str> = media.split(' ').collect();
            let offered =
                |pt: &u8| fields.len() > 3 && fields[3..].iter().any(|f| f.parse() == Ok(*pt));
            // RED goes before Opus: rtc answers in the offer's order, and a browser sends RED
            // only when the answer lists it first. RTX follows its codec.
            let red_first = media.starts_with("audio");
            keep = match (chosen.filter(offered), repair.filter(offered)) {
                (Some(pt), Some(repair)) if red_first => vec![repair, pt],
                (Some(pt), Some(repair)) => vec![pt, repair],
                (Some(pt), None) => vec![pt],
                (None, _) => Vec::new(),
            };
            if !keep.is_empty() {
                let formats: Vec<String> = keep.iter().map(u8::to_string).collect();
                out.push_str(&format!(
                    "m={} {}\r\n",
                    fields[..3].join(" "),
                    formats.join(" ")
                ));
                continue;
            }
        } else if !keep.is_empty()
            && let Some(other) = codec_line_payload_type(line)
            && !keep.contains(&other)
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The payload type an `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line is about (`None` for
/// other lines and for `a=rtcp-fb:*`).
fn codec_line_payload_type(line: &str) -> Option<u8> {
    let rest = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
        .iter()
        .find_map(|prefix| line.strip_prefix(prefix))?;
    rest.split(' ').next()?.parse().ok()
}

fn nack_feedback() -> Vec<RTCPFeedback> {
    vec![
        RTCPFeedback {
            typ: TYPE_RTCP_FB_NACK.to_owned(),
            parameter: String::new(),
        },
        RTCPFeedback {
            typ: TYPE_RTCP_FB_NACK.to_owned(),
            parameter: "pli".to_owned(),
        },
    ]
}

fn video_parameters(chosen: &Chosen<VideoCodec>) -> RTCRtpCodecParameters {
    let mime = match chosen.codec {
        VideoCodec::H264 => MIME_TYPE_H264,
        VideoCodec::Vp8 => MIME_TYPE_VP8,
        VideoCodec::Vp9 => MIME_TYPE_VP9,
        VideoCodec::Av1 => MIME_TYPE_AV1,
        VideoCodec::H265 => MIME_TYPE_HEVC,
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: chosen.clock_rate,
            channels: 0,
            sdp_fmtp_line: chosen.fmtp.clone(),
            rtcp_feedback: nack_feedback(),
        },
        payload_type: chosen.payload_type,
    }
}

/// RTX for the chosen video codec, at the publisher's payload type.
fn rtx_parameters(chosen: &Chosen<VideoCodec>, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RTX.to_owned(),
            clock_rate: chosen.clock_rate,
            channels: 0,
            sdp_fmtp_line: format!("apt={}", chosen.payload_type),
            rtcp_feedback: Vec::new(),
        },
        payload_type,
    }
}

/// RED whose blocks are the chosen Opus, at the publisher's payload type.
fn red_parameters(chosen: &Chosen<AudioCodec>, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/red".to_owned(),
            clock_rate: chosen.clock_rate,
            channels: chosen.channels.max(1),
            sdp_fmtp_line: format!("{0}/{0}", chosen.payload_type),
            rtcp_feedback: Vec::new(),
        },
        payload_type,
    }
}

fn audio_parameters(chosen: &Chosen<AudioCodec>) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: chosen.clock_rate,
            channels: chosen.channels.max(1),
            sdp_fmtp_line: chosen.fmtp.clone(),
            rtcp_feedback: Vec::new(),
        },
        payload_type: chosen.payload_type,
    }
}

#[cfg(test)]
mod tests;
