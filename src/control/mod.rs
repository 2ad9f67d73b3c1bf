//! The gRPC control plane (`whipgate.v1.IngestControl`), over the shared registry.

mod convert;
mod facts;
pub mod json;
mod node;

pub use node::NodeInfo;

/// The proto form of an ingest view (for the HTTP snapshot).
pub fn convert_ingest(view: &crate::registry::IngestView) -> pb::Ingest {
    convert::ingest(view)
}

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::registry::{Event, Registry};

/// Generated protobuf and gRPC code.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("whipgate.v1");

    /// Encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("whipgate_descriptor");
}

use pb::ingest_control_server::IngestControl;

/// The service implementation.
#[derive(Clone)]
pub struct ControlService {
    registry: Registry,
    shutdown: CancellationToken,
    node: Arc<NodeInfo>,
}

impl ControlService {
    /// A service over `registry`; event streams end when `shutdown` is cancelled.
    pub fn new(registry: Registry, shutdown: CancellationToken) -> Self {
        ControlService {
            registry,
            shutdown,
            node: Arc::new(NodeInfo::default()),
        }
    }

    /// Names the node this service runs on (ListNodes, `Session.node_id`).
    pub fn with_node(mut self, node: NodeInfo) -> Self {
        self.node = Arc::new(node);
        self
    }

    /// Names this node as the holder of the ingest's live session.
    fn stamp(&self, mut ingest: pb::Ingest) -> pb::Ingest {
        if let Some(session) = &mut ingest.session {
            session.node_id.clone_from(&self.node.id);
        }
        ingest
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

/// The canonical name of a gRPC code (`RESOURCE_EXHAUSTED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        InvalidArgument => "INVALID_ARGUMENT",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Unavailable => "UNAVAILABLE",
        Unauthenticated => "UNAUTHENTICATED",
        OutOfRange => "OUT_OF_RANGE",
        DataLoss => "DATA_LOSS",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        Internal => "INTERNAL",
        _ => "OTHER",
    }
}

/// Checks `authorization: Bearer <key>` on every control RPC (constant-time compare).
pub fn api_key_interceptor(
    key: Option<String>,
    registry: Registry,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let key: Option<Arc<[u8]>> = key.map(|k| Arc::from(k.into_bytes()));
    move |request: Request<()>| {
        let Some(expected) = &key else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().as_bytes().to_vec());
        use subtle::ConstantTimeEq;
        match given {
            Some(given) if bool::from(given.as_slice().ct_eq(expected)) => Ok(request),
            _ => {
                registry
                    .metrics()
                    .control_requests
                    .with_label_values(&["auth", "UNAUTHENTICATED"])
                    .inc();
                Err(Status::unauthenticated("missing or invalid API key"))
            }
        }
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
            let video = convert::target("video", &req.video_target).await?;
            let audio = convert::target("audio", &req.audio_target).await?;
            let spec = convert::spec(&req, video, audio)?;
            let (view, created) = self.registry.register(spec, req.replace)?;
            // Durable before the answer.
            self.registry.persist().ingest(&view.spec.id).await?;
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
        let result = async {
            let session_closed = self.registry.unregister(&ingest_id)?;
            self.registry.persist().ingest(&ingest_id).await?;
            Ok(pb::UnregisterIngestResponse { session_closed })
        }
        .await;
        self.done("UnregisterIngest", result)
    }

    async fn get_ingest(
        &self,
        request: Request<pb::GetIngestRequest>,
    ) -> Result<Response<pb::GetIngestResponse>, Status> {
        let result = self
            .registry
            .get(&request.into_inner().ingest_id)
            .map(|v| pb::GetIngestResponse {
                ingest: Some(self.stamp(convert::ingest(&v))),
            })
            .map_err(Error::from);
        self.done("GetIngest", result)
    }

    async fn list_ingests(
        &self,
        _request: Request<pb::ListIngestsRequest>,
    ) -> Result<Response<pb::ListIngestsResponse>, Status> {
        let ingests = self
            .registry
            .list()
            .iter()
            .map(|v| self.stamp(convert::ingest(v)))
            .collect();
        self.done("ListIngests", Ok(pb::ListIngestsResponse { ingests }))
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
                self.registry.set_limits(
                    &req.ingest_id,
                    req.limits.map(convert::limits).unwrap_or_default(),
                )?;
                self.registry.persist().ingest(&req.ingest_id).await?;
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
        let req = request.into_inner();
        let result = self
            .registry
            .teardown(&req.ingest_id, &req.reason)
            .map(|session_closed| pb::TeardownStreamResponse { session_closed })
            .map_err(Error::from);
        self.done("TeardownStream", result)
    }

    async fn request_keyframe(
        &self,
        request: Request<pb::RequestKeyframeRequest>,
    ) -> Result<Response<pb::RequestKeyframeResponse>, Status> {
        let result = self
            .registry
            .request_keyframe(&request.into_inner().ingest_id)
            .map(|()| pb::RequestKeyframeResponse {})
            .map_err(Error::from);
        self.done("RequestKeyframe", result)
    }

    async fn select_simulcast_layer(
        &self,
        request: Request<pb::SelectSimulcastLayerRequest>,
    ) -> Result<Response<pb::SelectSimulcastLayerResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let rid = convert::rid(&req.rid)?;
            let session_live = self.registry.select_layer(&req.ingest_id, rid)?;
            self.registry.persist().ingest(&req.ingest_id).await?;
            Ok(pb::SelectSimulcastLayerResponse { session_live })
        }
        .await;
        self.done("SelectSimulcastLayer", result)
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let result = watch(&self.registry, &self.shutdown, request.into_inner());
        self.done("WatchEvents", result)
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = vec![self.node.describe(&self.registry)];
        self.done("ListNodes", Ok(pb::ListNodesResponse { nodes }))
    }
}

