//! The offer of a generated publisher, from a sans-IO `rtc` peer connection: H264 or VP8 and
//! Opus, NACK/PLI/FIR feedback, one host candidate, no interceptors. The lean path keeps only
//! the offer; `--full-rtc` keeps the peer connection for everything.

use std::net::SocketAddr;
use std::time::Instant;

use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};

use super::{MediaPlan, VideoCodec};

/// The video payload type offered.
pub(super) const VIDEO_PT: u8 = 102;
/// The audio payload type offered.
pub(super) const AUDIO_PT: u8 = 111;

/// A peer connection with a video track (and an audio track) of the given SSRCs, its local
/// description set: the connection, the senders (video, audio) and the offer SDP.
pub(super) fn peer_connection(
    index: u32,
    local: SocketAddr,
    plan: MediaPlan,
    certificate: &RTCCertificate,
    ssrcs: [Option<u32>; 2],
    now: Instant,
) -> rtc::shared::error::Result<(RTCPeerConnection, [Option<RTCRtpSenderId>; 2], String)> {
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: video_codec(plan.codec),
            payload_type: VIDEO_PT,
        },
        RtpCodecKind::Video,
    )?;
    if plan.audio {
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: audio_codec(),
                payload_type: AUDIO_PT,
            },
            RtpCodecKind::Audio,
        )?;
    }
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let mut peer = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![certificate.clone()])
                .build(),
        )
        .with_media_engine(media)
        .with_setting_engine(settings)
        // No interceptors: no per-packet bookkeeping, no report timers.
        .with_interceptor_registry(Registry::new())
        .build(now)?;
    let [video_ssrc, audio_ssrc] = ssrcs;
    let video = match video_ssrc {
        Some(ssrc) => Some(peer.add_track(track(
            RtpCodecKind::Video,
            index,
            ssrc,
            video_codec(plan.codec),
        ))?),
        None => None,
    };
    let audio = match audio_ssrc {
        Some(ssrc) => {
            Some(peer.add_track(track(RtpCodecKind::Audio, index, ssrc, audio_codec()))?)
        }
        None => None,
    };
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    peer.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    let offer = peer.create_offer(None)?;
    peer.set_local_description(now, offer)?;
    let sdp = peer
        .local_description()
        .map(|d| d.sdp)
        .ok_or(rtc::shared::error::Error::ErrNoRemoteDescription)?;
    Ok((peer, [video, audio], sdp))
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, video: bool) -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: fmtp.to_owned(),
        rtcp_feedback: if video {
            vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")]
        } else {
            Vec::new()
        },
    }
}

fn video_codec(c: VideoCodec) -> RTCRtpCodec {
    match c {
        VideoCodec::H264 => codec(
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            true,
        ),
        VideoCodec::Vp8 => codec(MIME_TYPE_VP8, 90_000, 0, "", true),
    }
}

fn audio_codec() -> RTCRtpCodec {
    codec(
        MIME_TYPE_OPUS,
        48_000,
        2,
        "minptime=10;useinbandfec=1",
        false,
    )
}

fn track(kind: RtpCodecKind, index: u32, ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        format!("whipgate-load-{index}"),
        format!("{kind}-{index}"),
        format!("{kind}-{index}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}
