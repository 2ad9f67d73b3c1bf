//! `GET /events`: the control plane's event stream (`WatchEvents`) as Server-Sent Events, for
//! browsers and `curl`.
//!
//! Each event is one SSE message: `id:` its sequence number, `data:` its JSON
//! ([`whipgate_proto::json::event`]). `Last-Event-ID` (or `?from_seq=`, with `?epoch=`) resumes; `?ingest_ids=`
//! and `?kinds=` (comma-separated) filter as `WatchEvents` does. What ends a gRPC watch with a
//! status ends this stream with an `event: error` message (`{"code", "message"}`): a resume
//! point out of the history (OUT_OF_RANGE), a watcher that lagged (RESOURCE_EXHAUSTED, with
//! where to resume), shutdown (UNAVAILABLE). The stream is the very one `WatchEvents` serves.
//!
//! Who may read it, and what they see, is [`super::whip::access`]: the API key, a single-use
//! events token from `POST /events/token` (EventSource cannot set headers), or anyone,
//! redacted, with `--public-dashboard`. Watchers are capped in total and per client (503
//! beyond); each stream is fed by its own task through a short queue, with a heartbeat
//! comment every interval (proxies keep the stream open, and a reader that stopped reading
//! fills its queue sooner): a watcher whose queue stays full for [`STALL`] is dropped and its
//! connection closed, and an anonymous watcher's stream ends after [`PUBLIC_LIFETIME`]
//! (EventSource reconnects with `Last-Event-ID`), so a slot held by a reader that does not
//! read is freed in bounded time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::whip::access::{ReadAccess, Reader, TOKEN_TTL};
use crate::control::{self, NodeInfo};
use crate::error::Error;
use crate::net::client::{CloseConnection, Slots};
use crate::registry::{Registry, validate_ingest_id};
use crate::topology::SharedTopology;
use crate::topology::local::Local;
use whipgate_proto::{json, pb};

/// Concurrent SSE watchers allowed by default.
pub const DEFAULT_MAX_WATCHERS: usize = 64;
/// Concurrent SSE watchers per client (IPv4 address, IPv6 /64) by default.
pub const DEFAULT_MAX_WATCHERS_PER_CLIENT: usize = 4;
/// Time between heartbeat comments by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// A watcher whose queue stays full this long is dropped (its connection closed).
pub const STALL: Duration = Duration::from_secs(30);
/// An anonymous (`--public-dashboard`) watcher's stream ends after this long.
pub const PUBLIC_LIFETIME: Duration = Duration::from_secs(600);
/// Messages queued per watcher before its feeding task waits for the connection.
const QUEUE: usize = 32;
/// At most this many ingest ids in one filter.
const MAX_FILTER_IDS: usize = 256;

/// What the event-stream, snapshot and dashboard routes share.
#[derive(Clone)]
pub struct EventsHub {
    pub(super) registry: Registry,
    pub(super) access: ReadAccess,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    watchers: Slots,
    heartbeat: Duration,
    stall: Duration,
    public_lifetime: Duration,
    /// Names this node, and says which event stream `/events` reads and which nodes the
    /// snapshot lists.
    pub(super) topology: SharedTopology,
}

impl EventsHub {
    /// A hub over `registry`, read with `access`; streams end when `shutdown` is cancelled.
    pub fn new(
        registry: Registry,
        access: ReadAccess,
        shutdown: CancellationToken,
        node: NodeInfo,
    ) -> Self {
        EventsHub {
            access,
            shutdown,
            tracker: TaskTracker::new(),
            watchers: Slots::new(DEFAULT_MAX_WATCHERS, DEFAULT_MAX_WATCHERS_PER_CLIENT),
            heartbeat: DEFAULT_HEARTBEAT,
            stall: STALL,
            public_lifetime: PUBLIC_LIFETIME,
            topology: std::sync::Arc::new(Local::new(registry.clone(), node)),
            registry,
        }
    }

    /// Reads events and nodes as `topology` says (default: this node alone, named `node`);
    /// in cluster mode `/events` serves the cluster's one event stream.
    pub fn with_topology(mut self, topology: SharedTopology) -> Self {
        self.topology = topology;
        self
    }

    /// The topology the hub reads.
    pub fn topology(&self) -> SharedTopology {
        std::sync::Arc::clone(&self.topology)
    }

