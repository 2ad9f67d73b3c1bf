//! The codecs whipgate forwards, and the consumer SDP that describes what it forwards.
//!
//! The consumer SDP is plain text for FFmpeg / GStreamer (`-protocol_whitelist file,udp,rtp`).
//! Its payload types are fixed per codec, and the media path rewrites every forwarded packet
//! to them. FFmpeg decodes only the first payload type of an `m=` line, so an ingest accepts
//! one video codec (H264) unless its registration lists more; for an ingest that lists several,
//! the registration-time SDP says so (`i=` line) and the SDP of the codec a publisher actually
//! negotiated comes with the session.

use std::fmt;
use std::net::SocketAddr;

/// Video codecs accepted from publishers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264, packetization-mode 1.
    H264,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AV1.
    Av1,
    /// H.265 / HEVC.
    H265,
}

/// Audio codecs accepted from publishers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// Opus, 48 kHz stereo.
    Opus,
}

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Video track.
    Video,
    /// Audio track.
    Audio,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MediaKind {
    /// Lower-case name, used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
    }
}

impl VideoCodec {
    /// What a registration that names no video codec accepts: H264 only (what OBS, Chrome,
    /// Safari, FFmpeg and GStreamer send), so the registration-time consumer SDP has one
    /// payload type and always decodes.
    pub const DEFAULT: &'static [VideoCodec] = &[VideoCodec::H264];

    /// Every video codec whipgate can forward.
    pub const ALL: &'static [VideoCodec] = &[
        VideoCodec::H264,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
        VideoCodec::H265,
    ];

    /// SDP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::Av1 => "AV1",
            VideoCodec::H265 => "H265",
        }
    }

    /// Payload type promised in the consumer SDP.
    pub fn consumer_payload_type(self) -> u8 {
        match self {
            VideoCodec::H264 => 96,
            VideoCodec::Vp8 => 97,
            VideoCodec::Vp9 => 98,
            VideoCodec::Av1 => 99,
            VideoCodec::H265 => 100,
        }
    }

    fn consumer_fmtp(self) -> Option<&'static str> {
        match self {
            VideoCodec::H264 => Some("packetization-mode=1"),
            _ => None,
        }
    }

    /// Parses an SDP encoding name (case-insensitive).
    pub fn from_encoding_name(name: &str) -> Option<Self> {
        VideoCodec::ALL
            .iter()
            .copied()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }
}

impl AudioCodec {
    /// Default preference when a registration names none.
    pub const DEFAULT: &'static [AudioCodec] = &[AudioCodec::Opus];

    /// SDP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
        }
    }

    /// Payload type promised in the consumer SDP.
    pub fn consumer_payload_type(self) -> u8 {
        match self {
            AudioCodec::Opus => 111,
        }
    }

    /// Parses an SDP encoding name (case-insensitive).
    pub fn from_encoding_name(name: &str) -> Option<Self> {
        name.eq_ignore_ascii_case("opus")
            .then_some(AudioCodec::Opus)
    }
}

/// One codec picked from an offer: the publisher's payload type and parameters for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen<C> {
    /// Which codec.
    pub codec: C,
    /// The publisher's payload type for it.
    pub payload_type: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    pub channels: u16,
    /// The offered `a=fmtp` line, verbatim.
    pub fmtp: String,
}

/// What to answer: at most one video and one audio codec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferPlan {
    /// Video codec to receive, if the offer sends video.
    pub video: Option<Chosen<VideoCodec>>,
    /// Audio codec to receive, if the offer sends audio.
    pub audio: Option<Chosen<AudioCodec>>,
    /// Simulcast layers (RIDs) the video section sends, in offer order; empty without simulcast.
    pub simulcast_rids: Vec<String>,
    /// The publisher's RTX (RFC 4588) payload type for the chosen video codec: negotiated
    /// when offered for it and the offer declares its RTX streams (`a=ssrc-group:FID`).
    /// Retransmissions and padding probes then travel on their own SSRC, never in the media
    /// sequence space.
    pub video_rtx: Option<u8>,
    /// The publisher's RED (RFC 2198) payload type for the chosen Opus: negotiated when
    /// offered; consumers get plain Opus, a lost packet restored from its redundant copy.
    pub audio_red: Option<u8>,
}

