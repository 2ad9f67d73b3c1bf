//! The edge's per-request guards and request metrics: per-client rate limits (429 +
//! Retry-After) on WHIP POST/PATCH/DELETE and, in a table of their own, on reads (GET, HEAD:
//! pages, the read API, metrics), a cap on requests in flight (503 + Retry-After), a
//! whole-request timeout (408), and request counters whose labels are bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::queue::NegotiationQueue;
use super::ratelimit::{self, RateLimiter};
use super::{WhipSettings, WhipState};
use crate::error::Error;

/// The edge's limits, shared by every request.
pub struct EdgeLimits {
    /// Per-client token buckets of writes (POST, PATCH, DELETE); `None`: off.
    pub rate: Option<RateLimiter>,
    /// Per-client token buckets of reads (GET, HEAD), at the same rate; `None`: off.
    pub read_rate: Option<RateLimiter>,
    /// Requests in flight.
    pub requests: Arc<Semaphore>,
    /// Negotiations (offer to answer) in flight, and the POSTs waiting for one.
    pub negotiations: NegotiationQueue,
    /// Whole-request deadline.
    pub request_timeout: Duration,
}

impl EdgeLimits {
    /// Limits as configured.
    pub fn new(config: &WhipSettings) -> Self {
        EdgeLimits {
            rate: RateLimiter::new(
                config.rate_limit_per_sec,
                config.rate_limit_burst,
                ratelimit::MAX_CLIENTS,
            ),
            read_rate: RateLimiter::new(
                config.rate_limit_per_sec,
                config.rate_limit_burst,
                ratelimit::MAX_CLIENTS,
            ),
            requests: Arc::new(Semaphore::new(config.http_max_requests)),
            negotiations: NegotiationQueue::new(
                config.max_negotiations,
                config.negotiation_wait,
                config.negotiation_queue,
                config.negotiation_queue_per_client,
            ),
            request_timeout: config.http_request_timeout,
        }
    }
}

/// Rate limit, concurrency cap and timeout, in that order.
pub(super) async fn guard(
    State(state): State<WhipState>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.limits;
    let limiter = match *request.method() {
        Method::POST | Method::PATCH | Method::DELETE => limits.rate.as_ref(),
        Method::GET | Method::HEAD => limits.read_rate.as_ref(),
        _ => None,
    };
    if let Some(limiter) = limiter
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && !carries_a_valid_publish_token(&state, &request)
        && let Err(wait) = limiter.check(peer.ip(), tokio::time::Instant::now())
    {
        state.registry.metrics().whip_rate_limited.inc();
        return Error::RateLimited(wait).into_response();
    }
    let Ok(_permit) = Arc::clone(&limits.requests).try_acquire_owned() else {
        return Error::Overloaded("too many requests in progress".into()).into_response();
    };
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::RequestTimeout.into_response(),
    }
}

/// A WHIP request with the right bearer token of a token-protected ingest is not held back
/// by the per-address rate limit (encoders behind one NAT start and stop together): a POST
/// below the publisher cap, a session's PATCH or DELETE at any load. Floods of wrong or
/// missing tokens stay limited. A map lookup and a hash.
fn carries_a_valid_publish_token(state: &WhipState, request: &Request) -> bool {
    let Some(rest) = request.uri().path().strip_prefix("/whip/") else {
        return false;
    };
    let (ingest_id, session) = match rest.split_once('/') {
        Some((id, session)) => (id, Some(session)),
        None => (rest, None),
    };
    if ingest_id.is_empty() || session.is_some_and(|s| s.is_empty() || s.contains('/')) {
        return false;
    }
    let Some(token) = super::bearer(request.headers()) else {
        return false;
    };
    match (request.method(), session) {
        (&Method::POST, None) => state.registry.vouches_for(ingest_id, token),
        (&Method::PATCH | &Method::DELETE, Some(_)) => {
            state.registry.token_matches(ingest_id, token)
        }
        _ => false,
    }
}

/// Counts every request by route template, method and status: all bounded sets (a path that
/// matches no route is `unmatched`, a method outside the standard ones `other`).
pub(super) async fn record_request(
    State(state): State<WhipState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = state.registry.metrics();
    metrics
        .whip_requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    metrics
        .whip_request_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: one of the standard methods, or `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        _ => "other",
    }
}
