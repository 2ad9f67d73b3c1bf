//! Builds one receive-only, ICE-lite peer connection for a publish.
//!
//! The media engine holds exactly the codecs chosen from the offer (with the publisher's payload
//! types and fmtp), so the answer keeps one video and one audio codec. Interceptors are only
//! what a receiver needs: receiver reports, a NACK generator, TWCC feedback so that browsers
//! ramp up to their target bitrate, and a tap passing Sender Reports on for A/V sync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCryptoProvider;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::{NackGeneratorBuilder, ReceiverReportBuilder, Registry, Slot};
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_HEVC, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
    MediaEngine,
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
pub(crate) struct PeerFactory {
    certificate: RTCCertificate,
    crypto: Arc<dyn RTCCryptoProvider>,
    candidates: Vec<SocketAddr>,
    tcp_candidates: Vec<SocketAddr>,
    ice_disconnected: Duration,
    ice_failed: Duration,
}

/// A new peer connection and its answer.
pub(crate) struct Negotiated {
    pub(crate) peer: RTCPeerConnection,
    pub(crate) answer_sdp: String,
    /// Our ICE ufrag (webrtc-rs generates the credentials, fresh again on an ICE restart).
    pub(crate) ufrag: String,
    /// Our ICE pwd: the key publishers' connectivity checks are signed with.
    pub(crate) pwd: String,
}

/// The `a=ice-ufrag` and `a=ice-pwd` values of an SDP or SDP fragment (first of each).
pub(crate) fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

impl PeerFactory {
    pub(crate) fn new(
        candidates: Vec<SocketAddr>,
        tcp_candidates: Vec<SocketAddr>,
        media_timeout: Duration,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let provider = rtc::crypto::default_provider()?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["whipgate".to_owned()])?,
        )?;
        Ok(PeerFactory {
            certificate,
            crypto: provider,
            candidates,
            tcp_candidates,
            // Publishers send consent checks every ~5 s (RFC 7675) and consent lasts 30 s:
            // a shorter ICE-lite timeout flaps to "disconnected" between two checks. Vanished
            // publishers are caught sooner by the media timeout anyway.
            ice_disconnected: Duration::from_secs(15),
            ice_failed: media_timeout.max(Duration::from_secs(30)),
        })
    }

    /// The crypto provider (the mux verifies connectivity checks with it).
    pub(crate) fn crypto(&self) -> Arc<dyn RTCCryptoProvider> {
        Arc::clone(&self.crypto)
    }

    /// The address ICE sees as "local" for every datagram: the first advertised candidate.
    /// The shared socket may be bound to a wildcard or sit behind NAT 1:1, so the real
    /// destination address is not known per packet; using one fixed candidate keeps ICE's
    /// local-candidate lookup consistent.
    pub(crate) fn ice_local_addr(&self, tcp: bool) -> SocketAddr {
        match self.tcp_candidates.first() {
            Some(addr) if tcp => *addr,
            _ => self.candidates[0],
        }
    }

    /// Builds the peer connection at `now`, applies the offer and produces the answer.
    pub(crate) fn negotiate(
        &self,
        offer_sdp: String,
        plan: &OfferPlan,
        now: Instant,
    ) -> rtc::shared::error::Result<Negotiated> {
        let mut media = MediaEngine::default();
        if let Some(video) = &plan.video {
            media.register_codec(video_parameters(video), RtpCodecKind::Video)?;
        }
        if let Some(audio) = &plan.audio {
            media.register_codec(audio_parameters(audio), RtpCodecKind::Audio)?;
        }
        // mid / rid / repaired-rid header extensions: simulcast layers are told apart by RID.
        configure_simulcast_extension_headers(&mut media)?;
        let interceptors = Registry::new()
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(
                Slot::from(super::rtcp::SLOT),
                super::rtcp::SenderReportTap::default(),
            );
        let interceptors = configure_twcc_receiver_only(interceptors, &mut media)?;

        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_ice_timeouts(Some(self.ice_disconnected), Some(self.ice_failed), None)
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
        let offer = RTCSessionDescription::offer(without_candidates(&offer_sdp))?;
        peer.set_remote_description(now, offer)?;
        let udp = self
            .candidates
            .iter()
            .map(|a| (a, "udp", TcpType::Unspecified));
        let tcp = self
            .tcp_candidates
            .iter()
            .map(|a| (a, "tcp", TcpType::Passive));
        for (addr, network, tcp_type) in udp.chain(tcp) {
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
            peer.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        }
        peer.add_local_candidate(RTCIceCandidateInit::default())?;
        let answer = peer.create_answer(None)?;
        peer.set_local_description(now, answer)?;
        let answer_sdp = peer
            .local_description()
            .map(|d| d.sdp)
            .ok_or(rtc::shared::error::Error::ErrPeerConnLocalDescriptionNil)?;
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

/// The offer without its candidates. An ICE-lite agent never sends checks while controlled,
/// but rtc-ice sends them to every remote candidate once a role conflict makes it controlling
/// (`contact_candidates` of its controlling selector): with no candidates from the offer it
/// only knows the addresses that authenticated checks came from (peer-reflexive ones), so an
/// offer cannot aim it at a third party.
pub(crate) fn without_candidates(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.starts_with("a=candidate:") || trimmed == "a=end-of-candidates" {
            continue;
        }
        out.push_str(trimmed);
        out.push_str("\r\n");
    }
    out
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