impl OfferPlan {
    /// Kind of a received packet, from its payload type (unique within a BUNDLE).
    pub fn kind_of(&self, payload_type: u8) -> Option<MediaKind> {
        if self
            .video
            .as_ref()
            .is_some_and(|c| c.payload_type == payload_type)
        {
            Some(MediaKind::Video)
        } else if self
            .audio
            .as_ref()
            .is_some_and(|c| c.payload_type == payload_type)
            || self.audio_red == Some(payload_type)
        {
            Some(MediaKind::Audio)
        } else {
            None
        }
    }
}

/// Builds the SDP a consumer opens to receive an ingest's forwarded media.
///
/// When several codecs are allowed, all are listed, the preferred first, and an `i=` line says
/// that the negotiated one comes with the session: FFmpeg only reads the first payload type of
/// an `m=` line, so a consumer of such an ingest opens the session's SDP instead.
pub fn consumer_sdp(
    ingest_id: &str,
    video: Option<(SocketAddr, &[VideoCodec])>,
    audio: Option<(SocketAddr, &[AudioCodec])>,
) -> String {
    let origin = video
        .map(|(addr, _)| addr)
        .or(audio.map(|(addr, _)| addr))
        .map_or_else(|| "127.0.0.1".to_owned(), |addr| addr.ip().to_string());
    let mut sdp = format!(
        "v=0\r\no=- 0 0 IN {} {origin}\r\ns=whipgate {ingest_id}\r\n",
        addr_type(&origin)
    );
    if video.is_some_and(|(_, codecs)| codecs.len() > 1) {
        sdp.push_str(SEVERAL_CODECS_NOTE);
    }
    sdp.push_str("t=0 0\r\n");
    if let Some((addr, codecs)) = video {
        let lines: Vec<_> = codecs
            .iter()
            .map(|c| {
                (
                    c.consumer_payload_type(),
                    c.encoding_name(),
                    "90000",
                    c.consumer_fmtp(),
                )
            })
            .collect();
        push_media(&mut sdp, "video", addr, &lines);
    }
    if let Some((addr, codecs)) = audio {
        let lines: Vec<_> = codecs
            .iter()
            .map(|c| {
                (
                    c.consumer_payload_type(),
                    c.encoding_name(),
                    "48000/2",
                    None,
                )
            })
            .collect();
        push_media(&mut sdp, "audio", addr, &lines);
    }
    sdp
}

/// The `i=` line of a registration-time SDP that lists several video codecs.
pub const SEVERAL_CODECS_NOTE: &str = "i=lists several video codecs: FFmpeg decodes only the \
first; open the consumer_sdp of the track_started event or of GetIngest's live session, which \
has the negotiated one\r\n";

fn addr_type(ip: &str) -> &'static str {
    if ip.contains(':') { "IP6" } else { "IP4" }
}

fn push_media(
    sdp: &mut String,
    kind: &str,
    addr: SocketAddr,
    codecs: &[(u8, &str, &str, Option<&str>)],
) {
    let pts: Vec<String> = codecs.iter().map(|(pt, ..)| pt.to_string()).collect();
    let ip = addr.ip().to_string();
    sdp.push_str(&format!(
        "m={kind} {} RTP/AVP {}\r\nc=IN {} {ip}\r\n",
        addr.port(),
        pts.join(" "),
        addr_type(&ip)
    ));
    for (pt, name, rate, fmtp) in codecs {
        sdp.push_str(&format!("a=rtpmap:{pt} {name}/{rate}\r\n"));
        if let Some(fmtp) = fmtp {
            sdp.push_str(&format!("a=fmtp:{pt} {fmtp}\r\n"));
        }
    }
    sdp.push_str("a=recvonly\r\n");
}

#[cfg(test)]
mod tests;
