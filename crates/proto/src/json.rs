//! The JSON form of control-plane messages: written once, used by `GET /events` (SSE), the
//! dashboard's snapshot (`GET /api/ingests`) and `whipgate ctl --json`.
//!
//! Enums are lower-case names without their prefix (`session_stats`, `h264`, `teardown`);
//! timestamps are RFC 3339 strings; every field is present (proto3 defaults included), so a
//! script can index without checking.

use serde_json::{Map, Value, json};

use crate::pb;

/// The lower-case name of a proto enum value without its prefix (`EVENT_KIND_SESSION_STATS`
/// -> `session_stats`); an unknown number gives its digits.
fn enum_name(full: Option<&str>, prefix: &str, number: i32) -> String {
    match full {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => number.to_string(),
    }
}

/// An event kind from its JSON name (`session_stats`) or its proto name.
pub fn event_kind_from_name(name: &str) -> Option<pb::EventKind> {
    let upper = name.trim().to_ascii_uppercase();
    pb::EventKind::from_str_name(&upper)
        .or_else(|| pb::EventKind::from_str_name(&format!("EVENT_KIND_{upper}")))
        .filter(|k| *k != pb::EventKind::Unspecified)
}

/// The JSON name of an event kind.
pub fn event_kind_name(kind: i32) -> String {
    let full = pb::EventKind::try_from(kind).ok().map(|k| k.as_str_name());
    enum_name(full, "EVENT_KIND_", kind)
}

fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn video_codec(c: i32) -> String {
    let full = pb::VideoCodec::try_from(c).ok().map(|k| k.as_str_name());
    enum_name(full, "VIDEO_CODEC_", c)
}

fn audio_codec(c: i32) -> String {
    let full = pb::AudioCodec::try_from(c).ok().map(|k| k.as_str_name());
    enum_name(full, "AUDIO_CODEC_", c)
}

/// Session counters.
pub fn counters(c: Option<&pb::SessionCounters>) -> Value {
    let c = c.cloned().unwrap_or_default();
    json!({
        "video_packets": c.video_packets,
        "video_bytes": c.video_bytes,
        "audio_packets": c.audio_packets,
        "audio_bytes": c.audio_bytes,
        "packets_forwarded": c.packets_forwarded,
        "packets_lost": c.packets_lost,
        "nacks_sent": c.nacks_sent,
        "plis_sent": c.plis_sent,
        "keyframes": c.keyframes,
        "packets_repaired": c.packets_repaired,
        "packets_unrepaired": c.packets_unrepaired,
        "duplicates_dropped": c.duplicates_dropped,
        "red_recovered": c.red_recovered,
    })
}

fn limits(l: Option<&pb::IngestLimits>) -> Value {
    let l = l.copied().unwrap_or_default();
    json!({
        "max_bitrate_bps": l.max_bitrate_bps,
        "max_session_seconds": l.max_session_seconds,
    })
}

/// What an anonymous reader (`--public-dashboard`) must not see: where media goes and how
/// to consume it, who publishes from where, and the handles that address a session.
const PRIVATE_KEYS: [&str; 6] = [
    "video_target",
    "audio_target",
    "consumer_sdp",
    "remote_addr",
    "session_id",
    "redirect_url",
];

/// Removes [`PRIVATE_KEYS`] at any depth of a JSON view (an ingest, an event).
pub fn redact_public(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in PRIVATE_KEYS {
                map.remove(key);
            }
            map.values_mut().for_each(redact_public);
        }
        Value::Array(items) => items.iter_mut().for_each(redact_public),
        _ => {}
    }
}

/// Global caps.
pub fn caps(c: Option<&pb::Caps>) -> Value {
    json!({ "max_publishers": c.map_or(0, |c| c.max_publishers) })
}

/// A live session.
pub fn session(s: &pb::Session) -> Value {
    let state = pb::SessionState::try_from(s.state)
        .ok()
        .map(|k| k.as_str_name());
    json!({
        "session_id": s.session_id,
        "state": enum_name(state, "SESSION_STATE_", s.state),
        "remote_addr": s.remote_addr,
        "video_codec": s.video_codec,
        "audio_codec": s.audio_codec,
        "started_at": timestamp(s.started_at.as_ref()),
        "counters": counters(s.counters.as_ref()),
        "simulcast_layers": s.simulcast_layers,
        "forwarded_layer": s.forwarded_layer,
        "consumer_sdp": s.consumer_sdp,
        "node_id": s.node_id,
        "facts": facts(s.facts.as_ref()),
        "timings": s.timings.as_ref().map_or(Value::Null, |t| json!({
            "connect_millis": t.connect_millis,
            "first_keyframe_millis": t.first_keyframe_millis,
        })),
    })
}

/// Stream facts (zero: not known yet; `null` for a kind that is not forwarded).
fn facts(f: Option<&pb::StreamFacts>) -> Value {
    let Some(f) = f else { return Value::Null };
    json!({
        "video": f.video.as_ref().map_or(Value::Null, |v| json!({
            "width": v.width,
            "height": v.height,
            "fps": v.fps,
            "declared_fps": v.declared_fps,
            "keyframe_interval_millis": v.keyframe_interval_millis,
            "profile_idc": v.profile_idc,
            "level_idc": v.level_idc,
            "b_frames": v.b_frames,
        })),
        "audio": f.audio.as_ref().map_or(Value::Null, |a| json!({
            "sample_rate": a.sample_rate,
            "channels": a.channels,
        })),
    })
}

