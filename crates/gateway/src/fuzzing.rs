//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not an API: hidden
//! from the docs, free to change. Each takes attacker-shaped bytes and must never panic.
//!
//! The media internals (`media::mux`, `peer`, `restart`, `forward`, `repair`, `red`) are private
//! to `media`; their wrappers live in `media::fuzz` (a child of `media`, so nothing is widened)
//! and are re-exported here. They are compiled with the `_fuzz` feature (the fuzz crate enables
//! it) and in unit tests, which run every target on its committed seeds; the ones over public
//! code (`plan_offer`, `continuity`) exist always.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::registry::{IngestSpec, Limits};
use whipgate_media::codec::{AudioCodec, OfferPlan, VideoCodec};
use whipgate_media::continuity::{InputPacket, OutputStream};

/// The ufrag the STUN and ICE-restart targets route (seeds carry it in USERNAME).
pub const FUZZ_UFRAG: &str = "fuzzufrag";
/// The ICE password that goes with [`FUZZ_UFRAG`] (seeds' MESSAGE-INTEGRITY uses it).
pub const FUZZ_PWD: &str = "fuzzpasswordfuzzpassword";

/// The ingest the targets publish to; `selector` picks the accepted video codecs (never none)
/// and whether a simulcast layer is preferred.
pub fn ingest(selector: u8) -> IngestSpec {
    let all = [
        VideoCodec::H264,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
        VideoCodec::H265,
    ];
    let mut video_codecs: Vec<VideoCodec> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| selector & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect();
    if video_codecs.is_empty() {
        video_codecs = all.to_vec();
    }
    if selector & 0x20 != 0 {
        video_codecs.reverse();
    }
    IngestSpec {
        id: "fuzz".into(),
        video_target: Some(SocketAddr::from(([127, 0, 0, 1], 9))),
        audio_target: Some(SocketAddr::from(([127, 0, 0, 1], 11))),
        bearer_token: None,
        labels: Default::default(),
        video_codecs,
        audio_codecs: vec![AudioCodec::Opus],
        limits: Limits::default(),
        redirect_url: None,
        simulcast_layer: (selector & 0x40 != 0).then(|| "h".to_owned()),
        replace_publisher: false,
    }
}

/// The SDP offer planner on `data`: its first byte picks the ingest ([`ingest`]), the rest is
/// the offer (not UTF-8: refused like the HTTP edge refuses it).
pub fn plan_offer(data: &[u8]) -> Option<(String, OfferPlan)> {
    let (&selector, offer) = data.split_first()?;
    let offer = std::str::from_utf8(offer).ok()?;
    let plan = crate::whip::plan_offer(offer, &ingest(selector)).ok()?;
    Some((offer.to_owned(), plan))
}

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
pub use crate::media::fuzz::{answer_offer, forward_rtp, ice_restart, loss_repair, stun_route};

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash `scripts/fuzz` found (fuzz/artifacts/continuity/crash-b0da6485…): padding
    /// skipped with sequence number 0, then a media packet with the same number. The harness
    /// asserted continuity the publisher itself had broken; now it must pass.
    #[test]
    fn a_number_both_skipped_and_forwarded_is_not_held_against_the_mapping() {
        const CRASH: [u8; 56] = [
            0x10, 0x00, 0x00, 0x01, 0x01, 0x00, 0x0c, 0x00, 0x7e, 0x00, 0xff, 0x9a, 0x01, 0x10,
            0x00, 0x00, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0x00, 0x00, 0x17, 0x70,
        ];
        continuity(&CRASH);
    }

    /// A crash `scripts/fuzz` found (crash-03c61bbe…): padding exactly half the sequence
    /// space ahead of the newest packet, then 0xffff and 0 (consecutive, behind it). Each
    /// packet judged "before or after the padding" on its own reference, so the two
    /// disagreed and the output skipped a number; now every skipped number is placed
    /// relative to the newest input.
    #[test]
    fn padding_half_the_space_away_leaves_consecutive_packets_consecutive() {
        const CRASH: [u8; 32] = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0xf6, 0x00, 0x80, 0x00, 0x00, 0xff,
            0x00, 0x80, 0x00, 0x00, 0xff, 0xff, 0xfa, 0xff, 0xf7, 0x00, 0xff, 0x00, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x01,
        ];
        continuity(&CRASH);
        // Padding just under half the space ahead, then two packets behind the newest.
        let step = |op: u8, seq: u16| {
            let [hi, lo] = seq.to_be_bytes();
            [op, 0, hi, lo, 0, 0, 0, 0]
        };
        let program: Vec<u8> = [
            step(0, 0),
            step(1, 0x7fff),
            step(0, 0xfffe),
            step(0, 0xffff),
        ]
        .concat();
        continuity(&program);
    }

    #[test]
    fn the_continuity_program_checks_consecutive_packets() {
        let step = |op: u8, seq: u16| {
            let [hi, lo] = seq.to_be_bytes();
            [op, 0, hi, lo, 0, 0, 0, 0]
        };
        // Packets, padding closed up, a reconnect after time passes: all consistent.
        let program: Vec<u8> = [
            step(0, 100),
            step(0, 101),
            step(1, 102),
            step(0, 103),
            step(3, 500),
            step(2, 0),
            step(0, 7),
            step(0, 8),
        ]
        .concat();
        continuity(&program);
    }

    #[test]
    fn offers_plan_after_the_selector_byte() {
        let offer = concat!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n",
            "a=rtpmap:96 VP8/90000\r\n",
        );
        let mut data = vec![0x02];
        data.extend_from_slice(offer.as_bytes());
        let (_, plan) = plan_offer(&data).expect("a VP8 offer plans for a VP8 ingest");
        assert_eq!(plan.video.map(|v| v.codec), Some(VideoCodec::Vp8));
        data[0] = 0x01; // H264 only: nothing to answer with
        assert!(plan_offer(&data).is_none());
        assert!(plan_offer(&[0x02, 0xff, 0xfe]).is_none(), "not UTF-8");
        assert!(plan_offer(&[]).is_none());
    }
}

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
    let _ = crate::whip::events::watch_request(&headers, &query);
    if let Some(token) = query.get("token") {
        let key = crate::whip::access::derive_token_key("fuzz-key");
        let filter = crate::whip::events::filter_of(&query);
        let _ =
            crate::whip::access::verify_token(&key, token, &filter, std::time::SystemTime::now());
    }
}