    /// Streams are fed by tasks of `tracker` (the gateway's, so shutdown waits for them).
    pub fn with_tracker(mut self, tracker: TaskTracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Changes the watcher caps (in total, per client) and the heartbeat interval.
    pub fn with_limits(mut self, max: usize, per_client: usize, heartbeat: Duration) -> Self {
        self.watchers = Slots::new(max, per_client);
        self.heartbeat = heartbeat;
        self
    }

    /// Changes the stall and anonymous-lifetime bounds.
    pub fn with_bounds(mut self, stall: Duration, public_lifetime: Duration) -> Self {
        self.stall = stall;
        self.public_lifetime = public_lifetime;
        self
    }
}

/// The filter part of an events request, as a token binds it.
pub(crate) fn filter_of(query: &HashMap<String, String>) -> String {
    let get = |k: &str| query.get(k).map_or("", String::as_str);
    format!("ingest_ids={}&kinds={}", get("ingest_ids"), get("kinds"))
}

/// `POST /events/token[?ingest_ids=…&kinds=…]`: a single-use token that opens `GET /events`
/// with that filter (needs the API key in the header).
pub(super) async fn token(
    State(hub): State<EventsHub>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    if !hub.access.has_key() {
        return Err(Error::Forbidden(super::whip::access::OFF.into()));
    }
    if hub.access.check_key(&headers)? != Reader::Full {
        return Err(Error::Unauthorized);
    }
    // The filter must parse as /events would take it.
    watch_request(&HeaderMap::new(), &query)?;
    let token = hub.access.issue(&filter_of(&query), SystemTime::now())?;
    Ok(Json(json!({ "token": token, "expires_in": TOKEN_TTL.as_secs() })).into_response())
}

/// Builds the `WatchEvents` request a query and `Last-Event-ID` ask for.
pub(crate) fn watch_request(
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
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    close: Option<Extension<CloseConnection>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let reader = hub.access.check_events(
        &headers,
        query.get("token").map(String::as_str),
        &filter_of(&query),
        SystemTime::now(),
    )?;
    let request = watch_request(&headers, &query)?;
    let ip = peer.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(a))| a.ip(),
    );
    let slot = hub.watchers.take(ip).map_err(|refused| {
        hub.registry
            .metrics()
            .connections_refused
            .with_label_values(&["events", refused.as_str()])
            .inc();
        Error::Overloaded("too many event-stream watchers; retry later".into())
    })?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let feed = Feed {
        tx,
        reader,
        heartbeat: hub.heartbeat,
        stall: hub.stall,
        lifetime: (reader == Reader::Public).then_some(hub.public_lifetime),
        close: close.map(|Extension(c)| c),
        shutdown: hub.shutdown.clone(),
    };
    match control::watch(&*hub.topology, &hub.shutdown, request).await {
        Ok(stream) => {
            hub.tracker.spawn(async move {
                let _slot = slot;
                feed.run(stream).await;
            });
        }
        Err(err) => {
            let event = error_event(err.grpc_code(), &err.to_string());
            let _ = feed.tx.try_send(event);
        }
    }
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    let mut response = Sse::new(stream).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers responses unless told not to.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Feeds one watcher's queue: events (redacted for anonymous readers) and heartbeats.
struct Feed {
    tx: mpsc::Sender<SseEvent>,
    reader: Reader,
    heartbeat: Duration,
    stall: Duration,
    lifetime: Option<Duration>,
    close: Option<CloseConnection>,
    shutdown: CancellationToken,
}

impl Feed {
    async fn run(
        self,
        mut stream: impl futures_util::Stream<Item = Result<pb::Event, tonic::Status>> + Unpin,
    ) {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.reset();
        let end = async {
            match self.lifetime {
                Some(lifetime) => tokio::time::sleep(lifetime).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(end);
        loop {
            let message = tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        let mut data = json::event(&event);
                        if self.reader == Reader::Public {
                            json::redact_public(&mut data);
                        }
                        SseEvent::default().id(event.seq.to_string()).data(data.to_string())
                    }
                    Some(Err(status)) => {
                        // The last message: the stream ends after it.
                        let _ = self.send(error_event(status.code(), status.message())).await;
                        return;
                    }
                    None => return,
                },
                _ = heartbeat.tick() => SseEvent::default().comment("heartbeat"),
                () = &mut end => return,
            };
            if !self.send(message).await {
                return;
            }
        }
    }

    /// Queues `message`; false when the watcher is gone or has not taken anything for the
    /// stall time (then its connection is closed).
    async fn send(&self, message: SseEvent) -> bool {
        let sent = tokio::select! {
            biased;
            sent = self.tx.send_timeout(message, self.stall) => sent,
            // Shutting down: a watcher that is not reading holds nothing up.
            () = self.shutdown.cancelled() => return false,
        };
        match sent {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::debug!(stall = ?self.stall, "dropping an event-stream watcher that stopped reading");
                if let Some(close) = &self.close {
                    close.0.cancel();
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
