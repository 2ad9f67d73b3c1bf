//! This gateway as a cluster member: its identity, its heartbeat, and the leases of the
//! publishers it admitted.
//!
//! Admission asks [`ClusterNode::claim`] for the ingest's lease after the registry reserved the
//! slot and before negotiating: no lease, no session. [`ClusterNode::run`] heartbeats the node
//! record and re-asserts the lease of every live session every third of the lease time (so a
//! lease lost with Redis's data comes back as soon as Redis does), releases a lease as soon as
//! its session ends, and ends a local session whose lease another node holds (that node
//! admitted a publisher while we could not renew: it wins, no split brain).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::lease::{Acquired, Holder, Leases};
use super::nodes::{NodeRecord, Nodes};
use super::{ClusterError, Keys, Redis, Timeouts};
use crate::error::Error;
use crate::registry::{EndReason, EventPayload, Registry};
use crate::store::Store;

/// What makes this gateway a cluster member.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// `redis://…` or `redis+sentinel://…`.
    pub redis_url: String,
    /// This node's id (unique in the cluster).
    pub node_id: String,
    /// Base URL at which publishers reach this node's WHIP edge.
    pub advertise_url: String,
    /// Lease and heartbeat time to live.
    pub lease: Duration,
}

/// A cluster member (cheap to clone).
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

struct Inner {
    settings: NodeSettings,
    nodes: Nodes,
    leases: Leases,
    /// Routed control calls (to other nodes, and this node's queue).
    rpc: super::rpc::Rpc,
    /// Shared per-ingest state (output stream takeover).
    state: super::state::SharedState,
    /// Leases this node holds: ingest -> session.
    held: Mutex<HashMap<String, Uuid>>,
    /// Live session summaries (other nodes' sessions in GetIngest).
    summaries: super::summary::Summaries,
}

