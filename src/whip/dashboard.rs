//! The built-in live dashboard (`GET /dashboard`, self-contained like the publish page) and the
//! JSON snapshot it starts from (`GET /api/ingests`); live updates come from `GET /events`.

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::collections::HashMap;

use super::events::{self, EventsHub};
use crate::control::json;
use crate::error::Error;

/// The routes of the event stream, its tokens, the snapshot and the dashboard page.
pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    EventsHub: FromRef<S>,
{
    Router::new()
        .route("/events", get(events::events))
        .route("/events/token", post(events::token))
        .route("/api/ingests", get(snapshot))
        .route("/dashboard", get(page))
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
async fn snapshot(
    State(hub): State<EventsHub>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    hub.authorize(&headers, query.get("token").map(String::as_str))?;
    let ingests: Vec<_> = hub
        .registry
        .list()
        .iter()
        .map(|view| {
            let mut ingest = crate::control::convert_ingest(view);
            if let Some(session) = &mut ingest.session {
                session.node_id.clone_from(&hub.node.id);
            }
            json::ingest(&ingest)
        })
        .collect();
    let (caps, live) = hub.registry.caps();
    let caps = crate::control::pb::Caps {
        max_publishers: u32::try_from(caps.max_publishers).unwrap_or(u32::MAX),
    };
    let node = hub.node.describe(&hub.registry);
    Ok(Json(json!({
        "ingests": ingests,
        "caps": json::caps(Some(&caps)),
        "live_publishers": live,
        // One node: the dashboard hides the nodes panel.
        "clustered": false,
        "nodes": [json::node(&node)],
    }))
    .into_response())
}
