//! The WHIP edge (RFC 9725): HTTP routes, handlers, CORS, request metrics.
//!
//! `POST /whip/{ingest_id}` publishes; `DELETE /whip/{ingest_id}/{session_id}` stops;
//! `PATCH` on the session takes trickle-ICE fragments. Every status comes from
//! [`crate::error::Error`].

pub mod access;
mod guards;
mod offer;
pub mod proxy;
mod queue;
pub use queue::{NegotiationQueue, Refused as NegotiationRefused, Slot as NegotiationSlot};
mod ratelimit;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use uuid::Uuid;

use crate::driver::Media;
use crate::edge::tokens::{self, Scope, SignedTokens};
use crate::edge::{dashboard, events};
use crate::error::{Bounded, Error};
use crate::registry::{Admitted, Registry, RegistryError, SessionCommand};
use crate::topology::{Placement, RoutedCall, SharedTopology};

pub use guards::EdgeLimits;
pub use offer::plan as plan_offer;
pub use ratelimit::RateLimiter;

const SDP: &str = "application/sdp";
const TRICKLE_ICE: &str = "application/trickle-ice-sdpfrag";

/// What the WHIP edge is told at start (`Config::whip_settings`): the pages' and read API's
/// access, CORS, body size, and the settings of its [`EdgeLimits`].
/// Not `Debug`: it holds the API key.
#[derive(Clone)]
pub struct WhipSettings {
    /// `--ice-server`: the `Link: rel="ice-server"` value of each configured server.
    pub ice_server_links: Vec<String>,
    /// `--api-key-file`: the key the read API (`/api/ingests`, `/events`) asks for.
    pub api_key: Option<String>,
    /// `--public-dashboard`: an anonymous reader gets the redacted view.
    pub public_dashboard: bool,
    /// `--cors-origins`: origins allowed to call WHIP.
    pub cors_origins: Vec<String>,
    /// `--api-cors-origins`: origins allowed to call the read API.
    pub api_cors_origins: Vec<String>,
    /// `--max-sdp-bytes`: the largest request body.
    pub max_sdp_bytes: usize,
    /// `--rate-limit-per-sec`, `--rate-limit-burst`: per-client token buckets (0: off).
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: u32,
    /// `--http-max-requests`: requests in flight.
    pub http_max_requests: usize,
    /// `--http-request-timeout-secs`: the whole-request deadline.
    pub http_request_timeout: std::time::Duration,
    /// `--max-negotiations`, `--negotiation-wait-ms`, `--negotiation-queue`,
    /// `--negotiation-queue-per-client`: negotiations in flight and the POSTs waiting.
    pub max_negotiations: usize,
    pub negotiation_wait: std::time::Duration,
    pub negotiation_queue: usize,
    pub negotiation_queue_per_client: usize,
}

/// What the handlers share.
#[derive(Clone)]
pub struct WhipState {
    /// The shared registry.
    pub registry: Registry,
    /// The media path.
    pub media: Media,
    /// `Link: rel="ice-server"` values sent on every 201.
    pub ice_server_links: Arc<[HeaderValue]>,
    /// Rate limits, caps and timeouts.
    pub limits: Arc<EdgeLimits>,
    /// The event stream, snapshot and dashboard routes' state.
    pub events: events::EventsHub,
    /// What this node knows of the others: placement, publisher claims, session owners.
    pub topology: SharedTopology,
    /// Keys of signed publish tokens (`--token-keys-file`), if configured.
    pub tokens: Option<Arc<SignedTokens>>,
}

impl axum::extract::FromRef<WhipState> for events::EventsHub {
    fn from_ref(state: &WhipState) -> Self {
        state.events.clone()
    }
}

impl WhipState {
    /// State for the router, built once everything it serves from exists: the registry, the
    /// media path, the event hub (`/events`, `/api/ingests`, the dashboard; its topology is the
    /// one publishers are placed, claimed and routed by) and the edge's limits (shared with
    /// whoever else holds them). `Link` headers are built once from the configured ICE servers.
    pub fn new(
        registry: Registry,
        media: Media,
        events: events::EventsHub,
        limits: Arc<EdgeLimits>,
        tokens: Option<Arc<SignedTokens>>,
        settings: &WhipSettings,
    ) -> Result<Self, Error> {
        let links = settings
            .ice_server_links
            .iter()
            .map(|link| HeaderValue::from_str(link).map_err(Error::internal))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WhipState {
            topology: events.topology(),
            registry,
            media,
            ice_server_links: links.into(),
            limits,
            events,
            tokens,
        })
    }
}

