//! Control plane: the API key, gRPC health and shutdown.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;
use whipgate_proto::pb::event::Payload;

use super::{CONTROL, code, next_of, next_status, session_of, watch, watch_health};
use crate::harness::{PATIENCE, TestGateway};
use crate::publisher::Video;

fn with_auth<T>(message: T, authorization: &str) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.parse()?);
    Ok(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_control_rpcs_but_not_health() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.api_key = Some("k".into())).await?;
    let list = || pb::ListIngestsRequest::default();
    assert_eq!(
        code(gw.grpc.list_ingests(list()).await),
        Code::Unauthenticated
    );
    for wrong in ["Bearer nope", "Bearer ", "Basic k", "k"] {
        let answer = gw.grpc.list_ingests(with_auth(list(), wrong)?).await;
        assert_eq!(code(answer), Code::Unauthenticated, "{wrong:?}");
    }
    let watch = gw
        .grpc
        .watch_events(pb::WatchEventsRequest::default())
        .await;
    assert_eq!(code(watch), Code::Unauthenticated);
    let register = pb::RegisterIngestRequest {
        ingest_id: "keyed".into(),
        ..Default::default()
    };
    assert_eq!(
        code(gw.grpc.register_ingest(register.clone()).await),
        Code::Unauthenticated
    );
    let created = gw
        .grpc
        .register_ingest(with_auth(register, "Bearer k")?)
        .await?;
    assert!(created.into_inner().created);
    let listed = gw.grpc.list_ingests(with_auth(list(), "Bearer k")?).await?;
    assert_eq!(listed.into_inner().ingests.len(), 1);

    let mut health = gw.health().await?;
    for service in ["", CONTROL] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(request).await?.into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flips_health_and_ends_live_sessions_with_reason_shutdown() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut statuses = watch_health(&gw).await?;
    gw.register("bye", None, None).await?;
    let published = gw.publish("bye", Some(Video::H264), true).await?;
    let mut events = watch(&gw, &[], &[], 0).await?;

    let stopping = tokio::spawn(gw.stop());
    assert_eq!(next_status(&mut statuses).await?, ServingStatus::NotServing);
    drop(statuses); // See the next test.
    let event = next_of(&mut events, K::SessionEnded).await?;
    assert_eq!(
        payload!(event, SessionEnded).reason,
        pb::EndReason::Shutdown as i32
    );
    assert_eq!(event.session_id, session_of(&published.location));
    // Then the event stream ends: UNAVAILABLE, or a clean end.
    match tokio::time::timeout(PATIENCE, events.message()).await? {
        Err(status) => assert_eq!(status.code(), Code::Unavailable),
        Ok(None) => {}
        Ok(Some(event)) => bail!("event after shutdown: {event:?}"),
    }
    stopping.await??;
    published.publisher.close().await;
    Ok(())
}

/// gRPC client-side health checking keeps a Watch open on every connection: that must not hold
/// the gateway's shutdown for its whole grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_does_not_hold_shutdown_for_the_grace() -> Result<()> {
    let gw = TestGateway::start_with(|c| c.shutdown_grace = Duration::from_secs(10)).await?;
    let mut statuses = watch_health(&gw).await?;
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop());
    assert_eq!(next_status(&mut statuses).await?, ServingStatus::NotServing);
    // The watcher keeps reading; the gateway should end the stream once it stops serving.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = statuses.message().await {}
    });
    ensure!(
        ended.await.is_ok(),
        "health Watch stream still open {:?} into shutdown: it is never ended, so the gRPC \
         server's graceful shutdown waits for the whole shutdown_grace",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), stopping).await???;
    Ok(())
}
