//! The RPCs that act on a live session, from any node: each runs locally first (as on a single
//! node) and, when the topology names another node as the live session's owner
//! ([`crate::topology::Topology::owner_elsewhere`]), is routed there and answers what the
//! owner answered. The topology unreachable, or an owner that does not answer within
//! [`ROUTE_TIMEOUT`]: UNAVAILABLE; too many routed calls in flight on this node:
//! RESOURCE_EXHAUSTED.

use std::sync::Arc;

use crate::error::Error;
use crate::registry::RegistryError;
use crate::topology::{Answer, Owner, ROUTE_TIMEOUT, RoutedCall, TopologyError};

use super::{ControlService, convert, limits, pb};

/// Routed calls one node has in flight at most.
pub(super) const MAX_ROUTED_IN_FLIGHT: usize = 64;

impl ControlService {
    /// The node holding `ingest`'s live session, if it is another one.
    async fn owner_elsewhere(&self, ingest: &str) -> Result<Option<Owner>, Error> {
        self.topology
            .owner_elsewhere(ingest)
            .await
            .map_err(unavailable)
    }

    /// Runs `call` on `holder`'s node; its boolean result or the status a single node gives.
    async fn route(&self, holder: &Owner, call: RoutedCall) -> Result<bool, Error> {
        let _permit = Arc::clone(&self.routed)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded("too many routed control calls in flight".into()))?;
        match self
            .topology
            .route(&holder.node, &call, ROUTE_TIMEOUT)
            .await
        {
            Ok(Answer::Done { flag }) => Ok(flag),
            Ok(Answer::IngestNotFound) => Err(Error::IngestNotFound(call.ingest().to_owned())),
            Ok(Answer::SessionNotFound) => Err(Error::SessionNotFound),
            Ok(Answer::Invalid { message }) => Err(Error::BadRequest(message)),
            Ok(Answer::Http { .. }) => Err(Error::internal("an HTTP answer to a control call")),
            Err(TopologyError::Busy(node)) => Err(Error::Overloaded(format!(
                "node {node} has too many pending control calls"
            ))),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// A local result, or the owner's when the local node has no live session but another does.
    async fn local_or_owner(
        &self,
        ingest: &str,
        local: Result<bool, RegistryError>,
        call: RoutedCall,
    ) -> Result<bool, Error> {
        match local {
            Ok(true) => Ok(true),
            Ok(false) | Err(RegistryError::IngestNotFound(_) | RegistryError::SessionNotFound) => {
                match self.owner_elsewhere(ingest).await? {
                    Some(holder) => self.route(&holder, call).await,
                    None => local.map_err(Error::from),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(super) async fn teardown_any(
        &self,
        req: pb::TeardownStreamRequest,
    ) -> Result<pb::TeardownStreamResponse, Error> {
        limits::check_reason(&req.reason)?;
        let local = self.registry.teardown(&req.ingest_id, &req.reason);
        let call = RoutedCall::Teardown {
            ingest: req.ingest_id.clone(),
            detail: req.reason,
        };
        let session_closed = self.local_or_owner(&req.ingest_id, local, call).await?;
        Ok(pb::TeardownStreamResponse { session_closed })
    }

    pub(super) async fn keyframe_any(&self, ingest_id: String) -> Result<(), Error> {
        let local = self.registry.request_keyframe(&ingest_id).map(|()| true);
        let call = RoutedCall::Keyframe {
            ingest: ingest_id.clone(),
        };
        self.local_or_owner(&ingest_id, local, call)
            .await
            .map(|_| ())
    }

    pub(super) async fn select_layer_any(
        &self,
        req: pb::SelectSimulcastLayerRequest,
    ) -> Result<pb::SelectSimulcastLayerResponse, Error> {
        let rid = convert::rid(&req.rid)?;
        let local = self.registry.select_layer(&req.ingest_id, rid.clone());
        if local.is_ok() {
            // The choice is durable (and shared) whether or not a session is live.
            self.registry.persist().ingest(&req.ingest_id).await?;
        }
        let call = RoutedCall::SelectLayer {
            ingest: req.ingest_id.clone(),
            rid,
        };
        let session_live = self.local_or_owner(&req.ingest_id, local, call).await?;
        Ok(pb::SelectSimulcastLayerResponse { session_live })
    }

    /// An ingest's limits: set here (and durable), and on the node with its live session.
    /// One `caps_changed` event either way: the node with the session emits it when it
    /// applied the change, this node otherwise.
    pub(super) async fn set_limits_any(
        &self,
        ingest_id: &str,
        limits: Option<pb::IngestLimits>,
    ) -> Result<(), Error> {
        let limits = limits.map(convert::limits).unwrap_or_default();
        // Asked first, so that this node knows whether to emit the event itself.
        let elsewhere = self.owner_elsewhere(ingest_id).await?;
        let Some(holder) = elsewhere else {
            self.registry.set_limits(ingest_id, limits)?;
            return Ok(self.registry.persist().ingest(ingest_id).await?);
        };
        let local = self.registry.set_limits_quietly(ingest_id, limits);
        if local.is_ok() {
            self.registry.persist().ingest(ingest_id).await?;
        }
        let call = RoutedCall::SetLimits {
            ingest: ingest_id.to_owned(),
            max_bitrate_bps: limits.max_bitrate_bps,
            max_session_secs: limits.max_session.map(|d| d.as_secs()),
        };
        let routed = self.route(&holder, call).await;
        if local.is_ok() && routed.is_err() {
            self.registry.announce_limits(ingest_id, limits);
        }
        match (local, routed) {
            // "Not live there" is not an answer for SetCaps: the limits are set here.
            (Ok(()), Ok(_) | Err(Error::IngestNotFound(_))) => Ok(()),
            (Err(_), Ok(_)) => Ok(()),
            (_, Err(err)) => Err(err),
        }
    }

    /// Removes an ingest; a live session on another node is ended there too. One
    /// `ingest_unregistered` event: the owner's (after its `session_ended`, as on a single
    /// node) when it knew the ingest, this node's otherwise.
    pub(super) async fn unregister_any(
        &self,
        ingest_id: &str,
    ) -> Result<pb::UnregisterIngestResponse, Error> {
        // Asked first: with Redis unreachable nothing changes (the removal could not be
        // made durable anyway).
        let Some(holder) = self.owner_elsewhere(ingest_id).await? else {
            let closed = self.registry.unregister(ingest_id)?;
            self.registry.persist().ingest(ingest_id).await?;
            return Ok(pb::UnregisterIngestResponse {
                session_closed: closed,
            });
        };
        let local = self.registry.unregister_quietly(ingest_id);
        if local.is_ok() {
            self.registry.persist().ingest(ingest_id).await?;
        }
        let call = RoutedCall::Unregistered {
            ingest: ingest_id.to_owned(),
            session: holder.session.clone(),
        };
        let routed = self.route(&holder, call).await;
        if local.is_ok() && routed.is_err() {
            self.registry.announce_unregistered(ingest_id);
        }
        let remote = match routed {
            Err(Error::IngestNotFound(_)) => false,
            other => other?,
        };
        match local {
            Ok(closed) => Ok(pb::UnregisterIngestResponse {
                session_closed: closed || remote,
            }),
            // Unknown here, but a live session elsewhere was ended (a retry after a routing
            // failure, or a registration this node has not seen).
            Err(RegistryError::IngestNotFound(_)) => Ok(pb::UnregisterIngestResponse {
                session_closed: remote,
            }),
            Err(err) => Err(err.into()),
        }
    }
}

fn unavailable(err: TopologyError) -> Error {
    Error::Unavailable(err.to_string())
}
