//! `GET /events` on a whole gateway with an API key: a token for EventSource, a live
//! publisher's session stats as SSE, and the same events as `WatchEvents`.

use anyhow::{Context, Result};
use serde_json::Value;
use whipgate_proto::pb;

use crate::harness::{PATIENCE, TestGateway, Topo, on_both_topologies};
use crate::publisher::Video;

const KEY: &str = "sse-key";

/// Reads SSE messages until one satisfies `done`; returns every `data:` JSON seen.
async fn read_events(
    mut response: reqwest::Response,
    done: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>> {
    let mut text = String::new();
    let mut seen = Vec::new();
    loop {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .context("no SSE data in time")??
            .context("the stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) {
                let value: Value = serde_json::from_str(data)?;
                let stop = done(&value);
                seen.push(value);
                if stop {
                    return Ok(seen);
                }
            }
        }
    }
}

on_both_topologies!(sse_streams_a_live_publishers_stats_with_a_token);

async fn sse_streams_a_live_publishers_stats_with_a_token(topo: Topo) -> Result<()> {
    let gw = TestGateway::start_on(topo, |c| c.api_key = Some(KEY.into())).await?;
    let mut grpc = gw.grpc.clone();
    let authed = |mut r: tonic::Request<pb::WatchEventsRequest>| {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {KEY}").parse().expect("ascii"),
        );
        r
    };
    let unauthenticated = gw.http.get(gw.url("/events")).send().await?;
    assert_eq!(unauthenticated.status(), 401);
    let token: Value = serde_json::from_str(
        &gw.http
            // A token opens the stream it was asked for: this filter.
            .post(gw.url("/events/token?ingest_ids=live"))
            .bearer_auth(KEY)
            .send()
            .await?
            .text()
            .await?,
    )?;
    let token = token["token"].as_str().context("token")?.to_owned();
    let sse = gw
        .http
        .get(gw.url(&format!("/events?token={token}&ingest_ids=live")))
        .send()
        .await?;
    assert_eq!(sse.status(), 200);

    let mut request = tonic::Request::new(pb::RegisterIngestRequest {
        ingest_id: "live".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse()?);
    grpc.register_ingest(request).await?;
    let _published = gw.publish("live", Some(Video::H264), true).await?;
    let events = read_events(sse, |e| {
        e["kind"] == "session_stats" && e["session_stats"]["bitrate_bps"].as_u64() > Some(0)
    })
    .await?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds[0], "ingest_registered", "{kinds:?}");
    for wanted in ["publish_accepted", "session_connected", "track_started"] {
        assert!(kinds.contains(&wanted), "{wanted} in {kinds:?}");
    }
    // The same events, in the same order, as WatchEvents from the first one.
    let first = events[0]["seq"].as_u64().context("seq")?;
    let mut watch = grpc
        .watch_events(authed(tonic::Request::new(pb::WatchEventsRequest {
            ingest_ids: vec!["live".into()],
            from_seq: first,
            ..Default::default()
        })))
        .await?
        .into_inner();
    for event in &events {
        let from_grpc = watch.message().await?.context("grpc stream ended")?;
        assert_eq!(Some(from_grpc.seq), event["seq"].as_u64());
        assert_eq!(*event, whipgate_proto::json::event(&from_grpc));
    }
    gw.stop().await
}
