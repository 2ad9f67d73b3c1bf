//! Control calls that act on the node holding an ingest's live session, from any node.
//!
//! The node that receives `TeardownStream`, `RequestKeyframe`, `SelectSimulcastLayer`,
//! `SetCaps` (an ingest's limits) or `UnregisterIngest` finds the live session's node from the
//! ingest's lease ([`ClusterNode::live_elsewhere`]) and, when it is another node, sends it a
//! [`RoutedCall`] over [`super::rpc`]. Each node serves its own queue with one task
//! ([`serve`]), executing calls on its local registry and answering with an [`Answer`] that
//! the caller turns back into the status a single node would give.
//!
//! WHIP signalling is routed the same way, so that no client has to follow a redirect: a
//! PATCH or DELETE on a session another node holds, and a POST that a full or draining node
//! hands to a node with room, travel as [`RoutedCall::WhipPublish`], [`RoutedCall::WhipPatch`]
//! and [`RoutedCall::WhipDelete`] (the receiving edge checked the bearer token; it is never
//! forwarded) and come back as [`Answer::Http`]. The edge executes them ([`WhipCalls`], each
//! in its own task: a negotiation takes milliseconds, the other calls microseconds).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::lease::Holder;
use super::{ClusterError, ClusterNode};
use crate::error::Error;
use crate::registry::{Limits, Registry, RegistryError, validate_ingest_id};

/// How long a caller waits for the owner's answer (then UNAVAILABLE).
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one wait on this node's queue lasts (bounds how late cancellation is seen).
const POLL: Duration = Duration::from_secs(1);
/// Longest detail text carried by a call (the control plane's reason limit).
const MAX_DETAIL: usize = 256;

/// A control call for the node holding an ingest's live session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RoutedCall {
    /// `TeardownStream`: end the ingest's live session.
    Teardown {
        /// The ingest.
        ingest: String,
        /// The reason given to TeardownStream.
        detail: String,
    },
    /// `UnregisterIngest` on another node: forget the ingest here too, ending its session
    /// (reason: unregister).
    Unregistered {
        /// The ingest.
        ingest: String,
        /// The session the lease named (a UUID).
        session: String,
    },
    /// `RequestKeyframe`.
    Keyframe {
        /// The ingest.
        ingest: String,
    },
    /// `SelectSimulcastLayer`.
    SelectLayer {
        /// The ingest.
        ingest: String,
        /// The layer, `None`: the highest.
        rid: Option<String>,
    },
    /// `SetCaps` with an ingest's limits.
    SetLimits {
        /// The ingest.
        ingest: String,
        /// Bitrate cap, if any.
        max_bitrate_bps: Option<u64>,
        /// Duration cap in seconds, if any.
        max_session_secs: Option<u64>,
    },
    /// A WHIP POST the calling node's edge authenticated, for this node to answer.
    WhipPublish {
        /// The ingest.
        ingest: String,
        /// The SDP offer.
        offer: String,
        /// The publisher's HTTP address as the calling node saw it.
        peer: Option<std::net::SocketAddr>,
    },
    /// A WHIP PATCH (trickle or ICE restart) on a session of this node, authenticated.
    WhipPatch {
        /// The ingest.
        ingest: String,
        /// The session (a UUID).
        session: String,
        /// `If-Match` as sent.
        if_match: String,
        /// The trickle-ICE fragment.
        fragment: String,
    },
    /// A WHIP DELETE on a session of this node, authenticated.
    WhipDelete {
        /// The ingest.
        ingest: String,
        /// The session (a UUID).
        session: String,
    },
}

/// The owner's answer to a [`RoutedCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    /// Done; `flag` is the call's boolean result (session closed, session told).
    Done {
        /// The boolean the RPC answers.
        flag: bool,
    },
    /// The owner does not know the ingest.
    IngestNotFound,
    /// The owner has no live session for it.
    SessionNotFound,
    /// The call was malformed.
    Invalid {
        /// Why.
        message: String,
    },
    /// A WHIP call's HTTP answer, for the calling edge to send as is.
    Http {
        /// Status code.
        status: u16,
        /// Headers (names lowercase).
        headers: Vec<(String, String)>,
        /// Body (SDP, a trickle fragment, or an error text).
        body: String,
    },
}

