//! Cluster mode, three running nodes on one private redis-server: registrations made on one
//! node are live on the others at once (Get, List, WHIP POST, unregister, token replacement,
//! per-ingest limits), and every node's WatchEvents and `/events` serve the one cluster event
//! stream: same seqs, same order, each event naming its node; resume across nodes and restarts;
//! OUT_OF_RANGE below the trimmed window.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tonic::Streaming;
use whipgate_proto::pb;

use crate::cluster_gateway::node;
use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually, header};
use crate::publisher::{Publisher, Video};
use crate::redis_harness::RedisServer;

/// Publishes to `gw` with `token` (real WebRTC, media flowing); returns the publisher and the
/// session URL.
async fn publish_with(
    gw: &TestGateway,
    ingest: &str,
    token: Option<&str>,
) -> Result<(Publisher, String)> {
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let response = gw.post_offer(ingest, &offer, token).await?;
    if response.status() != 201 {
        bail!(
            "POST answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let location = header(&response, "location")?;
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    Ok((publisher, location))
}

async fn delete_with(gw: &TestGateway, location: &str, token: &str) -> Result<u16> {
    let response = gw
        .http
        .delete(gw.url(location))
        .bearer_auth(token)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

async fn post_status(gw: &TestGateway, ingest: &str, token: Option<&str>) -> Result<u16> {
    let (_publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    Ok(gw
        .post_offer(ingest, &offer, token)
        .await?
        .status()
        .as_u16())
}

async fn get(gw: &mut TestGateway, ingest: &str) -> Result<pb::Ingest, tonic::Status> {
    let response = gw
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: ingest.into(),
        })
        .await?;
    response
        .into_inner()
        .ingest
        .ok_or_else(|| tonic::Status::internal("no ingest"))
}

fn registration(ingest: &str, sink: &UdpSink, token: &str) -> pb::RegisterIngestRequest {
    pb::RegisterIngestRequest {
        ingest_id: ingest.into(),
        video_target: sink.addr.to_string(),
        bearer_token: token.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_on_one_running_node_is_live_on_every_other() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let mut c = node(&redis, "c", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    a.register_with(registration("cam", &sink, "t1")).await?;
    // At once, on every node.
    assert_eq!(
        get(&mut b, "cam").await?.video_target,
        sink.addr.to_string()
    );
    assert!(get(&mut c, "cam").await?.has_bearer_token);
    let listed = c
        .grpc
        .list_ingests(pb::ListIngestsRequest::default())
        .await?
        .into_inner();
    assert!(listed.ingests.iter().any(|i| i.ingest_id == "cam"));
    // And in B's own copy without being asked: the event stream invalidates it.
    a.register_with(registration("pushed", &sink, "")).await?;
    eventually(PATIENCE, "b's registry to learn `pushed`", || async {
        b.registry.get("pushed").ok()
    })
    .await?;

    // A real publisher on B.
    let (_publisher, location) = publish_with(&b, "cam", Some("t1")).await?;
    sink.recv_rtp(PATIENCE).await?;
    assert_eq!(delete_with(&b, &location, "t1").await?, 200);
    b.all_clean().await?;

    // Per-ingest limits set on C, seen on A.
    c.grpc
        .set_caps(pb::SetCapsRequest {
            ingest_id: "cam".into(),
            limits: Some(pb::IngestLimits {
                max_bitrate_bps: 4_000_000,
                max_session_seconds: 0,
            }),
            ..Default::default()
        })
        .await?;
    let limits = get(&mut a, "cam").await?.limits.context("limits")?;
    assert_eq!(limits.max_bitrate_bps, 4_000_000);

    // A new token on A: the old one is refused on B, the new one admitted.
    let mut replace = registration("cam", &sink, "t2");
    replace.replace = true;
    a.register_with(replace).await?;
    assert_eq!(post_status(&b, "cam", Some("t1")).await?, 401);
    let (_second, location) = publish_with(&b, "cam", Some("t2")).await?;
    assert_eq!(delete_with(&b, &location, "t2").await?, 200);
    b.all_clean().await?;

    // Unregistered on A: C stops accepting publishers at once, and forgets it.
    a.grpc
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: "cam".into(),
        })
        .await?;
    assert_eq!(post_status(&c, "cam", Some("t2")).await?, 404);
    assert_eq!(
        get(&mut b, "cam").await.expect_err("gone").code(),
        tonic::Code::NotFound
    );
    eventually(PATIENCE, "c's copy to go", || async {
        c.registry.get("cam").is_err().then_some(())
    })
    .await?;
    Ok(())
}

/// (seq, kind, ingest, node) of an event: what every watcher must agree on.
pub(crate) type Seen = (u64, String, String, String);

pub(crate) fn seen(e: &pb::Event) -> Seen {
    let json = whipgate_proto::json::event(e);
    let kind = json["kind"].as_str().unwrap_or_default().to_owned();
    (e.seq, kind, e.ingest_id.clone(), e.node_id.clone())
}

pub(crate) async fn watch(gw: &mut TestGateway, from_seq: u64) -> Result<Streaming<pb::Event>> {
    Ok(gw
        .grpc
        .watch_events(pb::WatchEventsRequest {
            from_seq,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// Reads `stream` until (and including) the event `last` says is the last.
pub(crate) async fn read_until(
    stream: &mut Streaming<pb::Event>,
    last: impl Fn(&Seen) -> bool,
) -> Result<Vec<Seen>> {
    let mut out = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .context("no event in time")??
            .context("the stream ended")?;
        let s = seen(&event);
        let stop = last(&s);
        out.push(s);
        if stop {
            return Ok(out);
        }
    }
}

/// The SSE `data:` of `/events?from_seq=` until the event `last` says is the last.
async fn read_sse(
    gw: &TestGateway,
    from_seq: u64,
    last: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>> {
    let mut response = gw
        .http
        .get(gw.url(&format!("/events?from_seq={from_seq}")))
        .send()
        .await?;
    let (mut text, mut out) = (String::new(), Vec::new());
    loop {
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .context("no SSE data in time")??
            .context("the SSE stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) {
                let value: Value = serde_json::from_str(data)?;
                let stop = last(&value);
                out.push(value);
                if stop {
                    return Ok(out);
                }
            }
        }
    }
}

fn is_end(s: &Seen) -> bool {
    s.1 == "ingest_unregistered" && s.2 == "e1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_on_every_node_sees_one_gap_free_stream() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let mut b = node(&redis, "b", |c| c.public_dashboard = true).await?;
    let mut c = node(&redis, "c", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    let mut on_a = watch(&mut a, 0).await?;
    let mut on_c = watch(&mut c, 0).await?;

    // Events on A and on B, interleaved.
    a.register_with(registration("e1", &sink, "")).await?;
    b.register_with(registration("e2", &sink, "")).await?;
    let (_publisher, location) = publish_with(&b, "e2", None).await?;
    sink.recv_rtp(PATIENCE).await?;
    assert_eq!(b.delete(&location).await?, 200);
    a.grpc
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: "e1".into(),
        })
        .await?;

    let seen_a = read_until(&mut on_a, is_end).await?;
    let seen_c = read_until(&mut on_c, is_end).await?;
    assert_eq!(seen_a, seen_c, "one stream for every watcher");
    for pair in seen_a.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "gap-free: {seen_a:?}");
    }
    let find = |kind: &str, ingest: &str| {
        seen_a
            .iter()
            .find(|s| s.1 == kind && s.2 == ingest)
            .map(|s| s.3.clone())
    };
    // Each event names the node that produced it.
    assert_eq!(find("ingest_registered", "e1").as_deref(), Some("a"));
    assert_eq!(find("ingest_registered", "e2").as_deref(), Some("b"));
    assert_eq!(find("publish_accepted", "e2").as_deref(), Some("b"));
    assert_eq!(find("session_connected", "e2").as_deref(), Some("b"));
    assert_eq!(find("session_ended", "e2").as_deref(), Some("b"));
    assert_eq!(find("ingest_unregistered", "e1").as_deref(), Some("a"));

    // Resume on C from a seq first read on A: exactly the continuation.
    let k = seen_a[2].0;
    let mut resumed = watch(&mut c, k).await?;
    assert_eq!(read_until(&mut resumed, is_end).await?, seen_a[2..]);

    // The SSE stream on B: the same seqs and nodes.
    let first = seen_a[0].0;
    let sse = read_sse(&b, first, |v| {
        v["kind"] == "ingest_unregistered" && v["ingest_id"] == "e1"
    })
    .await?;
    let from_sse: Vec<(u64, String)> = sse
        .iter()
        .map(|v| {
            (
                v["seq"].as_u64().unwrap_or(0),
                v["node_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let from_grpc: Vec<(u64, String)> = seen_a.iter().map(|s| (s.0, s.3.clone())).collect();
    assert_eq!(from_sse, from_grpc);

    // A node restarted resumes from the same seq too.
    drop(resumed);
    c.stop().await?;
    let mut c = node(&redis, "c", |_| {}).await?;
    let mut after_restart = watch(&mut c, k).await?;
    assert_eq!(read_until(&mut after_restart, is_end).await?, seen_a[2..]);
    Ok(())
}

#[tokio::test]
async fn a_resume_point_outside_the_cluster_stream_is_out_of_range() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |c| c.event_history = 8).await?;
    let mut b = node(&redis, "b", |c| c.event_history = 8).await?;
    let sink = UdpSink::bind().await?;
    let mut live = watch(&mut b, 0).await?;
    for i in 0..6 {
        let id = format!("r{i}");
        a.register_with(registration(&id, &sink, "")).await?;
        a.grpc
            .unregister_ingest(pb::UnregisterIngestRequest { ingest_id: id })
            .await?;
    }
    // Twelve events, eight kept.
    let all = read_until(&mut live, |s| s.1 == "ingest_unregistered" && s.2 == "r5").await?;
    let seqs: Vec<u64> = all.iter().map(|s| s.0).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    for (mut grpc, from_seq) in [
        (a.grpc.clone(), 1),
        (b.grpc.clone(), 4),
        (b.grpc.clone(), 14),
    ] {
        let status = grpc
            .watch_events(pb::WatchEventsRequest {
                from_seq,
                ..Default::default()
            })
            .await
            .expect_err("out of range");
        assert_eq!(
            status.code(),
            tonic::Code::OutOfRange,
            "{from_seq}: {status:?}"
        );
    }
    // The oldest kept, and the next to come, are fine.
    let mut oldest = watch(&mut a, 5).await?;
    let kept = read_until(&mut oldest, |s| s.0 == 12).await?;
    assert_eq!(kept, all[4..]);
    watch(&mut b, 13).await?;
    Ok(())
}

#[tokio::test]
async fn a_single_nodes_events_name_it() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let mut stream = watch(&mut gw, 0).await?;
    gw.register("solo", None, None).await?;
    let event = read_until(&mut stream, |_| true).await?;
    let nodes = gw
        .grpc
        .list_nodes(pb::ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes;
    let id = &nodes.first().context("one node")?.node_id;
    assert!(!id.is_empty());
    assert_eq!(&event[0].3, id);
    Ok(())
}
