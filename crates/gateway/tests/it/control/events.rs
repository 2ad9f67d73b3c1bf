//! Control plane: the WatchEvents stream (lifecycle order, fan-out, resume, filters).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use tonic::Code;
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;
use whipgate_proto::pb::event::Payload;

use super::{
    code, kind, kinds_but_stats, max_publishers, next, session_of, teardown, until, watch,
};
use crate::harness::{TestGateway, Topo, UdpSink, on_both_topologies};
use crate::publisher::{Publisher, Video};

on_both_topologies!(watch_events_follow_one_publish_lifecycle_in_order);

async fn watch_events_follow_one_publish_lifecycle_in_order(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;
    let (video, audio) = (UdpSink::bind().await?, UdpSink::bind().await?);
    gw.register("life", Some(&video), Some(&audio)).await?;
    let published = gw.publish("life", Some(Video::H264), true).await?;
    let mut seen = until(&mut events, K::TrackStarted).await?;
    seen.extend(until(&mut events, K::TrackStarted).await?);
    // A stats tick after both tracks started, then the publisher leaves.
    seen.extend(until(&mut events, K::SessionStats).await?);
    assert_eq!(gw.delete(&published.location).await?, 200);
    seen.extend(until(&mut events, K::SessionEnded).await?);

    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seq starts at 1 and grows by exactly 1");
    let lifecycle = [
        K::IngestRegistered,
        K::PublishAccepted,
        K::SessionConnected,
        K::TrackStarted,
        K::TrackStarted,
        K::SessionEnded,
    ];
    assert_eq!(kinds_but_stats(&seen), lifecycle);
    let mut tracks = BTreeMap::new();
    for event in seen.iter().filter(|e| kind(e) == K::TrackStarted) {
        let track = payload!(event, TrackStarted);
        tracks.insert(track.kind, track.codec.as_str());
    }
    assert_eq!(tracks[&(pb::MediaKind::Video as i32)], "H264");
    assert_eq!(tracks[&(pb::MediaKind::Audio as i32)], "opus");
    let session_id = session_of(&published.location);
    for event in &seen {
        assert_eq!(event.ingest_id, "life");
        let registered = kind(event) == K::IngestRegistered;
        assert_eq!(event.session_id, if registered { "" } else { session_id });
    }
    let ended = payload!(seen[seen.len() - 1], SessionEnded);
    assert_eq!(ended.reason, pb::EndReason::PublisherDelete as i32);
    let counters = ended.counters.context("final counters")?;
    assert!(counters.video_packets > 0 && counters.audio_packets > 0);
    gw.stop().await
}

on_both_topologies!(two_watchers_see_the_same_sequence);

async fn two_watchers_see_the_same_sequence(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
    let mut a = watch(&gw, &[], &[], 0).await?;
    let mut b = watch(&gw, &[], &[], 0).await?;
    gw.register("one", None, None).await?;
    gw.register("two", None, None).await?;
    let published = gw.publish("one", Some(Video::H264), true).await?;
    gw.grpc.set_caps(max_publishers(8)).await?;
    assert_eq!(gw.delete(&published.location).await?, 200);
    let summary = |events: Vec<pb::Event>| -> Vec<(u64, K)> {
        events.iter().map(|e| (e.seq, kind(e))).collect()
    };
    let seen_a = summary(until(&mut a, K::SessionEnded).await?);
    let seen_b = summary(until(&mut b, K::SessionEnded).await?);
    // Registered x2, accepted, connected, caps-changed, ended, and whatever media came.
    assert!(seen_a.len() >= 6, "{seen_a:?}");
    assert_eq!(seen_a, seen_b);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_from_seq_then_continues_live_and_refuses_lost_history() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    for id in ["r1", "r2", "r3", "r4", "r5"] {
        gw.register(id, None, None).await?;
    }
    let mut resumed = watch(&gw, &[], &[], 3).await?;
    gw.register("r6", None, None).await?;
    for (seq, id) in [(3, "r3"), (4, "r4"), (5, "r5"), (6, "r6")] {
        let event = next(&mut resumed).await?;
        assert_eq!((event.seq, event.ingest_id.as_str()), (seq, id));
        assert_eq!(kind(&event), K::IngestRegistered);
    }
    gw.stop().await?;

    let mut gw = TestGateway::start_with(|c| c.event_history = 4).await?;
    for id in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        gw.register(id, None, None).await?;
    }
    let from_1 = pb::WatchEventsRequest {
        from_seq: 1,
        ..Default::default()
    };
    assert_eq!(code(gw.grpc.watch_events(from_1).await), Code::OutOfRange);
    // The oldest event still held (6 - 4 + 1) can be resumed from.
    assert_eq!(next(&mut watch(&gw, &[], &[], 3).await?).await?.seq, 3);
    gw.stop().await
}

on_both_topologies!(watch_filters_by_ingest_and_by_kind);

async fn watch_filters_by_ingest_and_by_kind(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
    let mut only_b = watch(&gw, &["b"], &[], 0).await?;
    let mut only_ended = watch(&gw, &[], &[K::SessionEnded], 0).await?;
    gw.register("a", None, None).await?;
    gw.register("b", None, None).await?;
    let published = gw.publish("a", Some(Video::H264), true).await?;
    assert_eq!(gw.delete(&published.location).await?, 200);
    gw.grpc.set_caps(max_publishers(8)).await?;
    // b: a publish answered but never connected, then torn down.
    let (_p, offer) = Publisher::new(Some(Video::H264), false).await?;
    assert_eq!(gw.post_offer("b", &offer, None).await?.status(), 201);
    assert!(teardown(&mut gw, "b", "").await?);

    let b_events = until(&mut only_b, K::SessionEnded).await?;
    assert!(b_events.iter().all(|e| e.ingest_id == "b"), "{b_events:?}");
    let b_kinds = [K::IngestRegistered, K::PublishAccepted, K::SessionEnded];
    assert_eq!(kinds_but_stats(&b_events), b_kinds);

    let mut ended = Vec::new();
    for _ in 0..2 {
        let event = next(&mut only_ended).await?;
        ended.push((
            event.ingest_id.clone(),
            payload!(event, SessionEnded).reason,
        ));
    }
    let expected = [
        ("a".to_owned(), pb::EndReason::PublisherDelete as i32),
        ("b".to_owned(), pb::EndReason::Teardown as i32),
    ];
    assert_eq!(
        ended, expected,
        "only session-ended events, nothing before them"
    );
    gw.stop().await
}
