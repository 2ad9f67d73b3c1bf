//! The SSE endpoint through `Router::oneshot`: auth, tokens, resume, filters, errors, bounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use tower::ServiceExt;

use super::*;
use crate::edge::whip::access::ReadAccess;
use crate::metrics::Metrics;
use crate::registry::Caps;

const KEY: &str = "sekrit";

fn registry(history: usize) -> Registry {
    let metrics = Arc::new(Metrics::new(false).expect("metrics"));
    Registry::new(Caps { max_publishers: 4 }, history, metrics)
}

/// A hub read with `key`; without one, open to anyone (`--public-dashboard`).
fn hub(registry: &Registry, key: Option<&str>) -> (EventsHub, CancellationToken) {
    let shutdown = CancellationToken::new();
    let hub = EventsHub::new(
        registry.clone(),
        ReadAccess::new(key, key.is_none()),
        shutdown.clone(),
        NodeInfo {
            id: "n1".into(),
            advertise_url: "http://127.0.0.1:1".into(),
        },
    );
    (hub, shutdown)
}

async fn get(hub: &EventsHub, uri: &str, headers: &[(&str, &str)]) -> Response {
    get_from(hub, uri, headers, None).await
}

/// A GET as the HTTP server hands it over: from `peer`, with a connection to close.
async fn get_from(
    hub: &EventsHub,
    uri: &str,
    headers: &[(&str, &str)],
    peer: Option<(SocketAddr, CloseConnection)>,
) -> Response {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some((addr, close)) = peer {
        request = request.extension(ConnectInfo(addr)).extension(close);
    }
    super::super::dashboard::routes()
        .with_state(hub.clone())
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

/// Reads the body until `until` matches the text so far (or the stream ends), for at most 5 s.
async fn read_until(response: Response, until: impl Fn(&str) -> bool) -> String {
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if until(&text) {
                break;
            }
        }
    })
    .await;
    text
}

