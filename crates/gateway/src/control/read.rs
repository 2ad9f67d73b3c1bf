//! The read side the control plane and the dashboard share: the ingests in proto form with
//! their live sessions (named as this node's, the ones other nodes hold filled in), and the
//! nodes. ListIngests, GetIngest, ListNodes and `GET /api/ingests` all read through here, so
//! their answers cannot diverge; what differs stays with the caller (ListIngests refreshes
//! the topology first and paginates, the dashboard lists everything and redacts).

use crate::registry::{IngestView, Registry};
use crate::topology::{Topology, TopologyError};
use whipgate_proto::pb;

/// Names this node (as `topology` names it) as the holder of the ingest's live session.
pub fn stamp(topology: &dyn Topology, mut ingest: pb::Ingest) -> pb::Ingest {
    if let Some(session) = &mut ingest.session {
        session.node_id.clone_from(&topology.node().id);
    }
    ingest
}

/// `views` in proto form, in their order: each live session named as this node's, then the
/// live sessions other nodes hold filled in (cluster mode; unreadable: left empty).
pub async fn ingests(topology: &dyn Topology, views: &[IngestView]) -> Vec<pb::Ingest> {
    let mut ingests: Vec<_> = views
        .iter()
        .map(|view| stamp(topology, super::convert::ingest(view)))
        .collect();
    topology.fill_sessions(&mut ingests).await;
    ingests
}

/// Every node (cluster mode: every node record in Redis; alone: this one).
pub async fn nodes(topology: &dyn Topology) -> Result<Vec<pb::Node>, TopologyError> {
    topology.nodes().await
}

/// [`nodes`], or this node alone, as it sees itself, when the node records are unreadable.
pub async fn nodes_or_this_one(topology: &dyn Topology, registry: &Registry) -> Vec<pb::Node> {
    match nodes(topology).await {
        Ok(nodes) => nodes,
        Err(err) => {
            tracing::debug!(%err, "node records unreadable");
            vec![topology.node().describe(registry)]
        }
    }
}
