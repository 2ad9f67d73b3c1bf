//! The load tool's two publisher paths against an in-process gateway: the default lean path
//! (ICE, DTLS and SRTP from webrtc-rs's crates) hears the gateway's keyframe requests, and
//! the `--full-rtc` path (the `rtc` peer connection) still delivers every packet.

use std::time::Duration;

use anyhow::Result;
use whipgate_load::{Engine, LoadConfig};
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, eventually};

fn config(gw: &TestGateway, prefix: &str) -> LoadConfig {
    LoadConfig {
        url: gw.url("/whip"),
        grpc: Some(format!("http://{}", gw.bound.grpc)),
        publishers: 2,
        prefix: prefix.to_owned(),
        duration: 1.5,
        keyframe_interval: 10.0,
        workers: Some(1),
        ..LoadConfig::default()
    }
}

async fn keyframe_request_reaches_a_lean_publisher() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let engine = Engine::new(config(&gw, "pli-"))?;
    engine.register(0..2).await?;
    let batch = engine.start(0..2).await;
    assert_eq!(batch.created(), 2);
    assert!(batch.wait_settled(2, PATIENCE).await);
    assert_eq!(batch.counters().connected, 2, "{:?}", batch.counters());
    // The gateway forwards only once media flows; then a keyframe request becomes a PLI.
    eventually(PATIENCE, "media flowing", || async {
        (batch.counters().video_packets > 30).then_some(())
    })
    .await?;
    gw.grpc
        .request_keyframe(pb::RequestKeyframeRequest {
            ingest_id: "pli-0".into(),
        })
        .await?;
    eventually(PATIENCE, "the PLI counted by the publisher", || async {
        (batch.counters().keyframe_requests >= 1).then_some(())
    })
    .await?;
    let (_, end) = batch.finish(&engine, false).await;
    assert_eq!(end.failed, 0, "{end:?}");
    gw.all_clean().await?;
    gw.stop().await
}

async fn full_rtc_path_delivers_everything() -> Result<()> {
    let gw = TestGateway::start().await?;
    let cfg = LoadConfig {
        full_rtc: true,
        ..config(&gw, "full-")
    };
    let report = Engine::new(cfg)?.run().await?;
    assert_eq!(report.connected, 2, "{report:?}");
    let sink = report.sink.as_ref().expect("sink report");
    assert_eq!(sink.ssrcs, 4, "{report:?}");
    assert_eq!(sink.lost, 0, "{report:?}");
    assert!(sink.packets > 100, "{report:?}");
    gw.all_clean().await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_lean_publisher_counts_keyframe_requests() -> Result<()> {
    tokio::time::timeout(
        Duration::from_secs(40),
        keyframe_request_reaches_a_lean_publisher(),
    )
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_full_rtc_publishers_arrive_without_loss() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(40), full_rtc_path_delivers_everything()).await?
}