/// The WHIP router and pages, `/healthz`, and `/metrics` when `with_metrics`. WHIP's own
/// routes answer CORS for `--cors-origins` (publishers on other origins need it); the read
/// API (`/api/ingests`, `/events`, `/events/token`) for `--api-cors-origins` only (none by
/// default: same-origin); pages, `/healthz` and `/metrics` for none.
pub fn router(state: WhipState, settings: &WhipSettings, with_metrics: bool) -> Router {
    let whip = Router::new()
        .route("/whip/{ingest_id}", post(publish).get(no_content))
        .route(
            "/whip/{ingest_id}/{session_id}",
            axum::routing::delete(stop).patch(patch).get(no_content),
        )
        .layer(whip_cors(&settings.cors_origins));
    let mut api = dashboard::api_routes();
    if let Some(cors) = api_cors(&settings.api_cors_origins) {
        api = api.layer(cors);
    }
    let mut router = Router::new()
        .route("/publish/{ingest_id}", get(publish_page))
        .route("/healthz", get(healthz))
        .merge(dashboard::page_routes())
        .merge(whip)
        .merge(api);
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .layer(DefaultBodyLimit::max(settings.max_sdp_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), guards::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guards::record_request,
        ))
        .layer(middleware::map_response_with_state((), advertise_methods))
        .with_state(state)
}

/// A router serving only `/metrics` (for a separate metrics listener).
pub fn metrics_router(state: WhipState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn whip_cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
            Method::GET,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            HeaderName::from_static("accept-patch"),
            HeaderName::from_static("accept-post"),
        ])
}

/// CORS of the read API: the listed origins only (`*` is refused by the configuration);
/// `None` without any (same-origin only).
fn api_cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(
                origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ]),
    )
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn publish(
    State(state): State<WhipState>,
    Path(ingest_id): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    let result = publish_inner(&state, &ingest_id, peer, &headers, body).await;
    if let Err(err) = &result {
        tracing::info!(ingest = %Bounded(&ingest_id), status = %err.http_status(), err = %Bounded(&err.to_string()), "publish refused");
    }
    result
}

/// Records a refusal the edge made itself (admission records its own).
fn refused(state: &WhipState, ingest_id: &str, err: Error) -> Error {
    state
        .registry
        .publish_rejected(ingest_id, err.reject_reason(), &err.to_string());
    err
}

async fn publish_inner(
    state: &WhipState,
    ingest_id: &str,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    if !content_type_is(headers, SDP) {
        return Err(refused(state, ingest_id, Error::UnsupportedMediaType(SDP)));
    }
    // A valid id before anything uses it (an event, a lookup, a redirect).
    crate::registry::validate_ingest_id(ingest_id)?;
    let credential = authenticate(state, ingest_id, bearer(headers)).await?;
    answer_offer(state, ingest_id, peer, body, credential).await
}

/// How a POST proved it may publish.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Credential<'a> {
    /// Its bearer (or none), checked against the registration again at admission.
    Bearer(Option<&'a str>),
    /// A signed token for this ingest, verified at the edge.
    Signed,
    /// Another node of the cluster authenticated it and routed it here.
    Routed,
}

impl Credential<'_> {
    /// A publisher's own POST (not routed here): one a full node may hand to another.
    fn is_client(self) -> bool {
        !matches!(self, Credential::Routed)
    }
}

