//! The load tool's publisher engine against an in-process gateway: three publishers register
//! over gRPC, publish over WHIP, and every packet reaches the built-in sink.

use std::time::Duration;

use anyhow::Result;
use whipgate::load::{Engine, LoadConfig, VideoCodec};

use crate::harness::TestGateway;

async fn smoke(codec: VideoCodec) -> Result<()> {
    let gw = TestGateway::start().await?;
    let cfg = LoadConfig {
        url: gw.url("/whip"),
        grpc: Some(format!("http://{}", gw.bound.grpc)),
        publishers: 3,
        prefix: format!("smoke-{codec:?}-"),
        codec,
        duration: 2.0,
        keyframe_interval: 0.5,
        workers: Some(1),
        ..LoadConfig::default()
    };
    let report = Engine::new(cfg)?.run().await?;
    assert_eq!(report.created, 3, "{report:?}");
    assert_eq!(report.connected, 3, "{report:?}");
    assert!(report.post_errors.is_empty(), "{report:?}");
    let sink = report.sink.as_ref().expect("sink report");
    // Video and audio of each publisher, under the gateway's own SSRCs.
    assert_eq!(sink.ssrcs, 6, "{report:?}");
    assert_eq!(sink.lost, 0, "{report:?}");
    assert_eq!(sink.unstamped, 0, "{report:?}");
    let sent = report.sent.video_packets + report.sent.audio_packets;
    // 3 x (50 audio + >= 30 video) packets/s for 2 s.
    assert!(sent >= 400, "{report:?}");
    assert!(sink.packets * 100 >= sent * 95, "{report:?}");
    assert!(sink.latency.p50_ms < 50.0, "{report:?}");
    // A keyframe every 0.5 s from each publisher.
    assert!(sink.keyframes >= 9, "{report:?}");
    gw.all_clean().await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_h264_publishers_arrive_without_loss() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(30), smoke(VideoCodec::H264)).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_vp8_publishers_arrive_without_loss() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(30), smoke(VideoCodec::Vp8)).await?
}
