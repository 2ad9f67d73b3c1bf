//! Control plane: operating live streams (teardown, caps, duration limits, keyframes).

use anyhow::{Context, Result, bail};
use tonic::Code;
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;
use whipgate_proto::pb::event::Payload;

use super::{caps, code, get, max_publishers, next_of, session_of, teardown, watch};
use crate::harness::{PATIENCE, TestGateway, Topo, eventually, header, on_both_topologies};
use crate::publisher::{Publisher, Video};

on_both_topologies!(teardown_closes_the_live_session_and_keeps_the_registration);

async fn teardown_closes_the_live_session_and_keeps_the_registration(topo: Topo) -> Result<()> {
    let mut gw = TestGateway::start_on(topo, |_| {}).await?;
    gw.register("td", None, None).await?;
    assert!(
        !teardown(&mut gw, "td", "").await?,
        "no live session to close"
    );
    assert_eq!(code(teardown(&mut gw, "ghost", "").await), Code::NotFound);

    let first = gw.publish("td", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;
    assert!(teardown(&mut gw, "td", "operator says stop").await?);
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(event.session_id, session_of(&first.location));
    let ended = payload!(event, SessionEnded);
    assert_eq!(ended.reason, pb::EndReason::Teardown as i32);
    assert_eq!(ended.detail, "operator says stop");

    assert!(
        gw.session("td").await?.is_none(),
        "registration stays, session gone"
    );
    assert_eq!(gw.registry.live_count(), 0);
    assert_eq!(gw.delete(&first.location).await?, 200);
    let second = gw.publish("td", Some(Video::H264), true).await?;
    assert_ne!(second.location, first.location);
    assert!(gw.session("td").await?.is_some());
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_reported_changed_and_enforced_with_503() -> Result<()> {
    let mut small = TestGateway::start_with(|c| c.max_publishers = 3).await?;
    assert_eq!(caps(&mut small).await?, (3, 0));
    small.stop().await?;

    let mut gw = TestGateway::start().await?;
    assert_eq!(caps(&mut gw).await?, (256, 0), "the default");
    gw.register("live", None, None).await?;
    gw.register("late", None, None).await?;
    let _live = gw.publish("live", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;

    let set = gw.grpc.set_caps(max_publishers(1)).await?.into_inner();
    assert_eq!(
        (set.caps.map(|c| c.max_publishers), set.live_publishers),
        (Some(1), 1)
    );
    let event = next_of(&mut events, K::CapsChanged).await?;
    let changed = payload!(event, CapsChanged);
    assert_eq!(changed.caps.map(|c| c.max_publishers), Some(1));
    assert!(
        changed.limits.is_none() && event.ingest_id.is_empty(),
        "a global change"
    );

    let (_p, offer) = Publisher::new(Some(Video::H264), true).await?;
    let refused = gw.post_offer("late", &offer, None).await?;
    assert_eq!(refused.status(), 503);
    assert!(header(&refused, "retry-after").is_ok());
    let event = next_of(&mut events, K::PublishRejected).await?;
    assert_eq!(event.ingest_id, "late");
    assert_eq!(
        payload!(event, PublishRejected).reason,
        pb::RejectReason::Cap as i32
    );

    let live = gw
        .session("live")
        .await?
        .context("the live publisher stays")?;
    assert_eq!(live.state, pb::SessionState::Connected as i32);
    assert_eq!(caps(&mut gw).await?, (1, 1));
    let nothing = gw.grpc.set_caps(pb::SetCapsRequest::default()).await;
    assert_eq!(code(nothing), Code::InvalidArgument);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ingest_duration_limit_ends_the_live_session() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("short", None, None).await?;
    let published = gw.publish("short", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &["short"], &[], 0).await?;
    let limits = pb::IngestLimits {
        max_session_seconds: 1,
        ..Default::default()
    };
    let request = pb::SetCapsRequest {
        ingest_id: "short".into(),
        limits: Some(limits),
        ..Default::default()
    };
    gw.grpc.set_caps(request).await?;
    let changed = next_of(&mut events, K::CapsChanged).await?;
    assert_eq!(payload!(changed, CapsChanged).limits, Some(limits));
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(
        payload!(event, SessionEnded).reason,
        pb::EndReason::DurationCap as i32
    );
    assert_eq!(event.session_id, session_of(&published.location));
    assert!(gw.session("short").await?.is_none());
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_keyframe_sends_a_pli_to_the_live_publisher() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    gw.register("kf", None, None).await?;
    gw.register("idle", None, None).await?;
    let _published = gw.publish("kf", Some(Video::H264), false).await?;
    let plis = || {
        let mut grpc = gw.grpc.clone();
        async move {
            let ingest = grpc.get_ingest(get("kf")).await.ok()?.into_inner().ingest?;
            ingest.session?.counters.map(|c| c.plis_sent)
        }
    };
    // The PLI the gateway sends by itself when the video track starts comes first.
    let before = eventually(PATIENCE, "the track-start PLI", || async {
        plis().await.filter(|n| *n >= 1)
    })
    .await?;
    let keyframe = |id: &str| pb::RequestKeyframeRequest {
        ingest_id: id.into(),
    };
    gw.grpc.clone().request_keyframe(keyframe("kf")).await?;
    eventually(PATIENCE, "the requested PLI", || async {
        plis().await.filter(|n| *n > before)
    })
    .await?;
    let no_session = gw.grpc.clone().request_keyframe(keyframe("idle")).await;
    assert_eq!(code(no_session), Code::NotFound);
    let unknown = gw.grpc.clone().request_keyframe(keyframe("ghost")).await;
    assert_eq!(code(unknown), Code::NotFound);
    gw.stop().await
}
