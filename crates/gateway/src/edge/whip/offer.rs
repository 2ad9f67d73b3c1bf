//! Checks a publisher's SDP offer and picks what to answer: one video and one audio codec out
//! of what the ingest accepts, in the ingest's order of preference.

use std::io::Cursor;

use sdp::SessionDescription;
use sdp::description::media::MediaDescription;
use sdp::util::Codec;

use crate::error::Error;
use crate::registry::IngestSpec;
use whipgate_media::codec::{Chosen, OfferPlan, VideoCodec};

/// Parses and checks an offer against an ingest's accepted codecs.
pub fn plan(offer: &str, spec: &IngestSpec) -> Result<OfferPlan, Error> {
    let bad = |msg: String| Err(Error::BadRequest(msg));
    let mut reader = Cursor::new(offer.as_bytes());
    let session = match SessionDescription::unmarshal(&mut reader) {
        Ok(s) => s,
        Err(err) => return bad(format!("malformed SDP offer: {err}")),
    };
    let mut plan = OfferPlan::default();
    let (mut videos, mut audios) = (0, 0);
    for media in &session.media_descriptions {
        let kind = media.media_name.media.as_str();
        // Port 0 rejects a section, except with `a=bundle-only` (RFC 8843, which updates
        // RFC 3264 for this): an offerer with bundlePolicy max-bundle (Firefox, GStreamer
        // webrtcbin) sends every section after the first like that, as live as the first.
        if !matches!(kind, "video" | "audio")
            || (media.media_name.port.value == 0 && !media.has_attribute("bundle-only"))
        {
            continue;
        }
        if media.has_attribute("recvonly") || media.has_attribute("inactive") {
            return bad(format!(
                "the {kind} section is recvonly/inactive: a WHIP offer must send (sendonly)"
            ));
        }
        if kind == "video" {
            videos += 1;
            plan.video = pick(
                media,
                &spec.video_codecs,
                |c| c.encoding_name(),
                h264_usable,
            );
            plan.simulcast_rids = simulcast_send_rids(media);
            plan.video_rtx = plan
                .video
                .as_ref()
                .and_then(|chosen| rtx_for(media, chosen.payload_type))
                .filter(|_| plan.simulcast_rids.is_empty() && declares_rtx_streams(media));
            if plan.video.is_none() {
                return bad(unsupported(
                    media,
                    "video",
                    spec.video_codecs.iter().map(|c| c.encoding_name()),
                ));
            }
        } else {
            audios += 1;
            plan.audio = pick(
                media,
                &spec.audio_codecs,
                |c| c.encoding_name(),
                |_, _| true,
            );
            plan.audio_red = plan
                .audio
                .as_ref()
                .and_then(|chosen| red_for(media, chosen.payload_type));
            if plan.audio.is_none() {
                return bad(unsupported(
                    media,
                    "audio",
                    spec.audio_codecs.iter().map(|c| c.encoding_name()),
                ));
            }
        }
    }
    if videos > 1 || audios > 1 {
        return bad("at most one audio and one video section are supported".into());
    }
    if plan.video.is_none() && plan.audio.is_none() {
        return bad("the offer has no audio or video section".into());
    }
    Ok(plan)
}

/// The RIDs of `a=simulcast:send ...` (RFC 8853): first alternative of each stream, paused
/// (`~`) ones included, in offer order.
fn simulcast_send_rids(media: &MediaDescription) -> Vec<String> {
    let Some(Some(value)) = media.attribute("simulcast") else {
        return Vec::new();
    };
    let mut words = value.split_whitespace();
    while let Some(direction) = words.next() {
        let list = words.next().unwrap_or_default();
        if direction == "send" {
            return list
                .split(';')
                .filter_map(|stream| stream.split(',').next())
                .map(|rid| rid.trim_start_matches('~').to_owned())
                .filter(|rid| !rid.is_empty())
                .collect();
        }
    }
    Vec::new()
}

/// The offered RTX payload type that repairs `primary` (`a=fmtp:<rtx> apt=<primary>`).
fn rtx_for(media: &MediaDescription, primary: u8) -> Option<u8> {
    offered_codecs(media).into_iter().find_map(|c| {
        let apt = c
            .fmtp
            .split(';')
            .find_map(|p| p.trim().strip_prefix("apt="))
            .and_then(|v| v.trim().parse::<u8>().ok());
        (c.name.eq_ignore_ascii_case("rtx") && apt == Some(primary)).then_some(c.payload_type)
    })
}

/// Whether the section names its RTX streams (`a=ssrc-group:FID <media> <rtx>`, RFC 5576):
/// the RTX SSRC is known before its first packet only then (simulcast RTX streams, named by
/// `repaired-rtp-stream-id` instead, are not unwrapped by webrtc-rs yet).
fn declares_rtx_streams(media: &MediaDescription) -> bool {
    media
        .attributes
        .iter()
        .any(|a| a.key == "ssrc-group" && a.value.as_deref().is_some_and(|v| v.starts_with("FID ")))
}

/// The offered RED payload type whose blocks are `primary` (`a=fmtp:<red> <primary>/<primary>`).
fn red_for(media: &MediaDescription, primary: u8) -> Option<u8> {
    offered_codecs(media).into_iter().find_map(|c| {
        let blocks_are_primary = !c.fmtp.trim().is_empty()
            && c.fmtp
                .trim()
                .split('/')
                .all(|pt| pt.trim().parse::<u8>() == Ok(primary));
        (c.name.eq_ignore_ascii_case("red") && c.clock_rate == 48_000 && blocks_are_primary)
            .then_some(c.payload_type)
    })
}

/// The codecs of a section's format list, in its order.
fn offered_codecs(media: &MediaDescription) -> Vec<Codec> {
    let mut codecs = media.codecs();
    media
        .media_name
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| codecs.remove(&pt))
        .collect()
}

/// H.264 is usable only in packetization-mode 1 (what consumers depacketize).
fn h264_usable(codec: &VideoCodec, fmtp: &str) -> bool {
    *codec != VideoCodec::H264
        || fmtp
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("packetization-mode=1"))
}

/// First offered payload type of the most preferred accepted codec.
fn pick<C: Copy>(
    media: &MediaDescription,
    accepted: &[C],
    name: impl Fn(&C) -> &'static str,
    usable: impl Fn(&C, &str) -> bool,
) -> Option<Chosen<C>> {
    let codecs = media.codecs();
    let offered: Vec<_> = media
        .media_name
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| codecs.get(&pt))
        .collect();
    accepted.iter().find_map(|want| {
        offered
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name(want)) && usable(want, &c.fmtp))
            .map(|c| Chosen {
                codec: *want,
                payload_type: c.payload_type,
                clock_rate: c.clock_rate,
                channels: c.encoding_parameters.parse().unwrap_or(0),
                fmtp: c.fmtp.clone(),
            })
    })
}

fn unsupported(
    media: &MediaDescription,
    kind: &str,
    accepted: impl Iterator<Item = &'static str>,
) -> String {
    let mut offered: Vec<String> = media.codecs().into_values().map(|c| c.name).collect();
    offered.sort();
    offered.dedup();
    let accepted: Vec<_> = accepted.collect();
    format!(
        "no supported {kind} codec in the offer (offered: {}; accepted: {})",
        offered.join(", "),
        accepted.join(", ")
    )
}

#[cfg(test)]
mod tests;
