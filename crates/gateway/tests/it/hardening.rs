//! Control-plane hardening: reflection (v1 and v1alpha) behind the API key with health open,
//! per-field size limits, the watcher cap, ListIngests pages, and no events for refused
//! publishes to ingests that do not exist.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1alpha;
use whipgate::registry::EventPayload;
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway};

fn authed<T>(message: T, key: &str) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    Ok(request)
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Lists services with a grpc.reflection.v1alpha client (what older and Python clients use).
async fn list_services_v1alpha(
    gw: &TestGateway,
    key: Option<&str>,
) -> Result<Result<Vec<String>, tonic::Status>> {
    let channel = Channel::from_shared(format!("http://{}", gw.bound.grpc))?
        .connect()
        .await?;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let message = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut request = tonic::Request::new(tokio_stream::once(message));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }
    let mut stream = match client.server_reflection_info(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    let response = stream.message().await?.context("no reflection response")?;
    match response.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            Ok(Ok(l.service.into_iter().map(|s| s.name).collect()))
        }
        other => bail!("unexpected reflection answer {other:?}"),
    }
}

/// Same with grpc.reflection.v1.
async fn list_services_v1(gw: &TestGateway, key: Option<&str>) -> Result<Code> {
    use tonic_reflection::pb::v1;
    let channel = Channel::from_shared(format!("http://{}", gw.bound.grpc))?
        .connect()
        .await?;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let message = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut request = tonic::Request::new(tokio_stream::once(message));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }
    Ok(match client.server_reflection_info(request).await {
        Ok(response) => match response.into_inner().message().await {
            Ok(Some(_)) => Code::Ok,
            Ok(None) => Code::Unknown,
            Err(status) => status.code(),
        },
        Err(status) => status.code(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_and_v1_sit_behind_the_key_and_health_does_not() -> Result<()> {
    let gw = TestGateway::start_with(|c| c.api_key = Some("k".into())).await?;
    let refused = list_services_v1alpha(&gw, None).await?;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let wrong = list_services_v1alpha(&gw, Some("kk")).await?;
    assert_eq!(wrong.unwrap_err().code(), Code::Unauthenticated);
    let services = list_services_v1alpha(&gw, Some("k"))
        .await?
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    assert!(
        services.iter().any(|s| s == "whipgate.v1.IngestControl"),
        "{services:?}"
    );
    assert_eq!(list_services_v1(&gw, None).await?, Code::Unauthenticated);
    assert_eq!(list_services_v1(&gw, Some("k")).await?, Code::Ok);
    let status = gw
        .health()
        .await?
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32, "health stays open");
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_services_without_a_key_configured() -> Result<()> {
    let gw = TestGateway::start().await?;
    let services = list_services_v1alpha(&gw, None)
        .await?
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    assert!(services.iter().any(|s| s == "whipgate.v1.IngestControl"));
    assert!(services.iter().any(|s| s == "grpc.health.v1.Health"));
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_fields_are_refused() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let base = || pb::RegisterIngestRequest {
        ingest_id: "big".into(),
        ..Default::default()
    };
    let too_many_labels = pb::RegisterIngestRequest {
        labels: (0..33).map(|i| (format!("k{i}"), "v".into())).collect(),
        ..base()
    };
    let long_value = pb::RegisterIngestRequest {
        labels: [("k".to_owned(), "v".repeat(257))].into(),
        ..base()
    };
    let long_token = pb::RegisterIngestRequest {
        bearer_token: "t".repeat(1025),
        ..base()
    };
    let long_url = pb::RegisterIngestRequest {
        redirect_url: format!("https://example.net/{}", "a".repeat(2048)),
        ..base()
    };
    for request in [too_many_labels, long_value, long_token, long_url] {
        let answer = gw.grpc.register_ingest(request).await;
        assert_eq!(code(answer), Code::InvalidArgument);
    }
    let ok = pb::RegisterIngestRequest {
        labels: (0..32)
            .map(|i| (format!("k{i}"), "v".repeat(256)))
            .collect(),
        bearer_token: "t".repeat(1024),
        ..base()
    };
    gw.grpc.register_ingest(ok).await?;
    let teardown = pb::TeardownStreamRequest {
        ingest_id: "big".into(),
        reason: "r".repeat(257),
    };
    assert_eq!(
        code(gw.grpc.teardown_stream(teardown).await),
        Code::InvalidArgument
    );
    let watch = pb::WatchEventsRequest {
        ingest_ids: (0..257).map(|i| format!("i{i}")).collect(),
        ..Default::default()
    };
    assert_eq!(
        code(gw.grpc.watch_events(watch).await),
        Code::InvalidArgument
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_capped_and_a_closed_one_frees_its_slot() -> Result<()> {
    let gw = TestGateway::start_with(|c| c.grpc_max_watchers = 2).await?;
    let watch = || pb::WatchEventsRequest::default();
    let first = gw.grpc.clone().watch_events(watch()).await?;
    let second = gw.grpc.clone().watch_events(watch()).await?;
    let third = gw.grpc.clone().watch_events(watch()).await;
    assert_eq!(code(third), Code::ResourceExhausted);
    drop(first);
    // The server notices the closed stream asynchronously.
    crate::harness::eventually(PATIENCE, "a watcher slot to free up", || {
        let mut grpc = gw.grpc.clone();
        async move { grpc.watch_events(watch()).await.ok() }
    })
    .await?;
    drop(second);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ingests_pages_through_everything_once() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    for id in ["e", "a", "d", "b", "c"] {
        gw.register(id, None, None).await?;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = gw
            .grpc
            .list_ingests(pb::ListIngestsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        pages += 1;
        assert!(page.ingests.len() <= 2);
        seen.extend(page.ingests.into_iter().map(|i| i.ingest_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let all = gw
        .grpc
        .list_ingests(pb::ListIngestsRequest::default())
        .await?
        .into_inner();
    assert_eq!(all.ingests.len(), 5, "default page size holds them all");
    assert!(all.next_page_token.is_empty());
    let bad = pb::ListIngestsRequest {
        page_token: "not a token!".into(),
        ..Default::default()
    };
    assert_eq!(code(gw.grpc.list_ingests(bad).await), Code::InvalidArgument);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_posts_to_unknown_ingests_emit_no_event() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut events = gw.registry.subscribe(0)?;
    for i in 0..50 {
        let response = gw.post_offer(&format!("nope{i}"), "v=0\r\n", None).await?;
        assert_eq!(response.status(), 404);
    }
    // A long id full of control characters: refused, counted, never echoed into an event.
    let junk = format!("/whip/{}", "%1b%5b31m%0a".repeat(300));
    let response = gw
        .http
        .post(gw.url(&junk))
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await?;
    assert!(response.status().is_client_error());
    assert!(
        events.live.try_recv().is_err(),
        "no event for unknown ingests"
    );
    let metrics = gw.metrics().await?;
    let not_found = metrics
        .lines()
        .find(|l| l.starts_with("whipgate_publish_rejections_total{reason=\"not_found\"}"))
        .context("no not_found counter")?;
    let count: u64 = not_found.rsplit(' ').next().unwrap_or("").parse()?;
    assert!(count >= 50, "{not_found}");

    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "real".into(),
        bearer_token: "t".into(),
        ..Default::default()
    })
    .await?;
    let refused = gw.post_offer("real", "v=0\r\n", Some("wrong")).await?;
    assert_eq!(refused.status(), 401);
    let mut kinds = Vec::new();
    while let Ok(event) = tokio::time::timeout(Duration::from_millis(500), events.live.recv()).await
    {
        let event = event?;
        assert_eq!(event.ingest_id, "real");
        if let EventPayload::PublishRejected { detail, .. } = &event.payload {
            assert!(detail.len() <= whipgate::error::MAX_LOGGED_BYTES + 3);
        }
        kinds.push(event.payload.kind_name());
    }
    assert_eq!(kinds, ["ingest_registered", "publish_rejected"]);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_answers_with_an_api_key_on_any_address() -> Result<()> {
    // A non-loopback bind needs a key: with one, the gateway starts (bound to all addresses,
    // reached here over loopback).
    let gw = TestGateway::start_with(|c| {
        c.grpc_listen = "0.0.0.0:0".parse().expect("address");
        c.api_key = Some("k".into());
    })
    .await?;
    let answer = gw
        .grpc
        .clone()
        .list_ingests(authed(pb::ListIngestsRequest::default(), "k")?)
        .await;
    assert_eq!(code(answer), Code::Ok);
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_control_plane_does_not_bind() -> Result<()> {
    let refused =
        TestGateway::start_with(|c| c.grpc_listen = "0.0.0.0:0".parse().expect("address")).await;
    let err = refused.err().context("an open control plane started")?;
    assert!(format!("{err:#}").contains("--api-key"), "{err:#}");
    Ok(())
}
