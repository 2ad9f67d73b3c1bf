//! The gRPC control plane (`whipgate.v1.IngestControl`), over the shared registry.

mod convert;
mod facts;
pub mod limits;
mod node;
pub mod read;
mod routed;
mod watch;

pub use node::NodeInfo;

/// The proto form of an event (`node_id` empty: the caller names the node).
pub(crate) fn event_to_pb(event: &crate::registry::Event) -> pb::Event {
    convert::event(event)
}

/// The proto form of a live session (`node_id` empty: the caller names the node).
pub(crate) fn session_to_pb(session: &crate::registry::SessionView) -> pb::Session {
    convert::session(session)
}

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::registry::Registry;
use crate::topology::{SharedTopology, Topology};
use watch::{Filter, WatchState, next_event};

pub use limits::api_key_interceptor;

pub use whipgate_proto::code_name;
use whipgate_proto::pb;

use pb::ingest_control_server::IngestControl;

/// What the control plane is told at start (`Config::control_settings`).
/// Not `Debug`: it holds the API key.
#[derive(Clone)]
pub struct ControlSettings {
    /// `--api-key-file`: the key every call but health asks for (`None`: open).
    pub api_key: Option<String>,
    /// `--grpc-max-watchers`: concurrent WatchEvents streams.
    pub max_watchers: usize,
    /// `--grpc-max-streams`: concurrent streams per connection.
    pub max_streams: u32,
}

/// The service implementation.
#[derive(Clone)]
pub struct ControlService {
    registry: Registry,
    shutdown: CancellationToken,
    watchers: Arc<Semaphore>,
    /// Who this node is and what it knows of the others.
    topology: SharedTopology,
    /// Routed control calls in flight (cluster mode).
    routed: Arc<Semaphore>,
}

impl ControlService {
    /// A service over `registry` allowing `settings.max_watchers` concurrent WatchEvents
    /// streams; event streams end when `shutdown` is cancelled.
    pub fn new(
        registry: Registry,
        shutdown: CancellationToken,
        settings: &ControlSettings,
    ) -> Self {
        ControlService {
            topology: Arc::new(crate::topology::local::Local::new(
                registry.clone(),
                NodeInfo::default(),
            )),
            registry,
            shutdown,
            watchers: Arc::new(Semaphore::new(settings.max_watchers)),
            routed: Arc::new(Semaphore::new(routed::MAX_ROUTED_IN_FLIGHT)),
        }
    }

    /// Answers as `topology` says: it names this node (ListNodes, `Session.node_id`), lists
    /// the nodes, serves the event stream, and finds the node holding a live session for the
    /// RPCs acting on one. Default: this node alone, unnamed.
    pub fn with_topology(mut self, topology: SharedTopology) -> Self {
        self.topology = topology;
        self
    }

    /// Names this node as the holder of the ingest's live session.
    fn stamp(&self, ingest: pb::Ingest) -> pb::Ingest {
        read::stamp(&*self.topology, ingest)
    }

    fn done<T>(&self, method: &str, result: Result<T, Error>) -> Result<Response<T>, Status> {
        let result = result.map(Response::new).map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.registry
            .metrics()
            .control_requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        result
    }
}

