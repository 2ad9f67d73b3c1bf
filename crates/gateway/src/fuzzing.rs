//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not an API: hidden
//! from the docs, free to change. Each takes attacker-shaped bytes and must never panic.
//!
//! The media core's wrappers (STUN routing, offer planning and answering, ICE restart,
//! forwarding, loss repair) live in `whipgate_media::fuzz` and are re-exported here. They are compiled
//! with the `_fuzz` feature (the fuzz crate enables it) and in unit tests, which run every
//! target on its committed seeds; the ones over public code (`continuity`, the HTTP and store
//! parsers) exist always.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use whipgate_media::continuity::{InputPacket, OutputStream};

/// Output stream continuity driven by `data`, a program of 8-byte steps: `op, a, b, c, d, e,
/// f, g`. op % 5: 0 a packet (`a`: one of four publisher SSRCs, `b c`: sequence number,
/// `d e f g`: timestamp), 1 the same packet skipped (padding), 2 a reconnect (new session),
/// 3 time passes (`b c` milliseconds), 4 a Sender Report (`d e f g`: its RTP time). Checks
/// that the output SSRC never changes and that a packet one after the previous one of the
/// same input, with nothing skipped between (and neither number ever skipped), comes out one
/// after it too.
pub fn continuity(data: &[u8]) {
    let mut stream = OutputStream::new();
    let mut now = Instant::now();
    let mut session = Uuid::from_u128(1);
    let mut previous: Option<(InputPacket, u16)> = None;
    // Sequence numbers the current input skipped: a number both skipped and forwarded is
    // the publisher contradicting itself, and the mapping owes it nothing.
    let mut skipped: (Option<(Uuid, u32)>, HashSet<u16>) = (None, HashSet::new());
    for step in data.chunks_exact(8) {
        let ssrc = 0x1000 + u32::from(step[1] & 3);
        let seq = u16::from_be_bytes([step[2], step[3]]);
        let ts = u32::from_be_bytes([step[4], step[5], step[6], step[7]]);
        let packet = InputPacket {
            session,
            ssrc,
            seq,
            ts,
            clock_rate: if step[1] & 4 == 0 { 90_000 } else { 48_000 },
        };
        let op = step[0] % 5;
        if op < 2 && skipped.0 != Some((session, ssrc)) {
            skipped = (Some((session, ssrc)), HashSet::new());
        }
        match op {
            0 => {
                let out = stream.map(packet, now);
                assert_eq!(out.ssrc, stream.ssrc, "the output SSRC never changes");
                if let Some((before, out_before)) = previous {
                    let same_input = before.session == session && before.ssrc == ssrc;
                    let contradicted = skipped.1.contains(&seq) || skipped.1.contains(&before.seq);
                    if same_input && seq == before.seq.wrapping_add(1) && !contradicted {
                        assert_eq!(out.seq, out_before.wrapping_add(1), "no gap, no overlap");
                    }
                }
                previous = Some((packet, out.seq));
            }
            1 => {
                stream.skip(packet, now);
                skipped.1.insert(seq);
                previous = None;
            }
            2 => {
                session = Uuid::from_u128(session.as_u128().wrapping_add(1));
            }
            3 => now += Duration::from_millis(u64::from(seq)),
            _ => {
                if let Some((out_ssrc, _, _)) = stream.map_report(session, ssrc, ts, 0, 90_000) {
                    assert_eq!(out_ssrc, stream.ssrc);
                }
            }
        }
    }
}

#[cfg(any(feature = "_fuzz", test))]
pub use whipgate_media::fuzz::{
    FUZZ_PWD, FUZZ_UFRAG, answer_offer, forward_rtp, ice_restart, loss_repair, plan_offer,
    stun_route,
};

/// The read API's request parsing: `data` is split at its first newline into a
/// `Last-Event-ID` value and a query string; both go through what `GET /events` runs (axum's
/// query extractor, the filter and resume parsing, the events-token check for a `token`).
pub fn events_query(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderValue, Uri};
    let text = String::from_utf8_lossy(data);
    let (last, query) = text.split_once('\n').unwrap_or(("", &text));
    let mut headers = HeaderMap::new();
    if !last.is_empty()
        && let Ok(value) = HeaderValue::from_str(last)
    {
        headers.insert("last-event-id", value);
    }
    let Ok(uri) = format!("/events?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(axum::extract::Query(query)) =
        axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(&uri)
    else {
        return;
    };
    let _ = crate::edge::events::watch_request(&headers, &query);
    if let Some(token) = query.get("token") {
        let key = crate::edge::whip::access::derive_token_key("fuzz-key");
        let filter = crate::edge::events::filter_of(&query);
        let _ = crate::edge::whip::access::verify_token(
            &key,
            token,
            &filter,
            std::time::SystemTime::now(),
        );
    }
}

/// A routed call as the owning node reads it: the envelope's checks (size, JSON, HMAC tag,
/// addressee, reply key, deadline), then the JSON body and its checks, and an answer.
pub fn routed_call(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(trust) = crate::topology::cluster::trust::Trust::from_secret(&[7u8; 32]) {
        let _ = crate::topology::cluster::rpc::fuzz_check_envelope(&trust, "fuzz-node", text);
    }
    let _ = crate::topology::cluster::calls::decode(text);
    let _ = serde_json::from_str::<crate::topology::cluster::calls::Answer>(text);
}

/// A stored registration and output-stream record as a restart reads them back: decoded
/// (embedded store and Redis hold the same JSON), clear tokens hashed, checked into a
/// registry entry; a stream record restored into output streams.
pub fn store_record(data: &[u8]) {
    if let Ok(mut record) = serde_json::from_slice::<crate::store::IngestRecord>(data) {
        record.hash_clear_token();
        let _ = crate::registry::record_is_valid(&record);
    }
    if let Ok(stream) = serde_json::from_slice::<crate::store::StreamRecord>(data) {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(stream.at_ms);
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let _ = OutputStream::restore(&stream.video, at, now, wall);
        let _ = OutputStream::restore(&stream.audio, at, now, wall);
    }
}

#[cfg(test)]
mod tests;