/// The event stream of `WatchEvents`: the replay from `from_seq`, then live events, filtered;
/// a watcher that lags gets RESOURCE_EXHAUSTED (with where to resume), shutdown UNAVAILABLE,
/// and the stream ends after either. The SSE endpoint (`GET /events`) serves the same stream.
pub fn watch(
    registry: &Registry,
    shutdown: &CancellationToken,
    req: pb::WatchEventsRequest,
) -> Result<EventStream, Error> {
    let subscription = registry.subscribe_at(req.epoch, req.from_seq)?;
    let filter = Filter {
        ingests: req.ingest_ids.into_iter().collect(),
        kinds: req.kinds.into_iter().collect(),
    };
    let next_seq = subscription.next_seq;
    let state = WatchState {
        replay: subscription.replay.into_iter(),
        live: subscription.live,
        filter,
        shutdown: shutdown.clone(),
        // Live only: a lag resumes from the first event this watcher was due.
        last_seq: if req.from_seq == 0 {
            next_seq.saturating_sub(1)
        } else {
            req.from_seq.saturating_sub(1)
        },
        finished: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(state, next_event)))
}

struct Filter {
    ingests: HashSet<String>,
    kinds: HashSet<i32>,
}

impl Filter {
    fn accepts(&self, event: &Event) -> bool {
        (self.ingests.is_empty() || self.ingests.contains(&event.ingest_id))
            && (self.kinds.is_empty()
                || self
                    .kinds
                    .contains(&(convert::event_kind(&event.payload) as i32)))
    }
}

struct WatchState {
    replay: std::vec::IntoIter<Arc<Event>>,
    live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    filter: Filter,
    shutdown: CancellationToken,
    last_seq: u64,
    finished: bool,
}

async fn next_event(mut s: WatchState) -> Option<(Result<pb::Event, Status>, WatchState)> {
    if s.finished {
        return None;
    }
    loop {
        let event = match s.replay.next() {
            Some(event) => event,
            None => {
                // Biased to the channel: events emitted while draining (session-ended with
                // reason shutdown) still reach the watcher before the stream ends.
                let received = tokio::select! {
                    biased;
                    received = s.live.recv() => received,
                    _ = s.shutdown.cancelled() => {
                        s.finished = true;
                        return Some((Err(Status::unavailable("gateway is shutting down")), s));
                    }
                };
                match received {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => {
                        s.finished = true;
                        let resume = s.last_seq + 1;
                        let err = Error::Lagged(format!(
                            "watcher fell behind the event stream; resume with from_seq={resume}"
                        ));
                        return Some((Err(Status::from(err)), s));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        // The replay and the live tail may overlap by the events emitted in between.
        if event.seq <= s.last_seq {
            continue;
        }
        s.last_seq = event.seq;
        if s.filter.accepts(&event) {
            return Some((Ok(convert::event(&event)), s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EventPayload;
    use std::time::SystemTime;

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            epoch: 1,
            seq,
            at: SystemTime::now(),
            ingest_id: "a".into(),
            session_id: None,
            payload: EventPayload::IngestUnregistered,
        })
    }

    fn watch(live: tokio::sync::broadcast::Receiver<Arc<Event>>, last_seq: u64) -> WatchState {
        WatchState {
            replay: Vec::new().into_iter(),
            live,
            filter: Filter {
                ingests: HashSet::new(),
                kinds: HashSet::new(),
            },
            shutdown: CancellationToken::new(),
            last_seq,
            finished: false,
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_told_where_to_resume() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let state = watch(rx, 0);
        for seq in 1..=5 {
            tx.send(event(seq)).unwrap();
        }
        let (first, state) = next_event(state).await.unwrap();
        let status = first.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("from_seq=1"),
            "{}",
            status.message()
        );
        assert!(
            next_event(state).await.is_none(),
            "the stream ends after the status"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_stream_after_what_is_queued() {
        let (tx, rx) = tokio::sync::broadcast::channel(8);
        let state = watch(rx, 0);
        tx.send(event(1)).unwrap();
        state.shutdown.cancel();
        let (first, state) = next_event(state).await.unwrap();
        assert_eq!(first.unwrap().seq, 1, "queued events still arrive");
        let (last, _) = next_event(state).await.unwrap();
        assert_eq!(last.unwrap_err().code(), tonic::Code::Unavailable);
    }
}
