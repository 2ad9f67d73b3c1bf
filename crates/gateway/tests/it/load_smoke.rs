//! The load tool's publisher engine against an in-process gateway: three publishers register
//! over gRPC, publish over WHIP, and every packet reaches the built-in sink.

use std::time::Duration;

use anyhow::Result;
use whipgate_load::{Engine, LoadConfig, VideoCodec};

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

/// A studio going live: 50 encoders behind one address POST at once with their ingests' valid
/// tokens, at the gateway's default edge settings (16 negotiation slots, the per-address rate
/// limit, 64 HTTP connections per client), and none of them retries a 503 or a 429 (OBS and
/// FFmpeg do not). The burst is made to find every negotiation slot taken (held by another
/// client until all 50 POSTs wait): each one waits for a slot instead of getting a 503, gets
/// its 201 and connects; the 50 DELETEs are answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_fifty_publishers_from_one_address_waits_and_is_admitted_without_retries()
-> Result<()> {
    tokio::time::timeout(Duration::from_secs(90), async {
        let defaults = whipgate::Config::default();
        let gw = TestGateway::start_with(|c| {
            c.rate_limit_per_sec = defaults.rate_limit_per_sec;
            c.rate_limit_burst = defaults.rate_limit_burst;
            c.http_max_connections_per_client = defaults.http_max_connections_per_client;
            c.max_negotiations = defaults.max_negotiations;
            c.negotiation_wait = defaults.negotiation_wait;
        })
        .await?;
        let cfg = LoadConfig {
            url: gw.url("/whip"),
            grpc: Some(format!("http://{}", gw.bound.grpc)),
            publishers: 50,
            concurrency: 50,
            no_retry: true,
            token: Some("studio-token".into()),
            prefix: "burst-".into(),
            duration: 1.0,
            keyframe_interval: 0.5,
            workers: Some(1),
            ..LoadConfig::default()
        };
        let engine = Engine::new(cfg)?;
        engine.register(0..50).await?;
        let other = std::net::IpAddr::from([127, 0, 0, 200]);
        let mut held = Vec::new();
        for _ in 0..defaults.max_negotiations {
            let slot = gw.limits.negotiations.acquire(other).await;
            held.push(slot.map_err(|r| anyhow::anyhow!(r.message()))?);
        }
        let queue = gw.limits.negotiations.clone();
        let release = async move {
            let queued = crate::harness::eventually(
                crate::harness::PATIENCE,
                "all 50 POSTs waiting",
                || {
                    let waiting = queue.waiting();
                    async move { (waiting == 50).then_some(()) }
                },
            )
            .await;
            drop(held);
            queued
        };
        let (batch, queued) = tokio::join!(engine.start(0..50), release);
        queued?;
        assert!(batch.post_errors.is_empty(), "{:?}", batch.post_errors);
        assert!(
            batch.wait_settled(50, Duration::from_secs(30)).await,
            "all connect"
        );
        let (_, at_end) = batch.finish(&engine, false).await;
        assert_eq!(at_end.connected, 50);
        assert_eq!(at_end.failed, 0);
        gw.all_clean().await?;
        gw.stop().await
    })
    .await?
}

/// Each session knows how long it took to connect and to forward its first keyframe, and the
/// control plane shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_report_their_connect_and_first_keyframe_times() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let gw = TestGateway::start().await?;
        let cfg = LoadConfig {
            url: gw.url("/whip"),
            grpc: Some(format!("http://{}", gw.bound.grpc)),
            publishers: 2,
            prefix: "timed-".into(),
            duration: 1.0,
            keyframe_interval: 0.5,
            workers: Some(1),
            vanish: true,
            ..LoadConfig::default()
        };
        let engine = Engine::new(cfg)?;
        engine.register(0..2).await?;
        let batch = engine.start(0..2).await;
        assert!(batch.post_errors.is_empty(), "{:?}", batch.post_errors);
        for id in ["timed-0", "timed-1"] {
            let timings = crate::harness::eventually(
                crate::harness::PATIENCE,
                "a first keyframe forwarded",
                || {
                    let view = gw.registry.get(id).ok().and_then(|v| v.session);
                    async move {
                        let t = view?.timings;
                        Some((t.connect?, t.first_keyframe?))
                    }
                },
            )
            .await?;
            assert!(timings.0 > Duration::ZERO, "{timings:?}");
            let mut control = gw.grpc.clone();
            let ingest = control
                .get_ingest(whipgate_proto::pb::GetIngestRequest {
                    ingest_id: id.into(),
                })
                .await?
                .into_inner();
            let shown = ingest
                .ingest
                .and_then(|i| i.session)
                .and_then(|s| s.timings)
                .expect("timings in GetIngest");
            assert!(
                shown.connect_millis >= 1 && shown.first_keyframe_millis >= 1,
                "{shown:?}"
            );
        }
        batch.finish(&engine, true).await;
        gw.stop().await
    })
    .await?
}
