//! How many gateways act as one: the single seam between the edges (WHIP, control plane,
//! dashboard, `/events`) and cluster mode.
//!
//! **The rule: edges ask the topology; only `topology/` knows Redis.** An edge never branches
//! on "am I clustered": it asks a [`Topology`] a question (who owns this ingest, where does a
//! refused publisher go, which events does a watcher read, which nodes are there) and acts on
//! the answer. [`local::Local`] answers for a gateway alone, from its registry and without I/O;
//! [`redis::RedisTopology`] answers for a member of a Redis cluster, and is the only user of
//! [`cluster::ClusterNode`] outside [`cluster`] (that module stays the Redis
//! implementation's internals: leases, node records, the event stream, routed calls).
//! [`Plan`] builds one of the two from the configuration, once, in [`crate::app`], which
//! hands the same `Arc<dyn Topology>` to every edge.
//!
//! **Why a trait object.** An `Arc<dyn Topology>` is one field of the same type in every edge,
//! whichever mode runs; an edge built without a gateway (unit tests, a bare `EventsHub`) gets
//! [`local::Local`] by default. The methods are `async` (Redis round trips) through
//! `async_trait`; the boxed future and the dynamic call cost nothing next to a control-plane
//! round trip, and nothing here is on the per-packet path. An enum would put both
//! implementations' fields in every match and let a third mode (a test double) touch every
//! method; the trait keeps each implementation in its own file.
//!
//! **Locks and awaits.** Every method may await (in cluster mode: a Redis round trip, each
//! bounded by the connection's short deadlines, so Redis being away costs at most that and
//! answers [`TopologyError::Unavailable`]). Callers must therefore never hold a registry
//! lock, a `std::sync` guard or a semaphore they do not mean to hold across a Redis round trip
//! when they call one. Implementations take the registry's own locks only through its public
//! methods, never across an await of their own. [`local::Local`] never awaits anything: each
//! of its answers is immediate.

pub mod cluster;
pub mod local;
pub mod redis;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::app::config::Config;
use crate::control::NodeInfo;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Event, Registry};
use crate::store::Store;
use whipgate_media::continuity::Continuity;
use whipgate_proto::pb;

pub use cluster::calls::{Answer, ROUTE_TIMEOUT, RoutedCall, WhipCalls};

/// The topology the edges share.
pub type SharedTopology = Arc<dyn Topology>;

/// Registrations this node has no copy of, looked up in the shared store per second at most
/// (one node-wide bucket, whoever asks).
pub const UNKNOWN_LOOKUPS_PER_SEC: u32 = 20;

/// Why the topology could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The shared store or the owning node is unreachable or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// Too many routed calls wait for node `.0`.
    #[error("node {0} has too many pending control calls")]
    Busy(String),
}

/// The node holding an ingest's live session, when it is another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its node id.
    pub node: String,
    /// The live session there (a UUID).
    pub session: String,
}

/// Where a publisher this node refused (full, draining) should go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Answer 307 to this URL (`--cluster-redirect-publish`).
    Redirect(String),
    /// Carry the POST to this node and answer with its answer.
    Route(String),
}

/// What a new watcher reads: the replay from its resume point, then live events, nothing
/// lost or doubled between the two.
pub struct Subscription {
    /// Events from the requested seq (empty for a live-only watcher).
    pub replay: Vec<Arc<pb::Event>>,
    /// Every event from now on.
    pub live: LiveEvents,
    /// The last seq before the first event due.
    pub last_seq: u64,
    /// `Some(epoch)` (0: not known yet): the events are read back from a shared stream whose
    /// seqs must follow each other and keep this epoch, a jump meaning missed events.
    /// `None`: this node's own log, whose channel reports a lag itself.
    pub checked_epoch: Option<u64>,
}

/// The live part of a [`Subscription`], in the control plane's form whatever its source.
pub struct LiveEvents(Source);