/// Admission, negotiation and the 201 of a POST authenticated here (a bearer, checked again
/// in the admission step, or a signed token) or by the node that routed it here (cluster
/// mode). A client's POST that finds this node full or draining goes on to a node with room
/// (a routed POST never does: no loops).
pub(crate) async fn answer_offer(
    state: &WhipState,
    ingest_id: &str,
    peer: Option<SocketAddr>,
    body: Bytes,
    credential: Credential<'_>,
) -> Result<Response, Error> {
    // One admission call: every registry check once, the offer planned against the spec in
    // the same step (pure codec matching, no I/O).
    let offer = std::str::from_utf8(&body).ok();
    // Taken before admission: a refused negotiation must not kick a REPLACE ingest's publisher.
    let client = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| {
        crate::net::client::client_key(p.ip())
    });
    let waited = std::time::Instant::now();
    let _negotiating = state
        .limits
        .negotiations
        .acquire(client)
        .await
        .map_err(|r| refused(state, ingest_id, Error::Overloaded(r.message().into())))?;
    state
        .registry
        .metrics()
        .negotiation_wait
        .observe(waited.elapsed().as_secs_f64());
    // A registration another node changed a moment ago counts. Unreachable: admission needs
    // the topology for the claim anyway; this node's copy decides until then.
    state.topology.refresh(Some(ingest_id)).await;
    let plan = |spec: &crate::registry::IngestSpec| {
        let offer = offer.ok_or_else(|| Error::BadRequest("SDP offer is not UTF-8".into()))?;
        plan_offer(offer, spec)
    };
    let admitted = match credential {
        Credential::Bearer(token) => state.registry.admit(ingest_id, token, plan),
        Credential::Signed | Credential::Routed => state.registry.admit_vouched(ingest_id, plan),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(err @ (RegistryError::CapReached(_) | RegistryError::Draining)) => {
            // A full or draining node hands the publisher to one with room, if there is one.
            if credential.is_client() {
                match state.topology.placement(ingest_id).await {
                    Some(Placement::Redirect(url)) => return redirect(&url),
                    Some(Placement::Route(node)) => {
                        let offer = offer.unwrap_or_default().to_owned();
                        return proxy::publish_on(state, &node, ingest_id, offer, peer).await;
                    }
                    None => {}
                }
            }
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    let (admission, plan) = match admitted {
        Admitted::Session(admission, plan) => (admission, plan),
        // Another node serves this ingest; the publisher re-POSTs there.
        Admitted::Redirect(url) => return redirect(&url),
    };
    let session_id = admission.session_id;
    let (video, audio) = (
        plan.video.as_ref().map(|c| c.codec),
        plan.audio.as_ref().map(|c| c.codec),
    );
    // Whatever the topology requires of a publisher (in cluster mode: one per ingest across
    // the cluster, the lease); refused, dropping the admission frees the slot.
    state
        .topology
        .claim(ingest_id, session_id, &admission.continuity)
        .await
        .map_err(|err| refused(state, ingest_id, err))?;
    // The planner accepted the body, so it is UTF-8.
    let offer = offer.unwrap_or_default().to_owned();
    let answer = state
        .media
        .publish(*admission, offer, plan)
        .await
        .map_err(|err| refused(state, ingest_id, err))?;
    state.registry.session_negotiated(session_id, video, audio);
    // Torn down, replaced or unregistered while negotiating: no 201 for a dead session.
    if !state
        .registry
        .publish_accepted(session_id, peer, &answer.etag)
    {
        let gone = if state.registry.is_draining() {
            Error::Draining
        } else {
            Error::SessionEnded
        };
        return Err(refused(state, ingest_id, gone));
    }
    tracing::info!(ingest = %ingest_id, %session_id, "publish accepted");
    let location = format!("/whip/{ingest_id}/{session_id}");
    let mut response = (StatusCode::CREATED, answer.sdp).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(Error::internal)?,
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&answer.etag).map_err(Error::internal)?,
    );
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE_ICE));
    for link in state.ice_server_links.iter() {
        h.append(header::LINK, link.clone());
    }
    Ok(response)
}

/// The POST's credentials, checked first against this node's copy of the registration: a
/// stranger costs a map lookup, never a store read or the registry's write lock. In cluster
/// mode an ingest this node has not heard of yet (registered elsewhere a moment ago) is read
/// from Redis and checked against its token hash there, at most [`UNKNOWN_LOOKUPS_PER_SEC`]
/// times a second per node, whoever asks.
async fn authenticate<'a>(
    state: &WhipState,
    ingest_id: &str,
    token: Option<&'a str>,
) -> Result<Credential<'a>, Error> {
    if let Some(signed) = signed_token(state, ingest_id, token) {
        signed.map_err(|err| refused(state, ingest_id, err))?;
        // The ingest must exist (here, or on another node of the cluster).
        return match state.registry.authenticate_publish(ingest_id, None) {
            Ok(()) | Err(RegistryError::Unauthorized) => Ok(Credential::Signed),
            Err(err @ RegistryError::IngestNotFound(_)) => {
                match state.topology.learn(ingest_id, None).await {
                    None => Err(refused(state, ingest_id, err.into())),
                    Some(Ok(_)) if state.registry.contains(ingest_id) => Ok(Credential::Signed),
                    Some(Ok(_)) => Err(Error::IngestNotFound(ingest_id.to_owned())),
                    Some(Err(err)) => Err(refused(state, ingest_id, err)),
                }
            }
            Err(err) => Err(refused(state, ingest_id, err.into())),
        };
    }
    if state.tokens.is_some() && state.registry.is_open(ingest_id) {
        // With keys configured, an ingest without a static token needs a signed one.
        return Err(refused(
            state,
            ingest_id,
            Error::TokenRefused("this ingest needs a signed publish token"),
        ));
    }
    match state.registry.authenticate_publish(ingest_id, token) {
        Ok(()) => Ok(Credential::Bearer(token)),
        Err(err @ RegistryError::IngestNotFound(_)) => {
            match state.topology.learn(ingest_id, token).await {
                // Nowhere else to look.
                None => Err(refused(state, ingest_id, err.into())),
                Some(Ok(true)) if state.tokens.is_some() && state.registry.is_open(ingest_id) => {
                    Err(refused(
                        state,
                        ingest_id,
                        Error::TokenRefused("this ingest needs a signed publish token"),
                    ))
                }
                Some(Ok(true)) => Ok(Credential::Bearer(token)),
                Some(Ok(false)) => Err(Error::IngestNotFound(ingest_id.to_owned())),
                Some(Err(err)) => Err(refused(state, ingest_id, err)),
            }
        }
        Err(err) => Err(refused(state, ingest_id, err.into())),
    }
}

