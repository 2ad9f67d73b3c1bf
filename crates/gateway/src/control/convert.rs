//! Proto <-> domain conversions for the control plane.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::registry::{
    Caps, CountersSnapshot, EndReason, Event, EventPayload, IngestSpec, IngestView, Limits,
    RejectReason, SessionState, SessionView, validate_ingest_id,
};
use whipgate_media::codec::{AudioCodec, MediaKind, VideoCodec};
use whipgate_proto::pb;

/// Resolves a `host:port` target; empty means "not forwarded".
pub(crate) async fn target(kind: &str, value: &str) -> Result<Option<SocketAddr>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::BadRequest(format!(
            "invalid {kind}_target {value:?}: expected host:port"
        ))
    };
    let mut addrs = tokio::net::lookup_host(value)
        .await
        .map_err(|_| invalid())?;
    let addr = addrs.next().ok_or_else(invalid)?;
    if addr.port() == 0 {
        return Err(invalid());
    }
    Ok(Some(addr))
}

/// Builds a spec from a register request (targets already resolved).
pub(crate) fn spec(
    req: &pb::RegisterIngestRequest,
    video_target: Option<SocketAddr>,
    audio_target: Option<SocketAddr>,
) -> Result<IngestSpec, Error> {
    validate_ingest_id(&req.ingest_id)?;
    let mut video_codecs = codecs_from_pb(&req.video_codecs, VIDEO_CODECS, "video")?;
    let mut audio_codecs = codecs_from_pb(&req.audio_codecs, AUDIO_CODECS, "audio")?;
    if video_codecs.is_empty() {
        video_codecs = VideoCodec::DEFAULT.to_vec();
    }
    if audio_codecs.is_empty() {
        audio_codecs = AudioCodec::DEFAULT.to_vec();
    }
    Ok(IngestSpec {
        id: req.ingest_id.clone(),
        video_target,
        audio_target,
        bearer_token: Some(req.bearer_token.clone()).filter(|t| !t.is_empty()),
        labels: req
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        video_codecs,
        audio_codecs,
        limits: req.limits.map(limits).unwrap_or_default(),
        redirect_url: redirect_url(&req.redirect_url)?,
        simulcast_layer: rid(&req.simulcast_layer)?,
        replace_publisher: match pb::ConflictPolicy::try_from(req.conflict_policy) {
            Ok(pb::ConflictPolicy::Replace) => true,
            Ok(_) => false,
            Err(_) => {
                return Err(Error::BadRequest(format!(
                    "unknown conflict policy {}",
                    req.conflict_policy
                )));
            }
        },
    })
}

/// The codec <-> protobuf mapping, each pair written once and read both ways.
const VIDEO_CODECS: &[(VideoCodec, i32)] = &[
    (VideoCodec::H264, pb::VideoCodec::H264 as i32),
    (VideoCodec::Vp8, pb::VideoCodec::Vp8 as i32),
    (VideoCodec::Vp9, pb::VideoCodec::Vp9 as i32),
    (VideoCodec::Av1, pb::VideoCodec::Av1 as i32),
    (VideoCodec::H265, pb::VideoCodec::H265 as i32),
];
const AUDIO_CODECS: &[(AudioCodec, i32)] = &[(AudioCodec::Opus, pb::AudioCodec::Opus as i32)];

/// Proto codec numbers to codecs, deduplicated in order; an unknown number is an error.
fn codecs_from_pb<C: Copy + PartialEq>(
    values: &[i32],
    table: &[(C, i32)],
    kind: &str,
) -> Result<Vec<C>, Error> {
    let mut out = Vec::new();
    for &value in values {
        let codec = table
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(c, _)| *c)
            .ok_or_else(|| Error::BadRequest(format!("unknown {kind} codec {value}")))?;
        if !out.contains(&codec) {
            out.push(codec);
        }
    }
    Ok(out)
}

/// Codecs to proto codec numbers.
fn codecs_to_pb<C: PartialEq>(codecs: &[C], table: &[(C, i32)]) -> Vec<i32> {
    codecs
        .iter()
        .filter_map(|c| table.iter().find(|(t, _)| t == c).map(|(_, v)| *v))
        .collect()
}

/// A simulcast RID (RFC 8851: alphanumeric, `-`, `_`); empty means "highest".
pub(crate) fn rid(value: &str) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let ok = value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(Some(value.to_owned()))
    } else {
        Err(Error::BadRequest(format!(
            "invalid simulcast RID {value:?}"
        )))
    }
}