/// The `data:` JSON of every message in an SSE text.
fn data(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[tokio::test]
async fn with_a_key_the_stream_wants_the_key_or_a_token() {
    let registry = registry(64);
    let (hub, _) = hub(&registry, Some(KEY));
    assert_eq!(get(&hub, "/events", &[]).await.status(), 401);
    assert_eq!(get(&hub, "/api/ingests", &[]).await.status(), 401);
    let wrong = get(&hub, "/events", &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(get(&hub, "/events?token=1.00", &[]).await.status(), 401);
    let ok = get(&hub, "/events", &[("authorization", "Bearer sekrit")]).await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let token_response = super::super::dashboard::routes()
        .with_state(hub.clone())
        .oneshot(
            Request::post("/events/token")
                .header("authorization", "Bearer sekrit")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(token_response.status(), 200);
    let body = axum::body::to_bytes(token_response.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["expires_in"], TOKEN_TTL.as_secs());
    let token = body["token"].as_str().expect("token");
    // Scoped: a token opens the event stream, not the snapshot.
    let snapshot = get(&hub, &format!("/api/ingests?token={token}"), &[]).await;
    assert_eq!(snapshot.status(), 401);
    // Bound to its filter: another filter does not spend it.
    let other = get(
        &hub,
        &format!("/events?token={token}&kinds=session_stats"),
        &[],
    )
    .await;
    assert_eq!(other.status(), 401);
    let with_token = get(&hub, &format!("/events?token={token}"), &[]).await;
    assert_eq!(with_token.status(), 200);
    // Single use.
    let again = get(&hub, &format!("/events?token={token}"), &[]).await;
    assert_eq!(again.status(), 401);
    let key_as_token = get(&hub, &format!("/events?token={KEY}"), &[]).await;
    assert_eq!(key_as_token.status(), 401);
    // The page itself is public: it asks for the key.
    assert_eq!(get(&hub, "/dashboard", &[]).await.status(), 200);
}

#[tokio::test]
async fn without_a_key_the_read_api_is_off_and_says_how_to_turn_it_on() {
    let registry = registry(64);
    let hub = EventsHub::new(
        registry.clone(),
        ReadAccess::new(None, false),
        CancellationToken::new(),
        NodeInfo::default(),
    );
    for uri in ["/events", "/api/ingests", "/events?from_seq=1"] {
        let response = get(&hub, uri, &[("authorization", "Bearer guess")]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri}");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("--api-key-file") && text.contains("--public-dashboard"),
            "{text}"
        );
    }
    let token = super::super::dashboard::routes()
        .with_state(hub.clone())
        .oneshot(
            Request::post("/events/token")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(token.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&hub, "/dashboard", &[]).await.status(), 200);
}

#[tokio::test]
async fn anonymous_readers_see_no_targets_sdps_addresses_or_session_ids() {
    let registry = registry(64);
    let hub = EventsHub::new(
        registry.clone(),
        ReadAccess::new(Some(KEY), true),
        CancellationToken::new(),
        NodeInfo::default(),
    );
    let mut spec = test_spec("cam");
    spec.video_target = Some("10.1.2.3:5004".parse().expect("addr"));
    registry.register(spec, false).expect("register");
    let body = |response: Response| async move {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let anonymous = body(get(&hub, "/api/ingests", &[]).await).await;
    assert!(anonymous.contains("\"cam\""), "{anonymous}");
    for private in ["10.1.2.3", "consumer_sdp", "video_target", "m=video"] {
        assert!(!anonymous.contains(private), "{private} in {anonymous}");
    }
    let full = body(get(&hub, "/api/ingests", &[("authorization", "Bearer sekrit")]).await).await;
    assert!(
        full.contains("10.1.2.3") && full.contains("m=video"),
        "{full}"
    );
    let stream = read_until(get(&hub, "/events?from_seq=1", &[]).await, |t| {
        t.contains("ingest_registered")
    })
    .await;
    assert!(stream.contains("ingest_registered"), "{stream}");
    assert!(
        !stream.contains("10.1.2.3") && !stream.contains("m=video"),
        "{stream}"
    );
}

fn test_spec(id: &str) -> crate::registry::IngestSpec {
    crate::registry::IngestSpec {
        id: id.into(),
        video_target: None,
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: whipgate_media::codec::VideoCodec::DEFAULT.to_vec(),
        audio_codecs: whipgate_media::codec::AudioCodec::DEFAULT.to_vec(),
        limits: Default::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    }
}

#[tokio::test]
async fn events_carry_their_seq_as_id_resume_and_filter() {
    let registry = registry(64);
    let (hub, _) = hub(&registry, None);
    registry.set_max_publishers(5);
    registry.set_max_publishers(6);
    registry.set_max_publishers(7);
    let all = read_until(get(&hub, "/events?from_seq=1", &[]).await, |t| {
        t.contains("id: 3")
    })
    .await;
    let seqs: Vec<u64> = data(&all)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{all}");
    assert!(all.contains("id: 1\n"), "{all}");
    assert_eq!(data(&all)[2]["caps_changed"]["caps"]["max_publishers"], 7);
    // The browser's reconnect: Last-Event-ID wins over the URL's from_seq.
    let resumed = read_until(
        get(&hub, "/events?from_seq=1", &[("last-event-id", "2")]).await,
        |t| t.contains("id: 3"),
    )
    .await;
    let seqs: Vec<u64> = data(&resumed)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3], "{resumed}");
    // Filters: no caps_changed for a session_stats-only watcher; nothing for another ingest.
    registry.set_max_publishers(8);
    let spec = test_spec;
    registry.register(spec("other"), false).expect("register");
    registry.register(spec("cam"), false).expect("register");
    let filtered = read_until(
        get(
            &hub,
            "/events?from_seq=1&kinds=session_stats,ingest_registered&ingest_ids=cam",
            &[],
        )
        .await,
        |t| t.contains("data:"),
    )
    .await;
    let only: Vec<_> = data(&filtered);
    assert_eq!(only.len(), 1, "{filtered}");
    assert_eq!(only[0]["kind"], "ingest_registered");
    assert_eq!(only[0]["ingest_id"], "cam");
    assert_eq!(
        get(&hub, "/events?kinds=bogus", &[]).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&hub, "/events?from_seq=x", &[]).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&hub, "/events?ingest_ids=a/b", &[]).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn out_of_range_and_lag_end_the_stream_with_an_error_event() {
    let registry = registry(16);
    let (hub, _) = hub(&registry, None);
    for n in 0..40 {
        registry.set_max_publishers(n);
    }
    let gone = read_until(get(&hub, "/events?from_seq=2", &[]).await, |_| false).await;
    assert!(gone.contains("event: error"), "{gone}");
    assert_eq!(data(&gone)[0]["code"], "OUT_OF_RANGE");
    let future = read_until(get(&hub, "/events?from_seq=999", &[]).await, |_| false).await;
    assert_eq!(data(&future)[0]["code"], "OUT_OF_RANGE", "{future}");
    // A live watcher that does not read while 40 events pass (channel depth 16) lags.
    let response = get(&hub, "/events", &[]).await;
    for n in 0..40 {
        registry.set_max_publishers(n);
    }
    let lagged = read_until(response, |_| false).await;
    let errors: Vec<_> = data(&lagged)
        .into_iter()
        .filter(|e| e.get("code").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "{lagged}");
    assert_eq!(errors[0]["code"], "RESOURCE_EXHAUSTED");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("from_seq=41")),
        "{lagged}"
    );
}