/// With signed-token keys configured, a bearer shaped like a signed token is checked as one
/// (`None`: not one, or no keys). A static token that happens to verify as nothing falls back to
/// the registration's own token, when the ingest has one and it matches.
fn signed_token(
    state: &WhipState,
    ingest_id: &str,
    token: Option<&str>,
) -> Option<Result<(), Error>> {
    let tokens = state.tokens.as_ref()?;
    let token = token.filter(|t| tokens::looks_signed(t))?;
    let metrics = state.registry.metrics();
    match tokens.verify(token, ingest_id, Scope::Publish) {
        Ok(()) => {
            metrics.signed_tokens.with_label_values(&["accepted"]).inc();
            Some(Ok(()))
        }
        Err(_) if state.registry.token_matches(ingest_id, token) => None,
        Err(refusal) => {
            metrics
                .signed_tokens
                .with_label_values(&[refusal.as_str()])
                .inc();
            Some(Err(Error::TokenRefused(refusal.message())))
        }
    }
}

/// A session's DELETE or PATCH: the ingest's static token, or a signed token for it; with keys
/// configured an ingest without a static token needs a signed one here too (a leaked session
/// URL cannot end or restart a stream).
fn authorize_session(state: &WhipState, ingest_id: &str, token: Option<&str>) -> Result<(), Error> {
    if let Some(signed) = signed_token(state, ingest_id, token) {
        return signed;
    }
    if state.tokens.is_some() && state.registry.is_open(ingest_id) {
        return Err(Error::TokenRefused(
            "this ingest needs a signed publish token",
        ));
    }
    Ok(state.registry.authorize_session(ingest_id, token)?)
}

pub use crate::topology::UNKNOWN_LOOKUPS_PER_SEC;

/// A 307 to `url` (307 keeps the method and the body).
fn redirect(url: &str) -> Result<Response, Error> {
    let location = HeaderValue::from_str(url).map_err(Error::internal)?;
    Ok((
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response())
}

/// DELETE: ends the session, answering `200 OK` with `Content-Length: 0` (RFC 9725's overview
/// shows 200; OBS accepts nothing else and FFmpeg 9 cannot read a bodiless 204). Idempotent:
/// an unknown session is also 200. An ingest with a bearer token wants it here too (401
/// otherwise), so a leaked session URL cannot end a stream. Another node's session: the
/// DELETE is carried there ([`proxy`]).
async fn stop(
    State(state): State<WhipState>,
    Path((ingest_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    authorize_session(&state, &ingest_id, bearer(&headers))?;
    let Ok(id) = Uuid::parse_str(&session_id) else {
        return Ok(deleted());
    };
    if let Some(node) = proxy::held_elsewhere(&state, &ingest_id, id).await? {
        let call = RoutedCall::WhipDelete {
            ingest: ingest_id,
            session: session_id,
        };
        return proxy::route(&state, &node, call).await;
    }
    Ok(end_session_here(&state, &ingest_id, id))
}

/// DELETE of a session this node holds, authenticated.
pub(crate) fn end_session_here(state: &WhipState, ingest_id: &str, id: Uuid) -> Response {
    if state.registry.end_publisher_session(ingest_id, id) {
        tracing::info!(ingest = %Bounded(ingest_id), session_id = %id, "publisher sent DELETE");
    }
    deleted()
}

/// The answer to a DELETE: 200, an empty body, and says so.
pub(crate) fn deleted() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_LENGTH, HeaderValue::from_static("0"))],
    )
        .into_response()
}

