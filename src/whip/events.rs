//! `GET /events`: the control plane's event stream (`WatchEvents`) as Server-Sent Events, for
//! browsers and `curl`.
//!
//! Each event is one SSE message: `id:` its sequence number, `data:` its JSON
//! ([`crate::control::json::event`]). `Last-Event-ID` (or `?from_seq=`, with `?epoch=`) resumes; `?ingest_ids=`
//! and `?kinds=` (comma-separated) filter as `WatchEvents` does. What ends a gRPC watch with a
//! status ends this stream with an `event: error` message (`{"code", "message"}`): a resume
//! point out of the history (OUT_OF_RANGE), a watcher that lagged (RESOURCE_EXHAUSTED, with
//! where to resume), shutdown (UNAVAILABLE). The stream is the very one `WatchEvents` serves.
//!
//! With an API key configured, a request needs `Authorization: Bearer <key>`, or `?token=` with
//! a short-lived token from `POST /events/token` (EventSource cannot set headers). Watchers
//! are capped (503 beyond); comment lines every heartbeat keep proxies from closing the stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use ring::hmac;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::control::{self, NodeInfo, json, pb};
use crate::error::Error;
use crate::registry::{Registry, validate_ingest_id};

/// Concurrent SSE watchers allowed by default.
pub const DEFAULT_MAX_WATCHERS: usize = 64;
/// Time between heartbeat comments by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a token from `POST /events/token` is accepted.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// At most this many ingest ids in one filter.
const MAX_FILTER_IDS: usize = 256;

/// What the event-stream, snapshot and dashboard routes share.
#[derive(Clone)]
pub struct EventsHub {
    pub(super) registry: Registry,
    api_key: Option<hmac::Key>,
    raw_key: Option<Arc<[u8]>>,
    shutdown: CancellationToken,
    watchers: Arc<Semaphore>,
    heartbeat: Duration,
    pub(super) node: Arc<NodeInfo>,
    /// Cluster mode: the stream read is the cluster's.
    pub(super) cluster: Option<crate::cluster::ClusterNode>,
}

impl EventsHub {
    /// A hub over `registry`; streams end when `shutdown` is cancelled. With `api_key`, every
    /// route but the page itself wants the key (or a token derived from it).
    pub fn new(
        registry: Registry,
        api_key: Option<&str>,
        shutdown: CancellationToken,
        node: NodeInfo,
    ) -> Self {
        let raw_key = api_key.map(|k| Arc::from(k.as_bytes()));
        EventsHub {
            registry,
            api_key: api_key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k.as_bytes())),
            raw_key,
            shutdown,
            watchers: Arc::new(Semaphore::new(DEFAULT_MAX_WATCHERS)),
            heartbeat: DEFAULT_HEARTBEAT,
            node: Arc::new(node),
            cluster: None,
        }
    }

    /// In cluster mode, `/events` serves the cluster's one event stream.
    pub fn with_cluster(mut self, cluster: Option<crate::cluster::ClusterNode>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Changes the watcher cap and the heartbeat interval.
    pub fn with_limits(mut self, max_watchers: usize, heartbeat: Duration) -> Self {
        self.watchers = Arc::new(Semaphore::new(max_watchers));
        self.heartbeat = heartbeat;
        self
    }

    /// Checks the API key (header) or an events token (`?token=`); passes without a key.
    pub(super) fn authorize(&self, headers: &HeaderMap, token: Option<&str>) -> Result<(), Error> {
        let (Some(key), Some(raw)) = (&self.api_key, &self.raw_key) else {
            return Ok(());
        };
        if let Some(given) = super::bearer(headers) {
            use subtle::ConstantTimeEq;
            if bool::from(given.as_bytes().ct_eq(raw)) {
                return Ok(());
            }
        }
        match token {
            Some(token) if verify_token(key, token, SystemTime::now()) => Ok(()),
            _ => Err(Error::Unauthorized),
        }
    }
}

fn token_payload(expiry: u64) -> String {
    format!("whipgate-events:{expiry}")
}