enum Source {
    /// This node's registry (named after this node).
    Registry {
        rx: broadcast::Receiver<Arc<Event>>,
        node_id: Arc<str>,
    },
    /// The shared stream (named after the producing node already).
    Stream(broadcast::Receiver<Arc<pb::Event>>),
}

impl LiveEvents {
    /// Events of this node's registry, named after node `node_id`.
    pub fn from_registry(rx: broadcast::Receiver<Arc<Event>>, node_id: Arc<str>) -> Self {
        LiveEvents(Source::Registry { rx, node_id })
    }

    /// Events of a shared stream, as they are.
    pub fn from_stream(rx: broadcast::Receiver<Arc<pb::Event>>) -> Self {
        LiveEvents(Source::Stream(rx))
    }

    /// The next event; a lag or the end of the source as the channel reports it.
    pub async fn recv(&mut self) -> Result<Arc<pb::Event>, RecvError> {
        match &mut self.0 {
            Source::Registry { rx, node_id } => rx.recv().await.map(|e| named_event(&e, node_id)),
            Source::Stream(rx) => rx.recv().await,
        }
    }
}

/// A registry event in the control plane's form, named after node `node_id`.
pub fn named_event(event: &Event, node_id: &str) -> Arc<pb::Event> {
    let mut event = crate::control::event_to_pb(event);
    event.node_id = node_id.to_owned();
    Arc::new(event)
}

/// The questions the edges ask about the other gateways. See the module doc for the rule, and
/// for what may be held across the calls.
#[async_trait::async_trait]
pub trait Topology: Send + Sync + 'static {
    /// Who this node is (`ListNodes`, `Session.node_id`, the events it names). Local: host
    /// name and HTTP port; cluster: `--node-id` and the advertised URL.
    fn node(&self) -> &NodeInfo;

    /// Whether several gateways act as one (the dashboard shows its nodes panel). Local:
    /// `false`; cluster: `true`.
    fn clustered(&self) -> bool;

    /// Starts what the topology runs in the background until `cancel`, in `tracker`, with
    /// `whip` answering WHIP calls other nodes carry here. Local: nothing; cluster: heartbeats,
    /// lease upkeep and the server of routed calls.
    fn spawn(&self, whip: Arc<dyn WhipCalls>, tracker: &TaskTracker, cancel: &CancellationToken);

    /// Makes this node's registry current before an answer that must not miss a change made
    /// a moment ago: `ingest` (a valid id; others are ignored) or, with `None`, every
    /// registration. Local: nothing to do (the registry is the truth); cluster: reloads from
    /// Redis, and when Redis is unreachable the answer comes from this node's copy.
    async fn refresh(&self, ingest: Option<&str>);

    /// An ingest this node has no copy of, at the WHIP edge: does another node know it?
    /// Local: `None`, nowhere else to look (the caller's "not found" stands). Cluster: a
    /// lookup in Redis, at most [`UNKNOWN_LOOKUPS_PER_SEC`] a second per node (beyond:
    /// `Some(Ok(false))`), that checks `token` against the stored hash before taking the
    /// registration in: `Some(Ok(true))` known now, `Some(Ok(false))` unknown, `Some(Err)`
    /// a wrong token or Redis unreachable.
    async fn learn(&self, ingest: &str, token: Option<&str>) -> Option<Result<bool, Error>>;

    /// Where a publisher of `ingest` that this node refused (full, draining) should go.
    /// Local: `None`; cluster: the least-loaded other node with room, if any.
    async fn placement(&self, ingest: &str) -> Option<Placement>;

    /// Called right after the registry admitted `session` of `ingest` and before
    /// negotiating: takes whatever the topology requires of a publisher. Local: nothing.
    /// Cluster: the ingest's publisher lease (held by another node:
    /// [`Error::PublisherConflict`]; Redis unreachable: [`Error::Unavailable`]), and the
    /// ingest's output streams continued into `continuity` from another node's newer
    /// checkpoint. An error refuses the publish (dropping the admission frees the slot).
    async fn claim(
        &self,
        ingest: &str,
        session: Uuid,
        continuity: &Mutex<Continuity>,
    ) -> Result<(), Error>;

    /// The node holding `ingest`'s live session, if it is another one. Local: `None`;
    /// cluster: from the ingest's lease.
    async fn owner_elsewhere(&self, ingest: &str) -> Result<Option<Owner>, TopologyError>;

    /// Runs `call` on node `node` and waits up to `timeout` for its answer. Local: there is
    /// no other node (callers only route to an [`Owner`] or a [`Placement::Route`], which a
    /// gateway alone never names), so [`TopologyError::Unavailable`].
    async fn route(
        &self,
        node: &str,
        call: &RoutedCall,
        timeout: Duration,
    ) -> Result<Answer, TopologyError>;

    /// Fills `session` of the ingests without a local one from the node that holds it.
    /// Local: nothing to fill; cluster: from the session summaries in Redis (unreachable:
    /// left as they are).
    async fn fill_sessions(&self, ingests: &mut [pb::Ingest]);

    /// Every node. Local: this one, as it sees itself; cluster: every node record in Redis.
    async fn nodes(&self) -> Result<Vec<pb::Node>, TopologyError>;

    /// The event stream a watcher reads, from `from_seq` (0: live only) of stream `epoch`
    /// (0: any). Local: this node's registry log; cluster: the cluster's one event stream.
    /// Errors are the same in both: OUT_OF_RANGE for a trimmed or future seq,
    /// FAILED_PRECONDITION for another epoch (and, in cluster mode, UNAVAILABLE when Redis
    /// cannot be read for the replay).
    async fn subscribe(&self, epoch: u64, from_seq: u64) -> Result<Subscription, Error>;
}

