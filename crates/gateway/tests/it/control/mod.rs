//! Control plane: RPCs, events, caps, auth, health, metrics. Shared helpers here, tests by
//! topic in the submodules.

use anyhow::{Context, Result, ensure};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use whipgate_proto::pb;
use whipgate_proto::pb::EventKind as K;
use whipgate_proto::pb::event::Payload;

use crate::harness::{PATIENCE, TestGateway};

type Events = tonic::Streaming<pb::Event>;

const CONTROL: &str = "whipgate.v1.IngestControl";

/// The payload of `event` if it is `$variant`, else the test fails.
macro_rules! payload {
    ($event:expr, $variant:ident) => {
        match &$event.payload {
            Some(Payload::$variant(p)) => p,
            other => bail!("expected {}, got {other:?}", stringify!($variant)),
        }
    };
}

fn kind(event: &pb::Event) -> K {
    match event.payload {
        Some(Payload::IngestRegistered(_)) => K::IngestRegistered,
        Some(Payload::IngestUpdated(_)) => K::IngestUpdated,
        Some(Payload::IngestUnregistered(_)) => K::IngestUnregistered,
        Some(Payload::PublishAccepted(_)) => K::PublishAccepted,
        Some(Payload::PublishRejected(_)) => K::PublishRejected,
        Some(Payload::SessionConnected(_)) => K::SessionConnected,
        Some(Payload::TrackStarted(_)) => K::TrackStarted,
        Some(Payload::SessionStats(_)) => K::SessionStats,
        Some(Payload::SessionEnded(_)) => K::SessionEnded,
        Some(Payload::CapsChanged(_)) => K::CapsChanged,
        Some(Payload::StreamWarning(_)) => K::StreamWarning,
        None => K::Unspecified,
    }
}

/// Kinds in order, without the periodic stats (their ticks may fall anywhere in a session).
fn kinds_but_stats(events: &[pb::Event]) -> Vec<K> {
    events
        .iter()
        .map(kind)
        .filter(|k| *k != K::SessionStats)
        .collect()
}

/// The gRPC code of an answer (`Code::Ok` on success).
fn code<T>(result: Result<T, Status>) -> Code {
    result.err().map_or(Code::Ok, |status| status.code())
}

/// The session id at the end of a WHIP Location.
fn session_of(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or_default()
}

fn get(ingest_id: &str) -> pb::GetIngestRequest {
    pb::GetIngestRequest {
        ingest_id: ingest_id.into(),
    }
}

fn max_publishers(n: u32) -> pb::SetCapsRequest {
    pb::SetCapsRequest {
        max_publishers: Some(n),
        ..Default::default()
    }
}

/// (max_publishers, live_publishers) from GetCaps.
async fn caps(gw: &mut TestGateway) -> Result<(u32, u32)> {
    let caps = gw.grpc.get_caps(pb::GetCapsRequest {}).await?.into_inner();
    Ok((
        caps.caps.context("caps")?.max_publishers,
        caps.live_publishers,
    ))
}

async fn teardown(gw: &mut TestGateway, ingest_id: &str, reason: &str) -> Result<bool, Status> {
    let (ingest_id, reason) = (ingest_id.into(), reason.into());
    let request = pb::TeardownStreamRequest { ingest_id, reason };
    Ok(gw
        .grpc
        .teardown_stream(request)
        .await?
        .into_inner()
        .session_closed)
}

async fn watch(gw: &TestGateway, ingests: &[&str], kinds: &[K], from_seq: u64) -> Result<Events> {
    let request = pb::WatchEventsRequest {
        ingest_ids: ingests.iter().map(|i| i.to_string()).collect(),
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        from_seq,
        ..Default::default()
    };
    Ok(gw.grpc.clone().watch_events(request).await?.into_inner())
}

async fn next(events: &mut Events) -> Result<pb::Event> {
    let message = tokio::time::timeout(PATIENCE, events.message()).await;
    message
        .context("no event in time")??
        .context("event stream ended")
}

/// Every event up to and including the next one of `wanted`.
async fn until(events: &mut Events, wanted: K) -> Result<Vec<pb::Event>> {
    let mut seen = Vec::new();
    loop {
        let event = next(events).await?;
        let done = kind(&event) == wanted;
        seen.push(event);
        if done {
            return Ok(seen);
        }
    }
}

/// The next event of `wanted`, skipping others.
async fn next_of(events: &mut Events, wanted: K) -> Result<pb::Event> {
    until(events, wanted).await?.pop().context("no event")
}

/// A Watch on the health of the control service, after its first status (SERVING).
async fn watch_health(gw: &TestGateway) -> Result<tonic::Streaming<HealthCheckResponse>> {
    let request = HealthCheckRequest {
        service: CONTROL.into(),
    };
    let mut statuses = gw.health().await?.watch(request).await?.into_inner();
    ensure!(next_status(&mut statuses).await? == ServingStatus::Serving);
    Ok(statuses)
}

async fn next_status(
    statuses: &mut tonic::Streaming<HealthCheckResponse>,
) -> Result<ServingStatus> {
    let message = tokio::time::timeout(PATIENCE, statuses.message()).await;
    let status = message
        .context("no health status in time")??
        .context("health stream ended")?;
    Ok(ServingStatus::try_from(status.status)?)
}

mod auth_health;
mod events;
mod metrics;
mod operate;
mod register;
