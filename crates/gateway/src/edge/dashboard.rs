//! The built-in live dashboard (`GET /dashboard`, self-contained like the publish page) and the
//! JSON snapshot it starts from (`GET /api/ingests`; in cluster mode with every node and the
//! live sessions other nodes hold); live updates come from `GET /events`. Who may read them,
//! and what an anonymous reader sees, is [`super::whip::access`].

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::events::{self, EventsHub};
use super::whip::access::Reader;
use crate::control::read;
use crate::error::Error;
use whipgate_proto::json;

/// The read API: the event stream, its tokens and the snapshot.
pub(super) fn api_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    EventsHub: FromRef<S>,
{
    Router::new()
        .route("/events", get(events::events))
        .route("/events/token", post(events::token))
        .route("/api/ingests", get(snapshot))
}

/// The dashboard page (no data in it).
pub(super) fn page_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/dashboard", get(page))
}

/// Both, for tests of the hub alone.
#[cfg(test)]
pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    EventsHub: FromRef<S>,
{
    api_routes().merge(page_routes())
}

/// `GET /dashboard`: the page (no data in it; it asks the API for everything).
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("static/dashboard.html"),
    )
        .into_response()
}

/// `GET /api/ingests`: every ingest with its live session, the caps and the nodes, in the
/// JSON of the event stream.
async fn snapshot(State(hub): State<EventsHub>, headers: HeaderMap) -> Result<Response, Error> {
    let reader = hub.access.check_key(&headers)?;
    // The same listing as ListIngests and ListNodes (all of it, unpaginated); live sessions
    // other nodes hold, and every node; unreadable: this node alone, as it sees itself.
    let ingests = read::ingests(&*hub.topology, &hub.registry.list()).await;
    let nodes = read::nodes_or_this_one(&*hub.topology, &hub.registry).await;
    let ingests: Vec<_> = ingests
        .iter()
        .map(|ingest| {
            let mut ingest = json::ingest(ingest);
            if reader == Reader::Public {
                json::redact_public(&mut ingest);
            }
            ingest
        })
        .collect();
    let (caps, live) = hub.registry.caps();
    let caps = whipgate_proto::pb::Caps {
        max_publishers: u32::try_from(caps.max_publishers).unwrap_or(u32::MAX),
    };
    Ok(Json(json!({
        "ingests": ingests,
        "caps": json::caps(Some(&caps)),
        "live_publishers": live,
        // Not clustered: the dashboard hides the nodes panel.
        "clustered": hub.topology.clustered(),
        "nodes": nodes.iter().map(json::node).collect::<Vec<_>>(),
    }))
    .into_response())
}
