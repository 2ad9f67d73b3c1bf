//! Another node at the WHIP edge: signalling that another node must answer is carried to it
//! through the topology ([`crate::topology::Topology::route`]) and its answer sent back as is,
//! so no client ever has to follow a redirect (RFC 9725 §4.5 lets clients ignore redirects on
//! PATCH and DELETE; browsers drop `Authorization` on a cross-origin one).
//!
//! - A PATCH or DELETE on a session another node holds (the topology names the owner) goes to
//!   that node. A POST that finds this node full or draining goes to the node with the most
//!   room (`--cluster-redirect-publish` answers 307 there instead).
//! - The node the client chose checks the bearer token against its copy of the
//!   registration; the token is never forwarded, and the owner trusts the routed call (which
//!   only cluster nodes can send).
//! - The answer is the owner's: its SDP names the owner's media address, so media flows
//!   straight to the owner; `Location` is a path, so the client's next PATCH or DELETE comes
//!   back to the node it chose, which carries it on again.
//! - The owner's side is [`answerer`]: it runs the same handlers a local request runs, minus
//!   the token check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::WhipState;
use crate::error::Error;
use crate::topology::{Answer, RoutedCall, TopologyError, WhipCalls};

/// Answer headers carried back from the owner (the rest are the transport's).
const CARRIED: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::ETAG,
    header::LOCATION,
    header::LINK,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("accept-patch"),
];
/// Largest answer body carried (an SDP answer is a few KiB).
const MAX_ANSWER: usize = 128 * 1024;
/// Time for the routed call on top of the owner's own answer deadline.
const ROUTE_MARGIN: Duration = Duration::from_secs(1);

/// The node holding session `session` of `ingest_id`, if it is another one. Only for an
/// ingest this node knows (the caller checked its token); the topology unreachable: 503.
pub(super) async fn held_elsewhere(
    state: &WhipState,
    ingest_id: &str,
    session: Uuid,
) -> Result<Option<String>, Error> {
    if state.registry.get(ingest_id).is_err()
        || state.registry.session_etag(ingest_id, session).is_some()
    {
        return Ok(None);
    }
    match state.topology.owner_elsewhere(ingest_id).await {
        Ok(Some(holder)) if holder.session == session.to_string() => Ok(Some(holder.node)),
        Ok(_) => Ok(None),
        Err(err) => Err(Error::Unavailable(format!(
            "{err}; cannot tell which node holds the session"
        ))),
    }
}

/// Hands an authenticated POST to node `node` and answers with its answer.
pub(super) async fn publish_on(
    state: &WhipState,
    node: &str,
    ingest_id: &str,
    offer: String,
    peer: Option<SocketAddr>,
) -> Result<Response, Error> {
    tracing::info!(ingest = %ingest_id, %node, "publish handed to a node with room");
    let call = RoutedCall::WhipPublish {
        ingest: ingest_id.to_owned(),
        offer,
        peer,
    };
    route(state, node, call).await
}

/// Sends a WHIP call to node `node` and turns its answer into this node's response.
pub(super) async fn route(
    state: &WhipState,
    node: &str,
    call: RoutedCall,
) -> Result<Response, Error> {
    let timeout = state.media.answer_timeout() + ROUTE_MARGIN;
    match state.topology.route(node, &call, timeout).await {
        Ok(answer) => response_of(answer, &call),
        Err(TopologyError::Busy(node)) => Err(Error::Overloaded(format!(
            "node {node} has too many pending calls"
        ))),
        Err(err) => Err(Error::Unavailable(format!(
            "the node holding this session did not answer: {err}"
        ))),
    }
}

/// The owner's answer as a response.
fn response_of(answer: Answer, call: &RoutedCall) -> Result<Response, Error> {
    match answer {
        Answer::Http {
            status,
            headers,
            body,
        } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(&value),
                ) && CARRIED.contains(&name)
                {
                    response.headers_mut().append(name, value);
                }
            }
            Ok(response)
        }
        Answer::IngestNotFound => Err(Error::IngestNotFound(call.ingest().to_owned())),
        Answer::SessionNotFound => Err(Error::SessionNotFound),
        Answer::Done { .. } | Answer::Invalid { .. } => Err(Error::internal(format!(
            "unexpected answer to a routed WHIP call: {answer:?}"
        ))),
    }
}

/// A response as a routed answer.
async fn answer_of(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            return Answer::Http {
                status: 502,
                headers: Vec::new(),
                body: "the owning node's answer was too large\n".into(),
            };
        }
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| CARRIED.contains(name))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    Answer::Http {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}

/// This node's side of routed WHIP calls.
pub fn answerer(state: WhipState) -> Arc<dyn WhipCalls> {
    Arc::new(Answerer(state))
}

struct Answerer(WhipState);

#[async_trait::async_trait]
impl WhipCalls for Answerer {
    async fn answer(&self, call: RoutedCall) -> Answer {
        let state = &self.0;
        let result = match call {
            RoutedCall::WhipPublish {
                ingest,
                offer,
                peer,
            } => {
                tracing::info!(ingest = %ingest, "publish routed here by another node");
                super::answer_offer(
                    state,
                    &ingest,
                    peer,
                    Bytes::from(offer),
                    super::Credential::Routed,
                )
                .await
            }
            RoutedCall::WhipPatch {
                ingest,
                session,
                if_match,
                fragment,
            } => match Uuid::parse_str(&session) {
                Ok(id) => super::patch_here(state, &ingest, id, &if_match, &fragment).await,
                Err(_) => Err(Error::SessionNotFound),
            },
            RoutedCall::WhipDelete { ingest, session } => match Uuid::parse_str(&session) {
                Ok(id) => Ok(super::end_session_here(state, &ingest, id)),
                Err(_) => Ok(super::deleted()),
            },
            other => Err(Error::BadRequest(format!(
                "not a WHIP call: {:?}",
                other.ingest()
            ))),
        };
        answer_of(result.unwrap_or_else(IntoResponse::into_response)).await
    }
}
