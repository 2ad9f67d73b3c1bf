//! HTTP edge hardening: per-client rate limits (429 + Retry-After), bounded metric labels,
//! slow clients cut by the header-read timeout while a real publish goes through, the
//! negotiation cap (503 + Retry-After), and the publish page keeping the token out of URLs.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use whipgate::Config;
use whipgate::edge::whip::{self, WhipState};

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::{Publisher, Video};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_requests_beyond_the_client_rate_get_429_with_retry_after() -> Result<()> {
    let gw = TestGateway::start_with(|c| {
        c.rate_limit_per_sec = 0.5;
        c.rate_limit_burst = 3;
    })
    .await?;
    // POST, PATCH and DELETE share the client's bucket.
    assert_eq!(gw.post_offer("a", "v=0\r\n", None).await?.status(), 404);
    let patch = gw
        .http
        .patch(gw.url("/whip/a/b"))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .send()
        .await?;
    assert_eq!(patch.status(), 404);
    assert_eq!(gw.delete("/whip/a/b").await?, 200);
    let limited = gw.post_offer("a", "v=0\r\n", None).await?;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .context("no Retry-After")?
        .to_str()?
        .parse()?;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Reads are not limited.
    assert_eq!(gw.http.get(gw.url("/healthz")).send().await?.status(), 200);
    let metrics = gw.metrics().await?;
    assert!(
        metrics.contains("whipgate_whip_rate_limited_total 1"),
        "{metrics}"
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_methods_and_paths_add_no_metric_series() -> Result<()> {
    let gw = TestGateway::start().await?;
    let series = |metrics: &str, name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count()
    };
    for i in 0..60 {
        let method = Method::from_bytes(format!("JUNK{i}").as_bytes())?;
        for path in [
            format!("/junk/{i}"),
            "/healthz".into(),
            format!("/whip/x{i}"),
        ] {
            gw.http
                .request(method.clone(), gw.url(&path))
                .send()
                .await?;
        }
        gw.http.get(gw.url(&format!("/nothing/{i}"))).send().await?;
    }
    let metrics = gw.metrics().await?;
    let requests = series(&metrics, "whipgate_whip_requests_total");
    let durations = series(&metrics, "whipgate_whip_request_duration_seconds_count");
    assert!(requests <= 8, "{requests} request series:\n{metrics}");
    assert!(durations <= 4, "{durations} duration series");
    assert!(metrics.contains("method=\"other\""));
    assert!(metrics.contains("route=\"unmatched\""));
    assert!(!metrics.contains("JUNK"));
    gw.stop().await
}

/// Reads until the server closes the connection; returns when that happened.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_by_the_header_timeout_while_a_publish_gets_its_201() -> Result<()> {
    let header_timeout = Duration::from_secs(2);
    let mut gw = TestGateway::start_with(|c| c.http_header_timeout = header_timeout).await?;
    let sink = UdpSink::bind().await?;
    gw.register("fast", Some(&sink), None).await?;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(gw.bound.http).await?;
        match i % 3 {
            // Nothing at all.
            0 => {}
            // A request line and part of the headers, then silence.
            1 => {
                stream
                    .write_all(b"POST /whip/fast HTTP/1.1\r\nHost: x\r\n")
                    .await?
            }
            // A header byte every 300 ms (the timeout is total, not per read).
            _ => {
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                    .await?;
            }
        }
        slow.push(stream);
    }
    let (drip, rest): (Vec<_>, Vec<_>) =
        slow.into_iter().enumerate().partition(|(i, _)| i % 3 == 2);
    let mut closings = tokio::task::JoinSet::new();
    for (_, mut stream) in drip {
        closings.spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return Instant::now(),
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(300)) => {
                        if stream.write_all(b"a").await.is_err() {
                            return Instant::now();
                        }
                    }
                }
            }
        });
    }
    for (_, stream) in rest {
        closings.spawn(closed_at(stream));
    }
    let gauge = gw.registry.metrics().http_connections.clone();
    eventually(PATIENCE, "300 slow connections accepted", || {
        let open = gauge.get();
        async move { (open >= 300).then_some(()) }
    })
    .await?;

    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let posted = Instant::now();
    let response = gw.post_offer("fast", &offer, None).await?;
    let took = posted.elapsed();
    assert_eq!(response.status(), 201);
    assert!(took < Duration::from_secs(1), "201 took {took:?}");
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    sink.recv_rtp(PATIENCE).await?;

    let mut closed = 0;
    while let Some(at) = closings.join_next().await {
        let after = at?.duration_since(opened);
        assert!(
            after >= header_timeout - Duration::from_millis(200),
            "closed before the header timeout: {after:?}"
        );
        assert!(
            after < header_timeout + Duration::from_secs(4),
            "not closed by the header timeout: {after:?}"
        );
        closed += 1;
    }
    assert_eq!(closed, 300);
    eventually(PATIENCE, "the connection gauge to drop", || {
        let open = gauge.get();
        async move { (open < 10).then_some(()) }
    })
    .await?;
    publisher.close().await;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_negotiations_wait_then_get_503_with_retry_after_and_admit_nothing() -> Result<()>
{
    let mut gw = TestGateway::start().await?;
    gw.register("busy", None, None).await?;
    let config = Config {
        max_negotiations: 1,
        negotiation_wait: Duration::from_millis(300),
        ..Config::loopback()
    };
    let settings = config.whip_settings();
    let events = whipgate::edge::events::EventsHub::new(
        gw.registry.clone(),
        whip::access::ReadAccess::new(None, false),
        tokio_util::sync::CancellationToken::new(),
        whipgate::control::NodeInfo::default(),
    );
    let limits = std::sync::Arc::new(whip::EdgeLimits::new(&settings));
    let state = WhipState::new(
        gw.registry.clone(),
        gw.media.clone(),
        events,
        limits,
        None,
        &settings,
    )?;
    let somebody = IpAddr::from([127, 0, 0, 9]);
    let held = state.limits.negotiations.acquire(somebody).await;
    let held = held.map_err(|r| anyhow::anyhow!(r.message()))?;
    let app = whip::router(state.clone(), &settings, true);
    let post = |offer: String| {
        Request::post("/whip/busy")
            .header("content-type", "application/sdp")
            .body(Body::from(offer))
    };
    let (publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let started = std::time::Instant::now();
    let response = app.clone().oneshot(post(offer.clone())?).await?;
    assert_eq!(
        response.status(),
        503,
        "the slot was not freed within the wait"
    );
    assert!(
        started.elapsed() >= config.negotiation_wait,
        "it waited first"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(gw.registry.live_count(), 0, "nothing admitted");
    // A POST that finds the slot taken waits for it and gets its answer once it is freed.
    let waiting = tokio::spawn(app.clone().oneshot(post(offer)?));
    let queued = state.limits.negotiations.clone();
    eventually(PATIENCE, "the POST to queue", || {
        let waiting = queued.waiting();
        async move { (waiting == 1).then_some(()) }
    })
    .await?;
    drop(held);
    let response = waiting.await??;
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get("location")
        .context("no Location")?
        .to_str()?
        .to_owned();
    assert_eq!(gw.delete(&location).await?, 200);
    publisher.close().await;
    gw.all_clean().await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_page_reads_the_token_from_the_fragment_only() -> Result<()> {
    let gw = TestGateway::start().await?;
    let page = gw
        .http
        .get(gw.url("/publish/cam"))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("new URLSearchParams(location.hash.slice(1))"));
    assert!(page.contains("fragment.get(\"token\")"));
    assert!(
        !page.contains("params.get(\"token\")"),
        "the query must not carry the token"
    );
    gw.stop().await
}

/// Every answer that is neither a 204 nor a stream (`/events`) says how long it is: HTTP
/// clients of encoders (FFmpeg's, libcurl in OBS) read a body by its Content-Length and
/// some cannot read a chunked or unterminated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_but_204_and_streams_carries_content_length() -> Result<()> {
    let gw = TestGateway::start_with(|c| c.api_key = Some("the-api-key".into())).await?;
    let mut register = tonic::Request::new(whipgate_proto::pb::RegisterIngestRequest {
        ingest_id: "sized".into(),
        ..Default::default()
    });
    register
        .metadata_mut()
        .insert("authorization", "Bearer the-api-key".parse()?);
    gw.grpc.clone().register_ingest(register).await?;
    let published = gw.publish("sized", Some(Video::H264), false).await?;
    let (_, offer) = Publisher::new(Some(Video::H264), false).await?;
    let http = &gw.http;
    let whip = gw.url("/whip/sized");
    let session = gw.url(&published.location);
    let bogus = gw.url("/whip/sized/00000000-0000-0000-0000-000000000000");
    let key = "Bearer the-api-key";
    let requests = vec![
        ("healthz", http.get(gw.url("/healthz"))),
        ("healthz HEAD", http.head(gw.url("/healthz"))),
        ("metrics", http.get(gw.url("/metrics"))),
        ("dashboard", http.get(gw.url("/dashboard"))),
        ("publish page", http.get(gw.url("/publish/sized"))),
        ("unknown path", http.get(gw.url("/nope"))),
        ("api without key", http.get(gw.url("/api/ingests"))),
        (
            "api",
            http.get(gw.url("/api/ingests"))
                .header("authorization", key),
        ),
        (
            "events token",
            http.post(gw.url("/events/token"))
                .header("authorization", key),
        ),
        (
            "preflight",
            http.request(Method::OPTIONS, &whip)
                .header("origin", "https://studio.example")
                .header("access-control-request-method", "POST"),
        ),
        ("wrong content type", http.post(&whip).body("v=0")),
        (
            "bad offer",
            http.post(&whip)
                .header("content-type", "application/sdp")
                .body("not sdp"),
        ),
        (
            "unknown ingest",
            http.post(gw.url("/whip/nobody"))
                .header("content-type", "application/sdp")
                .body(offer.clone()),
        ),
        (
            "second publisher",
            http.post(&whip)
                .header("content-type", "application/sdp")
                .body(offer),
        ),
        ("patch without if-match", http.patch(&session)),
        ("delete unknown session", http.delete(&bogus)),
        ("delete", http.delete(&session)),
        ("method not allowed", http.put(&whip)),
    ];
    let mut statuses = Vec::new();
    for (name, request) in requests {
        let response = request.send().await?;
        let status = response.status();
        statuses.push(format!("{name}: {status}"));
        let headers = response.headers();
        let streamed = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if status == 204 || streamed {
            continue;
        }
        assert!(
            headers.get("transfer-encoding").is_none(),
            "{name}: {status} is chunked"
        );
        let length = headers
            .get("content-length")
            .with_context(|| format!("{name}: {status} has no Content-Length"))?;
        let length: usize = length.to_str()?.parse()?;
        let body = response.bytes().await?;
        if name != "healthz HEAD" {
            assert_eq!(body.len(), length, "{name}");
        }
    }
    assert!(
        statuses.contains(&"delete: 200 OK".to_owned()),
        "{statuses:?}"
    );
    published.publisher.close().await;
    gw.stop().await
}