/// A stream of control-plane events (see [`watch`]).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl IngestControl for ControlService {
    async fn register_ingest(
        &self,
        request: Request<pb::RegisterIngestRequest>,
    ) -> Result<Response<pb::RegisterIngestResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            limits::check_register(&req)?;
            let video = convert::target("video", &req.video_target).await?;
            let audio = convert::target("audio", &req.audio_target).await?;
            let spec = convert::spec(&req, video, audio)?;
            let (view, created) = self.registry.register(spec, req.replace)?;
            // Durable before the answer.
            self.registry.persist().ingest(&view.spec.id).await?;
            if !view.has_bearer_token {
                tracing::warn!(
                    ingest = %view.spec.id,
                    "ingest registered without a bearer token: anyone who knows its id can publish \
                     to it (set bearer_token)"
                );
            }
            Ok(pb::RegisterIngestResponse {
                ingest: Some(self.stamp(convert::ingest(&view))),
                created,
            })
        }
        .await;
        self.done("RegisterIngest", result)
    }

    async fn unregister_ingest(
        &self,
        request: Request<pb::UnregisterIngestRequest>,
    ) -> Result<Response<pb::UnregisterIngestResponse>, Status> {
        let ingest_id = request.into_inner().ingest_id;
        let result = self.unregister_any(&ingest_id).await;
        self.done("UnregisterIngest", result)
    }

    async fn get_ingest(
        &self,
        request: Request<pb::GetIngestRequest>,
    ) -> Result<Response<pb::GetIngestResponse>, Status> {
        let ingest_id = request.into_inner().ingest_id;
        self.topology.refresh(Some(&ingest_id)).await;
        let result = match self.registry.get(&ingest_id) {
            Ok(view) => Ok(pb::GetIngestResponse {
                ingest: read::ingests(&*self.topology, std::slice::from_ref(&view))
                    .await
                    .pop(),
            }),
            Err(err) => Err(Error::from(err)),
        };
        self.done("GetIngest", result)
    }

    async fn list_ingests(
        &self,
        request: Request<pb::ListIngestsRequest>,
    ) -> Result<Response<pb::ListIngestsResponse>, Status> {
        let req = request.into_inner();
        self.topology.refresh(None).await;
        let result = match limits::page(self.registry.list(), req.page_size, &req.page_token) {
            Ok((page, next_page_token)) => Ok(pb::ListIngestsResponse {
                ingests: read::ingests(&*self.topology, &page).await,
                next_page_token,
            }),
            Err(err) => Err(err),
        };
        self.done("ListIngests", result)
    }

    async fn set_caps(
        &self,
        request: Request<pb::SetCapsRequest>,
    ) -> Result<Response<pb::SetCapsResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            if req.max_publishers.is_none() && req.ingest_id.is_empty() {
                return Err(Error::BadRequest(
                    "set max_publishers and/or ingest_id with limits".into(),
                ));
            }
            if !req.ingest_id.is_empty() {
                self.set_limits_any(&req.ingest_id, req.limits).await?;
            }
            if let Some(max) = req.max_publishers {
                self.registry.set_max_publishers(max as usize);
                self.registry.persist().caps().await?;
            }
            let (caps, live) = self.registry.caps();
            Ok(pb::SetCapsResponse {
                caps: Some(convert::caps(caps)),
                live_publishers: u32::try_from(live).unwrap_or(u32::MAX),
            })
        }
        .await;
        self.done("SetCaps", result)
    }

    async fn get_caps(
        &self,
        _request: Request<pb::GetCapsRequest>,
    ) -> Result<Response<pb::GetCapsResponse>, Status> {
        let (caps, live) = self.registry.caps();
        self.done(
            "GetCaps",
            Ok(pb::GetCapsResponse {
                caps: Some(convert::caps(caps)),
                live_publishers: u32::try_from(live).unwrap_or(u32::MAX),
            }),
        )
    }

    async fn teardown_stream(
        &self,
        request: Request<pb::TeardownStreamRequest>,
    ) -> Result<Response<pb::TeardownStreamResponse>, Status> {
        let result = self.teardown_any(request.into_inner()).await;
        self.done("TeardownStream", result)
    }

    async fn request_keyframe(
        &self,
        request: Request<pb::RequestKeyframeRequest>,
    ) -> Result<Response<pb::RequestKeyframeResponse>, Status> {
        let result = self
            .keyframe_any(request.into_inner().ingest_id)
            .await
            .map(|()| pb::RequestKeyframeResponse {});
        self.done("RequestKeyframe", result)
    }

    async fn select_simulcast_layer(
        &self,
        request: Request<pb::SelectSimulcastLayerRequest>,
    ) -> Result<Response<pb::SelectSimulcastLayerResponse>, Status> {
        let result = self.select_layer_any(request.into_inner()).await;
        self.done("SelectSimulcastLayer", result)
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let req = request.into_inner();
        if let Err(err) = limits::check_watch(&req) {
            return self.done("WatchEvents", Err(err));
        }
        let Ok(permit) = Arc::clone(&self.watchers).try_acquire_owned() else {
            return self.done(
                "WatchEvents",
                Err(Error::Overloaded("too many event watchers".into())),
            );
        };
        let result = watch_with(&*self.topology, &self.shutdown, req, Some(permit)).await;
        self.done("WatchEvents", result)
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let result = read::nodes(&*self.topology)
            .await
            .map_err(|err| Error::Unavailable(format!("cluster store unavailable: {err}")));
        self.done(
            "ListNodes",
            result.map(|nodes| pb::ListNodesResponse { nodes }),
        )
    }
}

/// The event stream of `WatchEvents`: the replay from `from_seq`, then live events, filtered;
/// a watcher that lags gets RESOURCE_EXHAUSTED (with where to resume), shutdown UNAVAILABLE,
/// and the stream ends after either. The SSE endpoint (`GET /events`) serves the same stream.
pub async fn watch(
    topology: &dyn Topology,
    shutdown: &CancellationToken,
    req: pb::WatchEventsRequest,
) -> Result<EventStream, Error> {
    watch_with(topology, shutdown, req, None).await
}

/// [`watch`], holding `permit` (a slot under the watcher cap) for the stream's life.
async fn watch_with(
    topology: &dyn Topology,
    shutdown: &CancellationToken,
    req: pb::WatchEventsRequest,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<EventStream, Error> {
    let filter = Filter {
        ingests: req.ingest_ids.into_iter().collect(),
        kinds: req.kinds.into_iter().collect(),
    };
    let subscription = topology.subscribe(req.epoch, req.from_seq).await?;
    let state = WatchState {
        replay: subscription.replay.into_iter(),
        live: subscription.live,
        filter,
        shutdown: shutdown.clone(),
        last_seq: subscription.last_seq,
        finished: false,
        checked_epoch: subscription.checked_epoch,
        _permit: permit,
    };
    Ok(Box::pin(futures_util::stream::unfold(state, next_event)))
}