/// A token valid until `now + TOKEN_TTL`: `<expiry unix seconds>.<hex HMAC-SHA256>` keyed
/// with the API key, so any node sharing the key accepts it and nothing is stored.
fn issue_token(key: &hmac::Key, now: SystemTime) -> String {
    let expiry = unix_secs(now) + TOKEN_TTL.as_secs();
    let tag = hmac::sign(key, token_payload(expiry).as_bytes());
    format!("{expiry}.{}", hex::encode(tag.as_ref()))
}

fn verify_token(key: &hmac::Key, token: &str, now: SystemTime) -> bool {
    let Some((expiry, tag)) = token.split_once('.') else {
        return false;
    };
    let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    let now = unix_secs(now);
    expiry >= now
        && expiry <= now + TOKEN_TTL.as_secs()
        && hmac::verify(key, token_payload(expiry).as_bytes(), &tag).is_ok()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `POST /events/token`: a token for `?token=` (needs the API key in the header).
pub(super) async fn token(
    State(hub): State<EventsHub>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let Some(key) = &hub.api_key else {
        // Nothing to prove without a key: an empty token is accepted everywhere.
        return Ok(Json(json!({ "token": "", "expires_in": 0 })).into_response());
    };
    hub.authorize(&headers, None)?;
    let token = issue_token(key, SystemTime::now());
    Ok(Json(json!({ "token": token, "expires_in": TOKEN_TTL.as_secs() })).into_response())
}

/// Builds the `WatchEvents` request a query and `Last-Event-ID` ask for.
fn watch_request(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<pb::WatchEventsRequest, Error> {
    let list = |name: &str| -> Vec<String> {
        query
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let ingest_ids = list("ingest_ids");
    if ingest_ids.len() > MAX_FILTER_IDS {
        return Err(Error::BadRequest(format!(
            "at most {MAX_FILTER_IDS} ingest ids in one filter"
        )));
    }
    for id in &ingest_ids {
        validate_ingest_id(id)?;
    }
    let kinds = list("kinds")
        .iter()
        .map(|k| {
            json::event_kind_from_name(k)
                .map(|k| k as i32)
                .ok_or_else(|| Error::BadRequest(format!("unknown event kind {k:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let number = |what: &str, v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| Error::BadRequest(format!("{what} must be a sequence number")))
    };
    // The browser's reconnect names the last event it saw; resume right after it.
    let from_seq = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(last)) => number("Last-Event-ID", last)?.saturating_add(1),
        Some(Err(_)) => return Err(Error::BadRequest("Last-Event-ID is not text".into())),
        None => match query.get("from_seq") {
            Some(v) => number("from_seq", v)?,
            None => 0,
        },
    };
    let epoch = match query.get("epoch") {
        Some(v) => number("epoch", v)?,
        None => 0,
    };
    Ok(pb::WatchEventsRequest {
        ingest_ids,
        kinds,
        from_seq,
        epoch,
    })
}

fn error_event(code: tonic::Code, message: &str) -> SseEvent {
    SseEvent::default()
        .event("error")
        .data(json!({ "code": control::code_name(code), "message": message }).to_string())
}

/// `GET /events`.
pub(super) async fn events(
    State(hub): State<EventsHub>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    hub.authorize(&headers, query.get("token").map(String::as_str))?;
    let request = watch_request(&headers, &query)?;
    let permit = Arc::clone(&hub.watchers)
        .try_acquire_owned()
        .map_err(|_| Error::Overloaded("too many event-stream watchers; retry later".into()))?;
    let source = control::WatchSource {
        registry: &hub.registry,
        cluster: hub.cluster.as_ref(),
        node_id: &hub.node.id,
    };
    let stream = match control::watch(source, &hub.shutdown, request).await {
        Ok(stream) => stream
            .map(move |item| {
                // The permit lives as long as the stream.
                let _held = &permit;
                Ok::<_, Infallible>(match item {
                    Ok(event) => SseEvent::default()
                        .id(event.seq.to_string())
                        .data(json::event(&event).to_string()),
                    Err(status) => error_event(status.code(), status.message()),
                })
            })
            .boxed(),
        Err(err) => {
            let event = error_event(err.grpc_code(), &err.to_string());
            futures_util::stream::once(async move { Ok::<_, Infallible>(event) }).boxed()
        }
    };
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(hub.heartbeat).text("heartbeat"))
        .into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests;
