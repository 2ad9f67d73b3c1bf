//! Drain on SIGTERM: for the drain window `/healthz` answers 503 and gRPC health NOT_SERVING,
//! new publishes get 503 + Retry-After, and the live session keeps forwarding; then it ends
//! with reason shutdown.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use whipgate::registry::{EndReason, EventPayload};

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::{Publisher, Video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_health_first_while_sessions_keep_forwarding() -> Result<()> {
    let window = Duration::from_secs(3);
    let mut gw = TestGateway::start_with(|c| {
        c.drain = window;
        c.shutdown_grace = Duration::from_secs(10);
    })
    .await?;
    let sink = UdpSink::bind().await?;
    gw.register("live", Some(&sink), None).await?;
    gw.register("later", None, None).await?;
    let published = gw.publish("live", Some(Video::H264), false).await?;
    sink.recv_n(3, PATIENCE).await?;
    let mut events = gw.registry.subscribe(0)?;
    let mut health = gw.health().await?;

    gw.begin_shutdown();
    let started = Instant::now();
    let http = gw.http.clone();
    let healthz = gw.url("/healthz");
    eventually(PATIENCE, "/healthz to answer 503", || {
        let (http, healthz) = (http.clone(), healthz.clone());
        async move {
            let status = http.get(healthz).send().await.ok()?.status();
            (status == 503).then_some(())
        }
    })
    .await?;
    let status = health
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);

    let (_newcomer, offer) = Publisher::new(Some(Video::H264), false).await?;
    let refused = gw.post_offer("later", &offer, None).await?;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    // Media still flows inside the window.
    sink.drain();
    sink.recv_n(5, Duration::from_secs(1)).await?;
    assert!(
        started.elapsed() < window,
        "checks took longer than the window"
    );
    assert_eq!(gw.registry.live_count(), 1, "the session lives on");

    let ended = loop {
        let event = tokio::time::timeout(PATIENCE, events.live.recv())
            .await
            .context("no session-ended event")??;
        if let EventPayload::SessionEnded { reason, .. } = event.payload {
            break (reason, started.elapsed());
        }
    };
    if ended.0 != EndReason::Shutdown {
        bail!("ended with {:?}", ended.0);
    }
    assert!(
        ended.1 >= window - Duration::from_millis(100),
        "ended inside the window: {:?}",
        ended.1
    );
    gw.stop().await?;
    published.publisher.close().await;
    Ok(())
}