/// What runs WHIP calls routed to this node: the WHIP edge.
#[async_trait::async_trait]
pub trait WhipCalls: Send + Sync {
    /// Answers a [`RoutedCall::WhipPublish`], [`RoutedCall::WhipPatch`] or
    /// [`RoutedCall::WhipDelete`].
    async fn answer(&self, call: RoutedCall) -> Answer;
}

impl RoutedCall {
    /// The ingest the call is about.
    pub fn ingest(&self) -> &str {
        match self {
            RoutedCall::Teardown { ingest, .. }
            | RoutedCall::Unregistered { ingest, .. }
            | RoutedCall::Keyframe { ingest }
            | RoutedCall::SelectLayer { ingest, .. }
            | RoutedCall::SetLimits { ingest, .. }
            | RoutedCall::WhipPublish { ingest, .. }
            | RoutedCall::WhipPatch { ingest, .. }
            | RoutedCall::WhipDelete { ingest, .. } => ingest,
        }
    }

    /// Whether the WHIP edge answers it.
    pub fn is_whip(&self) -> bool {
        matches!(
            self,
            RoutedCall::WhipPublish { .. }
                | RoutedCall::WhipPatch { .. }
                | RoutedCall::WhipDelete { .. }
        )
    }

    /// Checks what the caller could have got wrong (another node's bug, another version).
    fn validate(&self) -> Result<(), Error> {
        validate_ingest_id(self.ingest()).map_err(|e| Error::BadRequest(e.to_string()))?;
        match self {
            RoutedCall::Teardown { detail, .. } if detail.len() > MAX_DETAIL => Err(
                Error::BadRequest(format!("detail longer than {MAX_DETAIL} bytes")),
            ),
            RoutedCall::WhipPatch { session, .. } | RoutedCall::WhipDelete { session, .. }
                if Uuid::parse_str(session).is_err() =>
            {
                Err(Error::BadRequest("invalid session id".into()))
            }
            RoutedCall::WhipPatch { if_match, .. } if if_match.len() > 256 => {
                Err(Error::BadRequest("If-Match longer than 256 bytes".into()))
            }
            RoutedCall::SelectLayer { rid: Some(rid), .. }
                if rid.len() > 255
                    || !rid
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Err(Error::BadRequest("invalid rid".into()))
            }
            _ => Ok(()),
        }
    }
}

/// A routed call's body as the owning node reads it: JSON, then the checks of what a caller
/// could get wrong.
pub fn decode(body: &str) -> Result<RoutedCall, Error> {
    let call: RoutedCall = serde_json::from_str(body)
        .map_err(|e| Error::BadRequest(format!("unreadable call: {e}")))?;
    call.validate()?;
    Ok(call)
}

/// Runs `call` on this node's registry.
pub fn execute(registry: &Registry, call: RoutedCall) -> Answer {
    // The calling node wrote the change to the shared state itself: nothing for this node's
    // reloads to wait for.
    let ingest = call.ingest().to_owned();
    let answer = execute_here(registry, call);
    registry.settle(&ingest);
    answer
}

fn execute_here(registry: &Registry, call: RoutedCall) -> Answer {
    if let Err(message) = call.validate() {
        return Answer::Invalid {
            message: message.to_string(),
        };
    }
    let result = match call {
        RoutedCall::Teardown { ingest, detail } => registry.teardown(&ingest, &detail),
        RoutedCall::Unregistered { ingest, session } => {
            if Uuid::parse_str(&session).is_err() {
                return Answer::Invalid {
                    message: "invalid session id".into(),
                };
            }
            // The caller removed the registration from Redis already: forget it here too, so
            // the publisher cannot come back on this node (its session ends: unregister).
            registry.unregister(&ingest)
        }
        RoutedCall::Keyframe { ingest } => registry.request_keyframe(&ingest).map(|()| true),
        RoutedCall::WhipPublish { .. }
        | RoutedCall::WhipPatch { .. }
        | RoutedCall::WhipDelete { .. } => {
            return Answer::Invalid {
                message: "WHIP calls are answered by the edge".into(),
            };
        }
        RoutedCall::SelectLayer { ingest, rid } => registry.select_layer(&ingest, rid),
        RoutedCall::SetLimits {
            ingest,
            max_bitrate_bps,
            max_session_secs,
        } => {
            let limits = Limits {
                max_bitrate_bps,
                max_session: max_session_secs.map(Duration::from_secs),
            };
            let live = registry
                .get(&ingest)
                .map(|v| v.session.is_some())
                .unwrap_or(false);
            registry.set_limits(&ingest, limits).map(|()| live)
        }
    };
    match result {
        Ok(flag) => Answer::Done { flag },
        Err(RegistryError::IngestNotFound(_)) => Answer::IngestNotFound,
        Err(RegistryError::SessionNotFound) => Answer::SessionNotFound,
        Err(other) => Answer::Invalid {
            message: other.to_string(),
        },
    }
}

