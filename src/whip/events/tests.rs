//! The SSE endpoint through `Router::oneshot`: auth, tokens, resume, filters, errors, bounds.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;
use crate::registry::Caps;

const KEY: &str = "sekrit";

fn registry(history: usize) -> Registry {
    let metrics = Arc::new(Metrics::new(false).expect("metrics"));
    Registry::new(Caps { max_publishers: 4 }, history, metrics)
}

fn hub(registry: &Registry, key: Option<&str>) -> (EventsHub, CancellationToken) {
    let shutdown = CancellationToken::new();
    let hub = EventsHub::new(
        registry.clone(),
        key,
        shutdown.clone(),
        NodeInfo {
            id: "n1".into(),
            advertise_url: "http://127.0.0.1:1".into(),
        },
    );
    (hub, shutdown)
}

async fn get(hub: &EventsHub, uri: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
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

#[test]
fn tokens_expire_and_cannot_be_forged() {
    let key = hmac::Key::new(hmac::HMAC_SHA256, KEY.as_bytes());
    let other = hmac::Key::new(hmac::HMAC_SHA256, b"other");
    let now = SystemTime::now();
    let token = issue_token(&key, now);
    assert!(verify_token(&key, &token, now));
    assert!(verify_token(&key, &token, now + TOKEN_TTL));
    assert!(!verify_token(
        &key,
        &token,
        now + TOKEN_TTL + Duration::from_secs(2)
    ));
    assert!(!verify_token(&other, &token, now), "another key's token");
    let (expiry, tag) = token.split_once('.').expect("shape");
    let later = expiry.parse::<u64>().expect("expiry") + 3600;
    assert!(
        !verify_token(&key, &format!("{later}.{tag}"), now),
        "tampered expiry"
    );
    for garbage in ["", ".", "x.y", "1.zz", "99999999999999999999.00"] {
        assert!(!verify_token(&key, garbage, now), "{garbage}");
    }
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
    let with_token = get(&hub, &format!("/events?token={token}"), &[]).await;
    assert_eq!(with_token.status(), 200);
    let snapshot = get(&hub, &format!("/api/ingests?token={token}"), &[]).await;
    assert_eq!(snapshot.status(), 200);
    // The page itself is public: it asks for the key.
    assert_eq!(get(&hub, "/dashboard", &[]).await.status(), 200);
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
    let spec = |id: &str| crate::registry::IngestSpec {
        id: id.into(),
        video_target: None,
        audio_target: None,
        bearer_token: None,
        labels: Default::default(),
        video_codecs: crate::codec::VideoCodec::DEFAULT.to_vec(),
        audio_codecs: crate::codec::AudioCodec::DEFAULT.to_vec(),
        limits: Default::default(),
        redirect_url: None,
        simulcast_layer: None,
        replace_publisher: false,
    };
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
    let hub = hub.with_limits(1, Duration::from_millis(50));
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
