use super::*;

#[test]
fn kinds_round_trip_between_json_and_proto_names() {
    for kind in [
        pb::EventKind::IngestRegistered,
        pb::EventKind::SessionStats,
        pb::EventKind::CapsChanged,
    ] {
        let name = event_kind_name(kind as i32);
        assert!(!name.contains("EVENT_KIND"), "{name}");
        assert_eq!(event_kind_from_name(&name), Some(kind));
        assert_eq!(event_kind_from_name(kind.as_str_name()), Some(kind));
    }
    assert_eq!(
        event_kind_name(pb::EventKind::SessionStats as i32),
        "session_stats"
    );
    assert_eq!(event_kind_from_name("unspecified"), None);
    assert_eq!(event_kind_from_name("nope"), None);
}

#[test]
fn an_event_carries_its_payload_under_its_kind() {
    let e = pb::Event {
        seq: 7,
        at: Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        ingest_id: "cam".into(),
        session_id: "s".into(),
        epoch: 2,
        node_id: "a".into(),
        payload: Some(pb::event::Payload::SessionStats(pb::SessionStats {
            bitrate_bps: 1_500_000,
            counters: None,
            video_jitter_ms: 1.5,
            facts: Some(pb::StreamFacts {
                video: Some(pb::VideoFacts {
                    width: 1280,
                    height: 720,
                    ..Default::default()
                }),
                audio: None,
            }),
        })),
    };
    let v = event(&e);
    assert_eq!(v["seq"], 7);
    assert_eq!(v["node_id"], "a");
    assert_eq!(v["kind"], "session_stats");
    assert_eq!(v["session_stats"]["bitrate_bps"], 1_500_000);
    assert_eq!(v["session_stats"]["counters"]["packets_lost"], 0);
    assert_eq!(v["session_stats"]["facts"]["video"]["width"], 1280);
    assert!(v["session_stats"]["facts"]["audio"].is_null());
    assert_eq!(v["at"], "1970-01-01T00:00:00Z");
}
