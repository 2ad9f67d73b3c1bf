use super::*;
use whipgate_media::codec::VideoCodec;

/// A crash `scripts/fuzz` found (fuzz/artifacts/continuity/crash-b0da6485…): padding
/// skipped with sequence number 0, then a media packet with the same number. The harness
/// asserted continuity the publisher itself had broken; now it must pass.
#[test]
fn a_number_both_skipped_and_forwarded_is_not_held_against_the_mapping() {
    const CRASH: [u8; 56] = [
        0x10, 0x00, 0x00, 0x01, 0x01, 0x00, 0x0c, 0x00, 0x7e, 0x00, 0xff, 0x9a, 0x01, 0x10, 0x00,
        0x00, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xff, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x0b,
        0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0x00, 0x00, 0x17, 0x70,
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
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0xf6, 0x00, 0x80, 0x00, 0x00, 0xff, 0x00,
        0x80, 0x00, 0x00, 0xff, 0xff, 0xfa, 0xff, 0xf7, 0x00, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x01,
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

mod seeds {
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
            let ok = crate::topology::cluster::calls::decode(&text).is_ok()
                || serde_json::from_str::<crate::topology::cluster::calls::Answer>(&text).is_ok();
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
                crate::edge::events::watch_request(&headers, &q).is_ok(),
                "{name}"
            );
            super::events_query(&data);
        }
    }

    /// The media targets run on their committed seeds in every `cargo test`: a change to the
    /// media code that breaks a wrapper, or a seed that now panics, fails here first.
    #[test]
    fn media_targets_run_their_seeds() {
        let offer = include_str!("../../tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");
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