/// A routed call as the owning node reads it: the envelope's checks (size, JSON, HMAC tag,
/// addressee, reply key, deadline), then the JSON body and its checks, and an answer.
pub fn routed_call(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(trust) = crate::cluster::trust::Trust::from_secret(&[7u8; 32]) {
        let _ = crate::cluster::rpc::fuzz_check_envelope(&trust, "fuzz-node", text);
    }
    let _ = crate::cluster::calls::decode(text);
    let _ = serde_json::from_str::<crate::cluster::calls::Answer>(text);
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
mod seed_tests {
    //! The committed seeds of the read-API, routed-call and store targets reach past the
    //! parsers (a seed that fails to parse would leave the fuzzer at the door).

    use std::path::Path;

    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds")
            .join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .expect("seed dir")
            .map(|e| {
                let path = e.expect("entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("seed"))
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "{target} has seeds");
        out
    }

    #[test]
    fn routed_call_seeds_decode() {
        for (name, data) in seeds("routed_call") {
            let text = String::from_utf8(data).unwrap();
            let ok = crate::cluster::calls::decode(&text).is_ok()
                || serde_json::from_str::<crate::cluster::calls::Answer>(&text).is_ok();
            assert!(ok, "{name}: {text}");
            super::routed_call(text.as_bytes());
        }
    }

    #[test]
    fn store_record_seeds_are_records_a_restart_takes_back() {
        for (name, data) in seeds("store_record") {
            let ingest = serde_json::from_slice::<crate::store::IngestRecord>(&data)
                .map(|r| crate::registry::record_is_valid(&r));
            let stream = serde_json::from_slice::<crate::store::StreamRecord>(&data);
            assert!(matches!(ingest, Ok(true)) || stream.is_ok(), "{name}");
            super::store_record(&data);
        }
    }

    #[test]
    fn events_query_seeds_parse() {
        for (name, data) in seeds("events_query") {
            let text = String::from_utf8(data.clone()).unwrap();
            let (_, query) = text.split_once('\n').unwrap();
            let uri: axum::http::Uri = format!("/events?{query}").parse().unwrap();
            let axum::extract::Query(q) = axum::extract::Query::<
                std::collections::HashMap<String, String>,
            >::try_from_uri(&uri)
            .unwrap();
            let mut headers = axum::http::HeaderMap::new();
            let (last, _) = text.split_once('\n').unwrap();
            if !last.is_empty() {
                headers.insert("last-event-id", last.parse().unwrap());
            }
            assert!(
                crate::whip::events::watch_request(&headers, &q).is_ok(),
                "{name}"
            );
            super::events_query(&data);
        }
    }

    /// The media targets run on their committed seeds in every `cargo test`: a change to the
    /// media code that breaks a wrapper, or a seed that now panics, fails here first.
    #[test]
    fn media_targets_run_their_seeds() {
        let offer = include_str!("../tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");
        for (_, data) in seeds("stun_route") {
            super::stun_route(&data);
        }
        for (_, data) in seeds("sdp_offer") {
            let _ = super::answer_offer(&data);
        }
        for (_, data) in seeds("sdpfrag") {
            let _ = super::ice_restart(offer, &data);
        }
        for (_, data) in seeds("rtp_forward") {
            super::forward_rtp(&data);
        }
        for (_, data) in seeds("loss_repair") {
            super::loss_repair(&data);
        }
        let accepted = seeds("sdp_offer")
            .iter()
            .filter(|(_, data)| super::answer_offer(data).is_some())
            .count();
        assert!(accepted > 0, "no sdp_offer seed is answered");
        let routed = seeds("stun_route")
            .iter()
            .filter(|(_, data)| super::stun_route(data))
            .count();
        assert!(routed > 0, "no stun_route seed is routed");
    }
}
