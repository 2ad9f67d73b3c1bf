//! This node's identity, as `ListNodes` and `Session.node_id` report it.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::registry::Registry;
use whipgate_proto::pb;

/// Who this node is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Stable node id.
    pub id: String,
    /// Base URL at which publishers reach this node's WHIP edge.
    pub advertise_url: String,
}

impl NodeInfo {
    /// A single node: its id from the host name and HTTP port, its URL from the HTTP address.
    pub fn local(http: SocketAddr) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "whipgate".to_owned());
        NodeInfo {
            id: format!("{host}-{}", http.port()),
            advertise_url: format!("http://{http}"),
        }
    }

    /// This node's record, from the registry's current numbers.
    pub fn describe(&self, registry: &Registry) -> pb::Node {
        let (caps, live) = registry.caps();
        pb::Node {
            node_id: self.id.clone(),
            advertise_url: self.advertise_url.clone(),
            live_publishers: u32::try_from(live).unwrap_or(u32::MAX),
            publisher_capacity: u32::try_from(caps.max_publishers).unwrap_or(u32::MAX),
            draining: registry.is_draining(),
            last_heartbeat: Some(prost_types::Timestamp::from(SystemTime::now())),
        }
    }
}