impl ClusterNode {
    /// The connection handle (connecting lazily) for `url`, authenticating with `trust`;
    /// `ca_pem`: the CA certificates a `rediss://` server's certificate must chain to.
    pub fn connect(
        url: &str,
        trust: super::trust::Trust,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Redis, ClusterError> {
        Redis::open_with_ca(url, Timeouts::default(), trust, ca_pem)
    }

    /// The member `settings` describe, on `redis` (from [`ClusterNode::connect`]).
    pub fn new(settings: NodeSettings, redis: Redis) -> Result<Self, ClusterError> {
        super::validate_node_id(&settings.node_id)
            .map_err(|e| ClusterError::BadUrl(e.to_string()))?;
        let keys = Keys::default();
        Ok(ClusterNode {
            inner: Arc::new(Inner {
                nodes: Nodes::new(redis.clone(), keys.clone()),
                leases: Leases::new(redis.clone(), keys.clone()),
                rpc: super::rpc::Rpc::new(redis.clone(), keys.clone(), &settings.node_id),
                state: super::state::SharedState::new(redis.clone(), keys.clone()),
                summaries: super::summary::Summaries::new(
                    redis.clone(),
                    keys.clone(),
                    &settings.node_id,
                ),
                settings,
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This node's settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.inner.settings
    }

    /// Live session summaries.
    pub fn summaries(&self) -> &super::summary::Summaries {
        &self.inner.summaries
    }

    /// The node records.
    pub fn nodes(&self) -> &Nodes {
        &self.inner.nodes
    }

    /// The leases.
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }

    /// Routed control calls.
    pub fn rpc(&self) -> &super::rpc::Rpc {
        &self.inner.rpc
    }

    /// Shared per-ingest state.
    pub fn shared_state(&self) -> &super::state::SharedState {
        &self.inner.state
    }

    /// The store of node `node_id` on the cluster's Redis.
    pub fn store(redis: &Redis, node_id: &str) -> Arc<dyn Store> {
        Arc::new(super::store::RedisStore::new(
            redis.clone(),
            Keys::default(),
            node_id,
        ))
    }

    /// Where a publisher refused here (full, draining) should go: the advertise URL of the
    /// least-loaded other node with room, or `None`.
    pub async fn placement(&self, ingest: &str) -> Option<String> {
        let nodes = self.inner.nodes.list().await.ok()?;
        let node = super::nodes::least_loaded(&nodes, &self.inner.settings.node_id)?;
        Some(format!(
            "{}/whip/{ingest}",
            node.advertise_url.trim_end_matches('/')
        ))
    }

    fn holder(&self, session: Uuid) -> Holder {
        Holder {
            node: self.inner.settings.node_id.clone(),
            session: session.to_string(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Uuid>> {
        // A poisoned map only means a panic elsewhere; the data is still a plain map.
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `ingest`'s lease for `session`, just admitted here. Another node's publisher:
    /// [`Error::PublisherConflict`] (409); Redis unreachable: [`Error::Unavailable`] (503 +
    /// Retry-After): no admission without a lease.
    pub async fn claim(&self, ingest: &str, session: Uuid) -> Result<(), Error> {
        let me = self.holder(session);
        let ttl = self.inner.settings.lease;
        let outcome = match self.inner.leases.acquire(ingest, &me, ttl).await {
            // Our own lease from a session the registry already ended here (its release is
            // still on its way): the registry admitted this one, so it is stale.
            Ok(Acquired::HeldBy(h)) if h.node == me.node => self
                .inner
                .leases
                .take_over(ingest, &me, ttl)
                .await
                .map(|_| Acquired::Won),
            other => other,
        };
        match outcome {
            Ok(Acquired::Won) => {
                self.held().insert(ingest.to_string(), session);
                Ok(())
            }
            Ok(Acquired::HeldBy(h)) => {
                tracing::info!(ingest, owner = %h.node, "publisher lease held by another node");
                Err(Error::PublisherConflict(ingest.to_string()))
            }
            Err(err) => Err(Error::Unavailable(format!(
                "{err}; no publisher is admitted without a lease"
            ))),
        }
    }

    async fn release(&self, ingest: &str, session: Uuid) {
        let ours = self.held().get(ingest) == Some(&session);
        if !ours {
            return;
        }
        self.held().remove(ingest);
        if let Err(err) = self
            .inner
            .leases
            .release(ingest, &self.holder(session))
            .await
        {
            // It expires within the lease time anyway.
            tracing::warn!(ingest, %err, "releasing a publisher lease failed");
        }
    }

    fn record(&self, registry: &Registry) -> NodeRecord {
        NodeRecord {
            id: self.inner.settings.node_id.clone(),
            advertise_url: self.inner.settings.advertise_url.clone(),
            live_publishers: registry.live_count() as u64,
            capacity: registry.caps().0.max_publishers as u64,
            draining: registry.is_draining(),
            last_heartbeat_ms: 0,
        }
    }

    /// Heartbeats and lease upkeep until `cancel`; then releases every lease and removes the
    /// node record.
    pub async fn run(self, registry: Registry, cancel: CancellationToken) {
        let ttl = self.inner.settings.lease;
        let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = match registry.subscribe(0) {
            Ok(s) => s.live,
            Err(err) => {
                tracing::error!(%err, "cluster node cannot watch its registry");
                return;
            }
        };
        let mut healthy = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let ok = self.upkeep(&registry).await;
                    if ok != healthy {
                        if ok {
                            tracing::info!("cluster store reachable again: heartbeats and leases resumed");
                        } else {
                            tracing::warn!("cluster store unreachable: new publishes answer 503 until it returns");
                        }
                        healthy = ok;
                    }
                }
                event = events.recv() => match event {
                    Ok(e) => {
                        if let (EventPayload::SessionEnded { .. }, Some(session)) = (&e.payload, e.session_id) {
                            self.release(&e.ingest_id, session).await;
                        }
                    }
                    // Missed ends are caught by the next upkeep.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                },
            }
        }
        let held: Vec<(String, Uuid)> = self.held().drain().collect();
        for (ingest, session) in held {
            let _ = self
                .inner
                .leases
                .release(&ingest, &self.holder(session))
                .await;
        }
        let _ = self.inner.nodes.remove(&self.inner.settings.node_id).await;
    }

    /// One heartbeat and one pass over the leases; `false` if Redis did not answer.
    async fn upkeep(&self, registry: &Registry) -> bool {
        let ttl = self.inner.settings.lease;
        if let Err(err) = self
            .inner
            .nodes
            .heartbeat(&self.record(registry), ttl)
            .await
        {
            tracing::debug!(%err, "heartbeat failed");
            return false;
        }
        let live: HashMap<String, Uuid> = registry
            .list()
            .into_iter()
            .filter_map(|v| v.session.map(|s| (v.spec.id, s.id)))
            .collect();
        let held: Vec<(String, Uuid)> = self.held().iter().map(|(i, s)| (i.clone(), *s)).collect();
        for (ingest, session) in held {
            if live.get(&ingest) != Some(&session) {
                self.release(&ingest, session).await;
                continue;
            }
            match self
                .inner
                .leases
                .reassert(&ingest, &self.holder(session), ttl)
                .await
            {
                Ok(Acquired::Won) => {}
                Ok(Acquired::HeldBy(h)) => {
                    tracing::warn!(ingest, owner = %h.node, "lease lost to another node: ending the local session");
                    self.held().remove(&ingest);
                    registry.end_session(
                        session,
                        EndReason::Replaced,
                        "another node holds the publisher lease",
                    );
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// The default node id: host name and HTTP port (a random suffix when the port is ephemeral).
pub fn default_node_id(http_port: u16) -> String {
    if http_port == 0 {
        let suffix = Uuid::new_v4().simple().to_string();
        format!("{}-{}", hostname(), &suffix[..8])
    } else {
        format!("{}-{http_port}", hostname())
    }
}

/// This machine's host name, made safe for a node id (`whipgate` if unknown).
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if clean.is_empty() {
        "whipgate".into()
    } else {
        clean
    }
}