/// How the gateway will run, decided from the configuration before the registry exists
/// (the registry is restored from the store this picks).
pub enum Plan {
    /// One gateway alone.
    Local,
    /// A member of a Redis cluster.
    Redis(Box<redis::Plan>),
}

impl Plan {
    /// Reads the mode from `config`; in cluster mode checks the cluster secret and opens the
    /// (lazy) Redis connection.
    pub fn from_config(config: &Config, metrics: &Metrics) -> Result<Self, Error> {
        Ok(match &config.cluster_redis {
            Some(url) => Plan::Redis(Box::new(redis::Plan::from_config(url, config, metrics)?)),
            None => Plan::Local,
        })
    }

    /// The store the registry is restored from and writes to: the data dir alone, the
    /// cluster's records in Redis.
    pub fn store(&self, config: &Config) -> Result<Arc<dyn Store>, Error> {
        match self {
            // Not internal: a damaged or missing store file is the operator's to fix, and the
            // message says how.
            Plan::Local => crate::store::open(config.data_dir.as_deref())
                .map_err(|e| Error::BadRequest(e.to_string())),
            Plan::Redis(plan) => Ok(plan.store()),
        }
    }

    /// The topology, once the listeners are bound (`http`: the WHIP edge's address, `https`:
    /// whether it serves TLS). In cluster mode this hooks `registry`'s events into the
    /// cluster stream and starts its tasks in `tracker`, ending with `cancel`.
    pub async fn start(
        self,
        config: &Config,
        http: std::net::SocketAddr,
        https: bool,
        registry: &Registry,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<SharedTopology, Error> {
        match self {
            Plan::Local => {
                let mut node = NodeInfo::local(http);
                if https {
                    node.advertise_url = format!("https://{http}");
                }
                Ok(Arc::new(local::Local::new(registry.clone(), node)))
            }
            Plan::Redis(plan) => {
                // Boxed: joining the cluster nests deep futures (the event feed's start) that
                // the gateway's own future would otherwise carry inline.
                let topology =
                    Box::pin(plan.start(config, http, https, registry, tracker, cancel)).await?;
                Ok(Arc::new(topology))
            }
        }
    }
}