#[tokio::test]
async fn watchers_are_capped_heartbeats_flow_and_shutdown_ends_streams() {
    let registry = registry(16);
    let (hub, shutdown) = hub(&registry, None);
    let hub = hub.with_limits(1, 1, Duration::from_millis(50));
    let first = get(&hub, "/events", &[]).await;
    assert_eq!(first.status(), 200);
    let second = get(&hub, "/events", &[]).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key(header::RETRY_AFTER));
    let mut body = first.into_body().into_data_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("a heartbeat in time")
        .expect("open")
        .expect("chunk");
    assert!(String::from_utf8_lossy(&chunk).starts_with(": heartbeat"));
    shutdown.cancel();
    let mut rest = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream ends on shutdown");
    assert!(rest.contains("UNAVAILABLE"), "{rest}");
    drop(body);
    // The slot is free again once the stream is gone.
    assert_eq!(get(&hub, "/events", &[]).await.status(), 200);
}

#[tokio::test]
async fn watchers_are_capped_per_client() {
    let registry = registry(16);
    let (hub, _) = hub(&registry, Some(KEY));
    let hub = hub.with_limits(3, 2, DEFAULT_HEARTBEAT);
    let auth = [("authorization", "Bearer sekrit")];
    let from = |last: u8| {
        Some((
            SocketAddr::from(([192, 0, 2, last], 40000)),
            CloseConnection::default(),
        ))
    };
    let _a1 = get_from(&hub, "/events", &auth, from(1)).await;
    let _a2 = get_from(&hub, "/events", &auth, from(1)).await;
    assert_eq!(_a1.status(), 200);
    assert_eq!(_a2.status(), 200);
    let a3 = get_from(&hub, "/events", &auth, from(1)).await;
    assert_eq!(a3.status(), StatusCode::SERVICE_UNAVAILABLE, "per client");
    let _b1 = get_from(&hub, "/events", &auth, from(2)).await;
    assert_eq!(_b1.status(), 200, "another client is not blocked");
    let c1 = get_from(&hub, "/events", &auth, from(3)).await;
    assert_eq!(c1.status(), StatusCode::SERVICE_UNAVAILABLE, "in total");
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_dropped_and_its_connection_closed() {
    let registry = registry(4096);
    let (hub, _) = hub(&registry, Some(KEY));
    let hub = hub
        .with_limits(4, 1, DEFAULT_HEARTBEAT)
        .with_bounds(Duration::from_millis(100), PUBLIC_LIFETIME);
    let auth = [("authorization", "Bearer sekrit")];
    let close = CloseConnection::default();
    let peer = SocketAddr::from(([192, 0, 2, 1], 40000));
    // Opened, then never read, while events keep coming.
    let stalled = get_from(&hub, "/events", &auth, Some((peer, close.clone()))).await;
    assert_eq!(stalled.status(), 200);
    let busy = get_from(
        &hub,
        "/events",
        &auth,
        Some((peer, CloseConnection::default())),
    )
    .await;
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    for n in 0..200 {
        registry.set_max_publishers(n);
        if close.0.is_cancelled() {
            break;
        }
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(Duration::from_secs(5), close.0.cancelled())
        .await
        .expect("the stalled watcher's connection is closed");
    // Its slot is free again.
    let mut again = None;
    for _ in 0..100 {
        let response = get_from(
            &hub,
            "/events",
            &auth,
            Some((peer, CloseConnection::default())),
        )
        .await;
        if response.status() == 200 {
            again = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the slot was freed");
    drop(stalled);
}

#[tokio::test]
async fn anonymous_streams_end_after_their_lifetime_and_keyed_ones_do_not() {
    let registry = registry(16);
    let hub = EventsHub::new(
        registry.clone(),
        ReadAccess::new(Some(KEY), true),
        CancellationToken::new(),
        NodeInfo::default(),
    )
    .with_limits(4, 4, Duration::from_millis(50))
    .with_bounds(STALL, Duration::from_millis(300));
    let drain = |response: Response| async move {
        let mut body = response.into_body().into_data_stream();
        tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = body.next().await {}
        })
        .await
        .is_ok()
    };
    assert!(
        drain(get(&hub, "/events", &[]).await).await,
        "anonymous: ended"
    );
    let keyed = get(&hub, "/events", &[("authorization", "Bearer sekrit")]).await;
    assert!(!drain(keyed).await, "keyed: still open after 2 s");
}