/// PATCH with a trickle-ICE fragment (RFC 8840). whipgate is ICE-lite: it learns the
/// publisher's addresses from its connectivity checks, so trickled candidates are accepted
/// (204) and not needed. With `If-Match: *` the fragment's new ufrag/pwd restart ICE: 200 with
/// the gateway's new fragment and a new ETag; a failed restart leaves the session running.
/// Another node's session: the PATCH is carried there ([`proxy`]).
async fn patch(
    State(state): State<WhipState>,
    Path((ingest_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    if !content_type_is(&headers, TRICKLE_ICE) {
        return Err(Error::UnsupportedMediaType(TRICKLE_ICE));
    }
    authorize_session(&state, &ingest_id, bearer(&headers))?;
    let id = Uuid::parse_str(&session_id).map_err(|_| Error::SessionNotFound)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .ok_or(Error::PreconditionRequired)?
        .trim();
    let fragment = std::str::from_utf8(&body)
        .map_err(|_| Error::BadRequest("trickle-ice fragment is not UTF-8".into()))?;
    if let Some(node) = proxy::held_elsewhere(&state, &ingest_id, id).await? {
        let call = RoutedCall::WhipPatch {
            ingest: ingest_id,
            session: session_id,
            if_match: if_match.to_owned(),
            fragment: fragment.to_owned(),
        };
        return proxy::route(&state, &node, call).await;
    }
    patch_here(&state, &ingest_id, id, if_match, fragment).await
}

/// PATCH of a session this node holds, authenticated.
pub(crate) async fn patch_here(
    state: &WhipState,
    ingest_id: &str,
    id: Uuid,
    if_match: &str,
    fragment: &str,
) -> Result<Response, Error> {
    let etag = state
        .registry
        .session_etag(ingest_id, id)
        .ok_or(Error::SessionNotFound)?;
    if if_match == "*" {
        return ice_restart(state, ingest_id, id, fragment).await;
    }
    if if_match != etag {
        return Err(Error::PreconditionFailed);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn ice_restart(
    state: &WhipState,
    ingest_id: &str,
    session_id: Uuid,
    fragment: &str,
) -> Result<Response, Error> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = SessionCommand::IceRestart {
        fragment: fragment.to_owned(),
        reply,
    };
    state
        .registry
        .command_session(ingest_id, session_id, command)?;
    let restarted = match tokio::time::timeout(state.media.answer_timeout(), answer).await {
        Ok(Ok(Ok(restarted))) => restarted,
        Ok(Ok(Err(reason))) => {
            return Err(Error::BadRequest(format!("ICE restart failed: {reason}")));
        }
        Ok(Err(_)) => return Err(Error::SessionNotFound),
        Err(_) => return Err(Error::GatherTimeout),
    };
    state
        .registry
        .set_session_etag(ingest_id, session_id, &restarted.etag);
    tracing::info!(ingest = %ingest_id, %session_id, "ICE restarted");
    let etag = HeaderValue::from_str(&restarted.etag).map_err(Error::internal)?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(TRICKLE_ICE)),
            (header::ETAG, etag),
        ],
        restarted.fragment,
    )
        .into_response())
}

/// OPTIONS (CORS preflight or not) is answered by the CORS layer; this adds what WHIP
/// clients read from it: `Accept-Post` on the endpoint, `Accept-Patch` on both.
async fn advertise_methods(
    State(()): State<()>,
    method: Method,
    uri: axum::http::Uri,
    mut response: Response,
) -> Response {
    if method == Method::OPTIONS && uri.path().starts_with("/whip/") {
        let headers = response.headers_mut();
        if uri.path().trim_end_matches('/').matches('/').count() == 2 {
            headers.insert("accept-post", HeaderValue::from_static(SDP));
        }
        headers.insert("accept-patch", HeaderValue::from_static(TRICKLE_ICE));
    }
    response
}

/// The built-in browser publisher (self-contained: no CDN, nothing but this page).
async fn publish_page(Path(ingest_id): Path<String>) -> Result<Response, Error> {
    crate::registry::validate_ingest_id(&ingest_id)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../static/publish.html"),
    )
        .into_response())
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn healthz(State(state): State<WhipState>) -> Response {
    if state.registry.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<WhipState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.registry.metrics().render(),
    )
        .into_response()
}