fn redirect_url(value: &str) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && axum::http::HeaderValue::from_str(value).is_ok()
        && value.parse::<axum::http::Uri>().is_ok();
    if ok {
        Ok(Some(value.to_owned()))
    } else {
        Err(Error::BadRequest(format!(
            "invalid redirect_url {value:?}: expected an absolute http(s) URL"
        )))
    }
}

pub(crate) fn limits(l: pb::IngestLimits) -> Limits {
    Limits {
        max_bitrate_bps: Some(l.max_bitrate_bps).filter(|v| *v > 0),
        max_session: Some(l.max_session_seconds)
            .filter(|v| *v > 0)
            .map(Duration::from_secs),
    }
}

fn limits_pb(l: Limits) -> pb::IngestLimits {
    pb::IngestLimits {
        max_bitrate_bps: l.max_bitrate_bps.unwrap_or(0),
        max_session_seconds: l.max_session.map_or(0, |d| d.as_secs()),
    }
}

pub(crate) fn caps(c: Caps) -> pb::Caps {
    pb::Caps {
        max_publishers: u32::try_from(c.max_publishers).unwrap_or(u32::MAX),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn counters(c: CountersSnapshot) -> pb::SessionCounters {
    pb::SessionCounters {
        video_packets: c.video_packets,
        video_bytes: c.video_bytes,
        audio_packets: c.audio_packets,
        audio_bytes: c.audio_bytes,
        packets_forwarded: c.packets_forwarded,
        packets_lost: c.packets_lost,
        nacks_sent: c.nacks_sent,
        plis_sent: c.plis_sent,
        keyframes: c.keyframes,
        packets_repaired: c.packets_repaired,
        packets_unrepaired: c.packets_unrepaired,
        duplicates_dropped: c.duplicates_dropped,
        red_recovered: c.red_recovered,
    }
}

pub(crate) fn session(s: &SessionView) -> pb::Session {
    pb::Session {
        session_id: s.id.to_string(),
        state: match s.state {
            SessionState::Connecting => pb::SessionState::Connecting,
            SessionState::Connected => pb::SessionState::Connected,
        } as i32,
        remote_addr: s.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
        video_codec: s.video_codec.clone().unwrap_or_default(),
        audio_codec: s.audio_codec.clone().unwrap_or_default(),
        started_at: Some(timestamp(s.started_at)),
        counters: Some(counters(s.counters)),
        simulcast_layers: s.simulcast_layers.clone(),
        forwarded_layer: s.forwarded_layer.clone().unwrap_or_default(),
        consumer_sdp: s.consumer_sdp.clone(),
        node_id: String::new(),
        facts: Some(super::facts::stream_facts(&s.facts)),
        timings: Some(pb::SessionTimings {
            connect_millis: millis(s.timings.connect),
            first_keyframe_millis: millis(s.timings.first_keyframe),
        }),
    }
}

/// Whole milliseconds, at least 1 for a time that was measured (0 means "not yet").
fn millis(d: Option<std::time::Duration>) -> u32 {
    d.map_or(0, |d| {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
    })
}

pub(crate) fn ingest(v: &IngestView) -> pb::Ingest {
    let spec = &v.spec;
    pb::Ingest {
        ingest_id: spec.id.clone(),
        video_target: spec.video_target.map(|a| a.to_string()).unwrap_or_default(),
        audio_target: spec.audio_target.map(|a| a.to_string()).unwrap_or_default(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        video_codecs: codecs_to_pb(&spec.video_codecs, VIDEO_CODECS),
        audio_codecs: codecs_to_pb(&spec.audio_codecs, AUDIO_CODECS),
        has_bearer_token: v.has_bearer_token,
        consumer_sdp: v.consumer_sdp.clone(),
        limits: Some(limits_pb(spec.limits)),
        created_at: Some(timestamp(v.created_at)),
        session: v.session.as_ref().map(session),
        redirect_url: spec.redirect_url.clone().unwrap_or_default(),
        simulcast_layer: spec.simulcast_layer.clone().unwrap_or_default(),
        conflict_policy: if spec.replace_publisher {
            pb::ConflictPolicy::Replace
        } else {
            pb::ConflictPolicy::Reject
        } as i32,
    }
}

fn reject_reason(r: RejectReason) -> pb::RejectReason {
    match r {
        RejectReason::Cap => pb::RejectReason::Cap,
        RejectReason::Conflict => pb::RejectReason::Conflict,
        RejectReason::Auth => pb::RejectReason::Auth,
        RejectReason::NotFound => pb::RejectReason::NotFound,
        RejectReason::BadSdp => pb::RejectReason::BadSdp,
        RejectReason::Draining => pb::RejectReason::Draining,
        RejectReason::Internal => pb::RejectReason::Internal,
    }
}

fn end_reason(r: EndReason) -> pb::EndReason {
    match r {
        EndReason::PublisherDelete => pb::EndReason::PublisherDelete,
        EndReason::IceFailure => pb::EndReason::IceFailure,
        EndReason::Inactivity => pb::EndReason::Inactivity,
        EndReason::Teardown => pb::EndReason::Teardown,
        EndReason::Unregister => pb::EndReason::Unregister,
        EndReason::Shutdown => pb::EndReason::Shutdown,
        EndReason::BitrateCap => pb::EndReason::BitrateCap,
        EndReason::DurationCap => pb::EndReason::DurationCap,
        EndReason::Replaced => pb::EndReason::Replaced,
        EndReason::Error => pb::EndReason::Error,
        EndReason::PublisherClose => pb::EndReason::PublisherClose,
    }
}

pub(crate) fn event(e: &Event) -> pb::Event {
    use pb::event::Payload;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let payload = match &e.payload {
        EventPayload::IngestRegistered(v) => Payload::IngestRegistered(pb::IngestRegistered {
            ingest: Some(ingest(v)),
        }),
        EventPayload::IngestUpdated(v) => Payload::IngestUpdated(pb::IngestUpdated {
            ingest: Some(ingest(v)),
        }),
        EventPayload::IngestUnregistered => Payload::IngestUnregistered(pb::IngestUnregistered {}),
        EventPayload::PublishAccepted { remote_addr } => {
            Payload::PublishAccepted(pb::PublishAccepted {
                remote_addr: remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            })
        }
        EventPayload::PublishRejected {
            reason,
            detail,
            count,
        } => Payload::PublishRejected(pb::PublishRejected {
            reason: reject_reason(*reason) as i32,
            detail: detail.clone(),
            count: *count,
        }),
        EventPayload::SessionConnected {
            remote_addr,
            connect_time,
        } => Payload::SessionConnected(pb::SessionConnected {
            remote_addr: remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            connect_millis: millis(*connect_time),
        }),
        EventPayload::TrackStarted {
            kind,
            codec,
            ssrc,
            rid,
            consumer_sdp,
        } => Payload::TrackStarted(pb::TrackStarted {
            kind: match kind {
                MediaKind::Video => pb::MediaKind::Video,
                MediaKind::Audio => pb::MediaKind::Audio,
            } as i32,
            codec: codec.clone(),
            ssrc: *ssrc,
            rid: rid.clone().unwrap_or_default(),
            consumer_sdp: consumer_sdp.clone(),
        }),
        EventPayload::SessionStats {
            bitrate_bps,
            counters: c,
            video_jitter_ms,
            facts,
        } => Payload::SessionStats(pb::SessionStats {
            bitrate_bps: *bitrate_bps,
            counters: Some(counters(*c)),
            video_jitter_ms: *video_jitter_ms,
            facts: Some(super::facts::stream_facts(facts)),
        }),
        EventPayload::StreamWarning { kind, warning } => {
            Payload::StreamWarning(super::facts::stream_warning(*kind, *warning))
        }
        EventPayload::SessionEnded {
            reason,
            detail,
            duration,
            counters: c,
        } => Payload::SessionEnded(pb::SessionEnded {
            reason: end_reason(*reason) as i32,
            detail: detail.clone(),
            duration_millis: millis(*duration),
            counters: Some(counters(*c)),
        }),
        EventPayload::CapsChanged { caps: c, limits: l } => Payload::CapsChanged(pb::CapsChanged {
            caps: Some(caps(*c)),
            limits: l.map(limits_pb),
        }),
    };
    pb::Event {
        seq: e.seq,
        epoch: e.epoch,
        at: Some(timestamp(e.at)),
        ingest_id: e.ingest_id.clone(),
        session_id: e.session_id.map(|s| s.to_string()).unwrap_or_default(),
        payload: Some(payload),
        // Stamped by whoever knows the node (the watch, the cluster publisher).
        node_id: String::new(),
    }
}

#[cfg(test)]
mod tests;
