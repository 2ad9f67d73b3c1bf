//! A member of a Redis cluster: answers from the cluster's shared state ([`super::cluster`],
//! this implementation's internals) and routes what another node must do to that node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{
    Answer, LiveEvents, Owner, Placement, RoutedCall, Subscription, Topology, TopologyError,
    UNKNOWN_LOOKUPS_PER_SEC, WhipCalls,
};
use crate::app::config::Config;
use crate::control::NodeInfo;
use crate::edge::whip::RateLimiter;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Store;
use crate::topology::cluster::feed::EventFeed;
use crate::topology::cluster::{ClusterError, ClusterNode, Keys, NodeSettings, Redis};
use whipgate_media::continuity::Continuity;
use whipgate_proto::pb;

/// Cluster mode before the registry exists: the Redis connection and this node's id.
pub struct Plan {
    redis: Redis,
    url: String,
    node_id: String,
}

impl Plan {
    /// Checks the cluster secret of `config` and opens the (lazy) connection to `url`.
    pub fn from_config(url: &str, config: &Config, metrics: &Metrics) -> Result<Self, Error> {
        let trust = config
            .cluster_trust()?
            .with_counter(metrics.cluster_untrusted.clone());
        if trust.is_insecure() {
            tracing::warn!(
                "INSECURE CLUSTER: --insecure-cluster without a cluster secret; anyone \
                 who can write to Redis can tear down sessions on any node, redirect \
                 media to other targets and take over publishers"
            );
        }
        let ca = match &config.cluster_redis_ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::BadRequest(format!(
                    "reading --cluster-redis-ca {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let redis =
            ClusterNode::connect(url, trust, ca).map_err(|e| Error::BadRequest(e.to_string()))?;
        let node_id = config.node_id.clone().unwrap_or_else(|| {
            crate::topology::cluster::node::default_node_id(config.http_listen.port())
        });
        Ok(Plan {
            redis,
            url: url.to_owned(),
            node_id,
        })
    }

    /// This node's store on the cluster's Redis.
    pub fn store(&self) -> Arc<dyn Store> {
        ClusterNode::store(&self.redis, &self.node_id)
    }

    /// Joins the cluster: the member, its event stream (this node's events appended to it, a
    /// tail that reads it back) and the reload of registrations other nodes change.
    pub async fn start(
        self,
        config: &Config,
        http: std::net::SocketAddr,
        https: bool,
        registry: &Registry,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<RedisTopology, Error> {
        let scheme = if https { "https" } else { "http" };
        let advertise_url = config.advertise_url.clone().unwrap_or_else(|| {
            if http.ip().is_unspecified() {
                let host = crate::topology::cluster::node::hostname();
                format!("{scheme}://{host}:{}", http.port())
            } else {
                format!("{scheme}://{http}")
            }
        });
        let settings = NodeSettings {
            redis_url: self.url,
            node_id: self.node_id,
            advertise_url,
            lease: config.cluster_lease,
        };
        tracing::info!(node = %settings.node_id, advertise = %settings.advertise_url, redis = %self.redis.describe(), "cluster mode");
        let node_info = NodeInfo {
            id: settings.node_id.clone(),
            advertise_url: settings.advertise_url.clone(),
        };
        let cluster = ClusterNode::new(settings, self.redis.clone())
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        // One event stream for the cluster: watchers on this node read it.
        let feed = EventFeed::start(
            self.redis,
            Keys::default(),
            &node_info.id,
            config.event_history,
            registry,
            tracker,
            cancel,
        )
        .await;
        tracker.spawn(crate::topology::cluster::invalidate::run(
            feed.receiver(),
            node_info.id.clone(),
            registry.clone(),
            cancel.clone(),
        ));
        Ok(RedisTopology {
            cluster,
            feed,
            registry: registry.clone(),
            node: node_info,
            redirect_publish: config.cluster_redirect_publish,
            unknown_lookups: RateLimiter::new(
                f64::from(UNKNOWN_LOOKUPS_PER_SEC),
                UNKNOWN_LOOKUPS_PER_SEC,
                1,
            )
            .unwrap_or_else(|| unreachable!("a positive rate")),
        })
    }
}

/// The topology of a cluster member.
pub struct RedisTopology {
    cluster: ClusterNode,
    feed: EventFeed,
    registry: Registry,
    node: NodeInfo,
    /// A full node answers a POST with 307 instead of routing it.
    redirect_publish: bool,
    /// Lookups of registrations this node has no copy of (one node-wide bucket).
    unknown_lookups: RateLimiter,
}

impl RedisTopology {
    /// The cluster member (for diagnostics and tests).
    pub fn cluster(&self) -> &ClusterNode {
        &self.cluster
    }
}

fn unavailable(err: ClusterError) -> TopologyError {
    TopologyError::Unavailable(err.to_string())
}

#[async_trait::async_trait]
impl Topology for RedisTopology {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn clustered(&self) -> bool {
        true
    }

    fn spawn(&self, whip: Arc<dyn WhipCalls>, tracker: &TaskTracker, cancel: &CancellationToken) {
        tracker.spawn(
            self.cluster
                .clone()
                .run(self.registry.clone(), cancel.clone()),
        );
        tracker.spawn(crate::topology::cluster::calls::serve(
            self.cluster.clone(),
            self.registry.clone(),
            whip,
            tracker.clone(),
            cancel.clone(),
        ));
    }

    async fn refresh(&self, ingest: Option<&str>) {
        let result = match ingest {
            Some(id) if crate::registry::validate_ingest_id(id).is_ok() => {
                self.registry.refresh(id).await
            }
            Some(_) => Ok(()),
            None => self.registry.refresh_all().await,
        };
        if let Err(err) = result {
            tracing::debug!(%err, "reading shared registrations failed; answering from this node");
        }
    }

    async fn learn(&self, ingest: &str, token: Option<&str>) -> Option<Result<bool, Error>> {
        let allowed = self
            .unknown_lookups
            .check(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                tokio::time::Instant::now(),
            )
            .is_ok();
        if !allowed {
            return Some(Ok(false));
        }
        Some(
            self.registry
                .learn(ingest, token)
                .await
                .map_err(Error::from),
        )
    }

    async fn placement(&self, ingest: &str) -> Option<Placement> {
        if self.redirect_publish {
            self.cluster
                .placement(ingest)
                .await
                .map(Placement::Redirect)
        } else {
            self.cluster.placement_node().await.map(Placement::Route)
        }
    }

    async fn claim(
        &self,
        ingest: &str,
        session: Uuid,
        continuity: &Mutex<Continuity>,
    ) -> Result<(), Error> {
        // One publisher per ingest across the cluster: no lease, no session.
        // The checkpoint is read while the lease is claimed (both in flight on the one
        // multiplexed connection): it is used only once the claim succeeded.
        let (claimed, stored) = tokio::join!(
            self.cluster.claim(ingest, session),
            self.cluster.stored_outputs(ingest)
        );
        claimed?;
        take_over_outputs(ingest, stored, continuity);
        Ok(())
    }

    async fn owner_elsewhere(&self, ingest: &str) -> Result<Option<Owner>, TopologyError> {
        let holder = self
            .cluster
            .live_elsewhere(ingest)
            .await
            .map_err(unavailable)?;
        Ok(holder.map(|h| Owner {
            node: h.node,
            session: h.session,
        }))
    }

    async fn route(
        &self,
        node: &str,
        call: &RoutedCall,
        timeout: Duration,
    ) -> Result<Answer, TopologyError> {
        self.cluster
            .route_to(node, call, timeout)
            .await
            .map_err(|err| match err {
                ClusterError::NodeBusy(node) => TopologyError::Busy(node),
                other => unavailable(other),
            })
    }

    async fn fill_sessions(&self, ingests: &mut [pb::Ingest]) {
        if let Err(err) = self.cluster.summaries().fill(ingests).await {
            tracing::debug!(%err, "session summaries unreadable");
        }
    }

    async fn nodes(&self) -> Result<Vec<pb::Node>, TopologyError> {
        self.cluster
            .nodes()
            .list()
            .await
            .map(|records| records.iter().map(node_to_pb).collect())
            .map_err(unavailable)
    }

    async fn subscribe(&self, epoch: u64, from_seq: u64) -> Result<Subscription, Error> {
        let sub = self.feed.subscribe(epoch, from_seq).await?;
        Ok(Subscription {
            replay: sub.replay,
            live: LiveEvents::from_stream(sub.live),
            last_seq: sub.last_seq,
            checked_epoch: Some(sub.epoch),
        })
    }
}

/// Continues the ingest's output streams from another node's checkpoint, if that is newer:
/// a publisher moving here keeps its consumer's SSRC and sequence numbers going forward.
/// `stored` is the ingest's checkpoint as read from Redis.
fn take_over_outputs(
    ingest_id: &str,
    stored: Result<Option<crate::store::StreamRecord>, ClusterError>,
    continuity: &Mutex<Continuity>,
) {
    let continued = stored.map(|record| {
        record.is_some_and(|r| crate::topology::cluster::takeover::continue_outputs(&r, continuity))
    });
    match continued {
        Ok(true) => {
            tracing::info!(ingest = %ingest_id, "output streams continued from their checkpoint")
        }
        Ok(false) => {}
        // The session still works; its consumer may see new SSRCs.
        Err(err) => tracing::warn!(ingest = %ingest_id, %err, "reading output stream state failed"),
    }
}

/// A node record as `ListNodes` and the dashboard report it.
fn node_to_pb(r: &crate::topology::cluster::nodes::NodeRecord) -> pb::Node {
    let heartbeat = std::time::UNIX_EPOCH + Duration::from_millis(r.last_heartbeat_ms);
    pb::Node {
        node_id: r.id.clone(),
        advertise_url: r.advertise_url.clone(),
        live_publishers: u32::try_from(r.live_publishers).unwrap_or(u32::MAX),
        publisher_capacity: u32::try_from(r.capacity).unwrap_or(u32::MAX),
        draining: r.draining,
        last_heartbeat: Some(prost_types::Timestamp::from(heartbeat)),
    }
}