/// An ingest (never its token: the proto has none).
pub fn ingest(i: &pb::Ingest) -> Value {
    let conflict = pb::ConflictPolicy::try_from(i.conflict_policy)
        .ok()
        .map(|k| k.as_str_name());
    json!({
        "ingest_id": i.ingest_id,
        "video_target": i.video_target,
        "audio_target": i.audio_target,
        "labels": i.labels,
        "video_codecs": i.video_codecs.iter().map(|c| video_codec(*c)).collect::<Vec<_>>(),
        "audio_codecs": i.audio_codecs.iter().map(|c| audio_codec(*c)).collect::<Vec<_>>(),
        "has_bearer_token": i.has_bearer_token,
        "consumer_sdp": i.consumer_sdp,
        "limits": limits(i.limits.as_ref()),
        "created_at": timestamp(i.created_at.as_ref()),
        "session": i.session.as_ref().map_or(Value::Null, session),
        "redirect_url": i.redirect_url,
        "simulcast_layer": i.simulcast_layer,
        "conflict_policy": enum_name(conflict, "CONFLICT_POLICY_", i.conflict_policy),
    })
}

/// A gateway node.
pub fn node(n: &pb::Node) -> Value {
    json!({
        "node_id": n.node_id,
        "advertise_url": n.advertise_url,
        "live_publishers": n.live_publishers,
        "publisher_capacity": n.publisher_capacity,
        "draining": n.draining,
        "last_heartbeat": timestamp(n.last_heartbeat.as_ref()),
    })
}

/// One event: `seq`, `epoch`, `at`, `ingest_id`, `session_id`, `node_id`, `kind`, and the payload under the
/// kind's name (`{"kind": "session_stats", "session_stats": {...}}`).
pub fn event(e: &pb::Event) -> Value {
    use pb::event::Payload;
    let (kind, body) = match &e.payload {
        None => ("unspecified", Value::Null),
        Some(Payload::IngestRegistered(p)) => (
            "ingest_registered",
            json!({ "ingest": p.ingest.as_ref().map_or(Value::Null, ingest) }),
        ),
        Some(Payload::IngestUpdated(p)) => (
            "ingest_updated",
            json!({ "ingest": p.ingest.as_ref().map_or(Value::Null, ingest) }),
        ),
        Some(Payload::IngestUnregistered(_)) => ("ingest_unregistered", json!({})),
        Some(Payload::PublishAccepted(p)) => {
            ("publish_accepted", json!({ "remote_addr": p.remote_addr }))
        }
        Some(Payload::PublishRejected(p)) => {
            let full = pb::RejectReason::try_from(p.reason)
                .ok()
                .map(|k| k.as_str_name());
            (
                "publish_rejected",
                json!({
                    "reason": enum_name(full, "REJECT_REASON_", p.reason),
                    "detail": p.detail,
                    "count": p.count,
                }),
            )
        }
        Some(Payload::SessionConnected(p)) => (
            "session_connected",
            json!({ "remote_addr": p.remote_addr, "connect_millis": p.connect_millis }),
        ),
        Some(Payload::TrackStarted(p)) => {
            let full = pb::MediaKind::try_from(p.kind)
                .ok()
                .map(|k| k.as_str_name());
            (
                "track_started",
                json!({
                    "kind": enum_name(full, "MEDIA_KIND_", p.kind),
                    "codec": p.codec,
                    "ssrc": p.ssrc,
                    "rid": p.rid,
                    "consumer_sdp": p.consumer_sdp,
                }),
            )
        }
        Some(Payload::SessionStats(p)) => (
            "session_stats",
            json!({
                "bitrate_bps": p.bitrate_bps,
                "counters": counters(p.counters.as_ref()),
                "video_jitter_ms": p.video_jitter_ms,
                "facts": facts(p.facts.as_ref()),
            }),
        ),
        Some(Payload::StreamWarning(p)) => {
            let warning = pb::StreamWarningKind::try_from(p.warning)
                .ok()
                .map(|k| k.as_str_name());
            let kind = pb::MediaKind::try_from(p.kind)
                .ok()
                .map(|k| k.as_str_name());
            (
                "stream_warning",
                json!({
                    "warning": enum_name(warning, "STREAM_WARNING_KIND_", p.warning),
                    "kind": enum_name(kind, "MEDIA_KIND_", p.kind),
                    "detail": p.detail,
                }),
            )
        }
        Some(Payload::SessionEnded(p)) => {
            let full = pb::EndReason::try_from(p.reason)
                .ok()
                .map(|k| k.as_str_name());
            (
                "session_ended",
                json!({
                    "reason": enum_name(full, "END_REASON_", p.reason),
                    "detail": p.detail,
                    "duration_millis": p.duration_millis,
                    "counters": counters(p.counters.as_ref()),
                }),
            )
        }
        Some(Payload::CapsChanged(p)) => (
            "caps_changed",
            json!({
                "caps": caps(p.caps.as_ref()),
                "limits": p.limits.as_ref().map_or(Value::Null, |l| limits(Some(l))),
            }),
        ),
    };
    let mut out = Map::new();
    out.insert("seq".into(), json!(e.seq));
    out.insert("epoch".into(), json!(e.epoch));
    out.insert("at".into(), timestamp(e.at.as_ref()));
    out.insert("ingest_id".into(), json!(e.ingest_id));
    out.insert("session_id".into(), json!(e.session_id));
    out.insert("node_id".into(), json!(e.node_id));
    out.insert("kind".into(), json!(kind));
    out.insert(kind.into(), body);
    Value::Object(out)
}

#[cfg(test)]
mod tests;
