//! A gateway alone: every answer comes from its registry, at once, without I/O.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{
    Answer, LiveEvents, Owner, Placement, RoutedCall, Subscription, Topology, TopologyError,
    WhipCalls, named_event,
};
use crate::control::NodeInfo;
use crate::error::Error;
use crate::registry::Registry;
use whipgate_media::continuity::Continuity;
use whipgate_proto::pb;

/// The topology of one gateway alone.
pub struct Local {
    registry: Registry,
    node: NodeInfo,
    node_id: Arc<str>,
}

impl Local {
    /// This gateway, `node`, over `registry`.
    pub fn new(registry: Registry, node: NodeInfo) -> Self {
        Local {
            node_id: Arc::from(node.id.as_str()),
            registry,
            node,
        }
    }
}

#[async_trait::async_trait]
impl Topology for Local {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn clustered(&self) -> bool {
        false
    }

    fn spawn(&self, _: Arc<dyn WhipCalls>, _: &TaskTracker, _: &CancellationToken) {}

    async fn refresh(&self, _: Option<&str>) {}

    async fn learn(&self, _: &str, _: Option<&str>) -> Option<Result<bool, Error>> {
        None
    }

    async fn placement(&self, _: &str) -> Option<Placement> {
        None
    }

    async fn claim(&self, _: &str, _: Uuid, _: &Mutex<Continuity>) -> Result<(), Error> {
        Ok(())
    }

    async fn owner_elsewhere(&self, _: &str) -> Result<Option<Owner>, TopologyError> {
        Ok(None)
    }

    async fn route(
        &self,
        node: &str,
        _: &RoutedCall,
        _: Duration,
    ) -> Result<Answer, TopologyError> {
        Err(TopologyError::Unavailable(format!(
            "no node {node}: this gateway runs alone"
        )))
    }

    async fn fill_sessions(&self, _: &mut [pb::Ingest]) {}

    async fn nodes(&self) -> Result<Vec<pb::Node>, TopologyError> {
        Ok(vec![self.node.describe(&self.registry)])
    }

    async fn subscribe(&self, epoch: u64, from_seq: u64) -> Result<Subscription, Error> {
        let subscription = self.registry.subscribe_at(epoch, from_seq)?;
        let next_seq = subscription.next_seq;
        let replay = subscription
            .replay
            .iter()
            .map(|e| named_event(e, &self.node_id))
            .collect();
        // Live only: a lag resumes from the first event this watcher was due.
        let last_seq = if from_seq == 0 {
            next_seq.saturating_sub(1)
        } else {
            from_seq.saturating_sub(1)
        };
        Ok(Subscription {
            replay,
            live: LiveEvents::from_registry(subscription.live, Arc::clone(&self.node_id)),
            last_seq,
            checked_epoch: None,
        })
    }
}

#[cfg(test)]
mod tests;