impl ClusterNode {
    /// Who holds `ingest`'s live session, if it is another node (from the lease).
    pub async fn live_elsewhere(&self, ingest: &str) -> Result<Option<Holder>, ClusterError> {
        let holder = self.leases().holder(ingest).await?;
        Ok(holder.filter(|h| h.node != self.settings().node_id))
    }

    /// Sends `call` to `holder`'s node and waits up to [`ROUTE_TIMEOUT`] for its answer.
    pub async fn route(&self, holder: &Holder, call: &RoutedCall) -> Result<Answer, ClusterError> {
        self.route_to(&holder.node, call, ROUTE_TIMEOUT).await
    }

    /// Sends `call` to node `node` and waits up to `timeout` for its answer.
    pub async fn route_to(
        &self,
        node: &str,
        call: &RoutedCall,
        timeout: Duration,
    ) -> Result<Answer, ClusterError> {
        let body = serde_json::to_string(call).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        let raw = self.rpc().call(node, &body, timeout).await?;
        if raw.len() > super::rpc::MAX_BODY {
            return Err(ClusterError::Corrupt("routed answer too large".into()));
        }
        serde_json::from_str(&raw)
            .map_err(|e| ClusterError::Corrupt(format!("routed answer from {node}: {e}")))
    }

    /// The live node with the most room for a publisher, other than this one.
    pub async fn placement_node(&self) -> Option<String> {
        let nodes = self.nodes().list().await.ok()?;
        super::nodes::least_loaded(&nodes, &self.settings().node_id).map(|n| n.id.clone())
    }
}

/// WHIP calls answered at once at most (each also takes the edge's own negotiation slot).
const MAX_WHIP_CALLS: usize = 64;

/// Serves the calls routed to this node until `cancel`: control calls one at a time (each is
/// a registry operation of microseconds and one Redis write for the answer), WHIP calls in
/// tasks of their own (tracked by `tracker`), at most [`MAX_WHIP_CALLS`] at once.
pub async fn serve(
    node: ClusterNode,
    registry: Registry,
    whip: std::sync::Arc<dyn WhipCalls>,
    tracker: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) {
    let whip_slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_WHIP_CALLS));
    let mut inbox = node.rpc().serve(&node.settings().node_id);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = inbox.next(POLL) => next,
        };
        let call = match next {
            Ok(Some(call)) => call,
            Ok(None) => continue,
            Err(ClusterError::Corrupt(detail)) => {
                tracing::warn!(%detail, "dropped a malformed routed call");
                continue;
            }
            Err(err) => {
                tracing::debug!(%err, "routed calls: queue unreachable");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
        };
        let answer = match serde_json::from_str::<RoutedCall>(&call.body) {
            Ok(routed) if routed.is_whip() => {
                if let Err(message) = routed.validate() {
                    Answer::Invalid {
                        message: message.to_string(),
                    }
                } else if let Ok(slot) = std::sync::Arc::clone(&whip_slots).try_acquire_owned() {
                    let whip = std::sync::Arc::clone(&whip);
                    tracker.spawn(async move {
                        let _slot = slot;
                        let answer = whip.answer(routed).await;
                        let body = serde_json::to_string(&answer).unwrap_or_default();
                        if let Err(err) = call.reply(&body).await {
                            tracing::warn!(%err, "answering a routed WHIP call failed");
                        }
                    });
                    continue;
                } else {
                    Answer::Http {
                        status: 503,
                        headers: vec![("retry-after".into(), "1".into())],
                        body: "too many WHIP calls in progress on the owning node\n".into(),
                    }
                }
            }
            Ok(routed) => {
                tracing::info!(call = ?routed, "routed control call");
                execute(&registry, routed)
            }
            Err(e) => Answer::Invalid {
                message: format!("unreadable call: {e}"),
            },
        };
        let body = serde_json::to_string(&answer).unwrap_or_default();
        if let Err(err) = call.reply(&body).await {
            tracing::warn!(%err, "answering a routed call failed");
        }
    }
}

#[cfg(test)]
mod tests;
