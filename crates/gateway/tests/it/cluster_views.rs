//! Cluster mode, what watchers and orchestrators see from any node: one event per logical
//! change even when a control call is routed to the owner, a live session on another node in
//! GetIngest / ListIngests, and the nodes on the dashboard.

use anyhow::{Context, Result};
use whipgate_proto::pb;

use crate::cluster_events::{Seen, read_until, watch};
use crate::cluster_gateway::node;
use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::Video;
use crate::redis_harness::RedisServer;

fn count(events: &[Seen], kind: &str, ingest: &str) -> usize {
    events
        .iter()
        .filter(|(_, k, i, _)| k == kind && i == ingest)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_set_caps_and_unregister_emit_one_event_each() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("cam", Some(&sink), None).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let mut c = node(&redis, "c", |_| {}).await?;
    let _published = b.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    let mut stream = watch(&mut c, 1).await?;
    // Everything up to the session's start, so that the count starts after it.
    read_until(&mut stream, |(_, k, i, _)| {
        k == "session_connected" && i == "cam"
    })
    .await?;

    a.grpc
        .set_caps(pb::SetCapsRequest {
            ingest_id: "cam".into(),
            limits: Some(pb::IngestLimits {
                max_bitrate_bps: 50_000_000,
                max_session_seconds: 0,
            }),
            ..Default::default()
        })
        .await?;
    let unregistered = a
        .grpc
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: "cam".into(),
        })
        .await?
        .into_inner();
    assert!(unregistered.session_closed);
    // Markers from both nodes: each node publishes its events in order, so once both markers
    // are in, every event a and b emitted for `cam` is in too.
    a.register("mark-a", Some(&sink), None).await?;
    b.register("mark-b", Some(&sink), None).await?;
    let mut seen = Vec::new();
    let mut marks = 0;
    while marks < 2 {
        let batch = read_until(&mut stream, |(_, k, i, _)| {
            k == "ingest_registered" && i.starts_with("mark-")
        })
        .await?;
        marks += 1;
        seen.extend(batch);
    }
    assert_eq!(count(&seen, "caps_changed", "cam"), 1, "{seen:?}");
    assert_eq!(count(&seen, "ingest_unregistered", "cam"), 1, "{seen:?}");
    assert_eq!(count(&seen, "session_ended", "cam"), 1, "{seen:?}");
    // The owner emits them, session end first, as a single node does.
    let order: Vec<&str> = seen
        .iter()
        .filter(|(_, _, i, _)| i == "cam")
        .map(|(_, k, _, _)| k.as_str())
        .filter(|k| *k == "session_ended" || *k == "ingest_unregistered")
        .collect();
    assert_eq!(order, ["session_ended", "ingest_unregistered"]);
    let unregistered_by = seen
        .iter()
        .find(|(_, k, i, _)| k == "ingest_unregistered" && i == "cam")
        .map(|(_, _, _, n)| n.clone());
    assert_eq!(unregistered_by.as_deref(), Some("b"));
    Ok(())
}

async fn session_on(gw: &mut TestGateway, ingest: &str) -> Result<Option<pb::Session>> {
    let got = gw
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: ingest.into(),
        })
        .await?
        .into_inner();
    Ok(got.ingest.and_then(|i| i.session))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_ingests_on_any_node_show_the_live_session_of_another() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("cam", Some(&sink), None).await?;
    a.register("idle", Some(&sink), None).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let mut c = node(&redis, "c", |_| {}).await?;
    let published = b.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    let on_b = session_on(&mut b, "cam")
        .await?
        .context("b's own session")?;
    for gw in [&mut a, &mut c] {
        let seen = eventually(PATIENCE, "the connected session from another node", || {
            let mut grpc = gw.grpc.clone();
            async move {
                let got = grpc
                    .get_ingest(pb::GetIngestRequest {
                        ingest_id: "cam".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                let session = got.ingest?.session?;
                (session.state == pb::SessionState::Connected as i32).then_some(session)
            }
        })
        .await?;
        assert_eq!(seen.node_id, "b");
        assert_eq!(seen.session_id, on_b.session_id);
        assert_eq!(seen.started_at, on_b.started_at);
        assert_eq!(seen.video_codec, "H264");
        assert!(!seen.remote_addr.is_empty(), "remote address");
        assert_eq!(seen.consumer_sdp, on_b.consumer_sdp);
        assert!(
            seen.consumer_sdp.contains("m=video"),
            "{}",
            seen.consumer_sdp
        );
    }
    let listed = a
        .grpc
        .list_ingests(pb::ListIngestsRequest::default())
        .await?
        .into_inner();
    let node_of = |id: &str| {
        listed
            .ingests
            .iter()
            .find(|i| i.ingest_id == id)
            .map(|i| i.session.as_ref().map(|s| s.node_id.clone()))
    };
    assert_eq!(node_of("cam"), Some(Some("b".to_owned())));
    assert_eq!(node_of("idle"), Some(None), "nothing live: no session");

    // Ended: no session anywhere.
    assert_eq!(b.delete(&published.location).await?, 200);
    for gw in [&mut a, &mut c] {
        let grpc = gw.grpc.clone();
        eventually(PATIENCE, "the session to go", || {
            let mut grpc = grpc.clone();
            async move {
                let got = grpc
                    .get_ingest(pb::GetIngestRequest {
                        ingest_id: "cam".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                got.ingest?.session.is_none().then_some(())
            }
        })
        .await?;
    }
    // And the summary itself is gone with the lease.
    let handle = crate::cluster_redis::node_handle(&redis.url());
    let left: Option<Vec<u8>> = handle
        .query(redis::cmd("GET").arg("whipgate:session:cam"))
        .await?;
    assert!(left.is_none(), "summary deleted with the lease");
    Ok(())
}

async fn api_ingests(gw: &TestGateway) -> Result<serde_json::Value> {
    let response = gw.http.get(gw.url("/api/ingests")).send().await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    Ok(serde_json::from_str(&response.text().await?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_snapshot_lists_every_node_and_remote_sessions() -> Result<()> {
    // The snapshot read as a public dashboard does (redacted, no credential).
    let public = |c: &mut whipgate::Config| c.public_dashboard = true;
    let single = TestGateway::start_with(public).await?;
    let alone = api_ingests(&single).await?;
    assert_eq!(alone["clustered"], false);
    assert_eq!(alone["nodes"].as_array().map(Vec::len), Some(1));
    drop(single);

    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", public).await?;
    a.register("cam", Some(&sink), None).await?;
    let b = node(&redis, "b", public).await?;
    let _published = b.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    let snapshot = eventually(PATIENCE, "b's heartbeat with its publisher", || async {
        let snap = api_ingests(&a).await.ok()?;
        let b_live = snap["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node_id"] == "b")?["live_publishers"]
            .as_u64()?;
        (b_live == 1).then_some(snap)
    })
    .await?;
    assert_eq!(snapshot["clustered"], true);
    let nodes = snapshot["nodes"].as_array().context("nodes")?;
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node_id"].as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"a") && ids.contains(&"b"), "{ids:?}");
    for n in nodes {
        assert!(
            n["advertise_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http")),
            "{n}"
        );
        assert_eq!(n["draining"], false);
        assert!(n["last_heartbeat"].as_str().is_some(), "{n}");
        assert!(n["publisher_capacity"].as_u64().is_some(), "{n}");
    }
    let cam = snapshot["ingests"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["ingest_id"] == "cam"))
        .context("cam")?;
    assert_eq!(cam["session"]["node_id"], "b", "{cam}");
    Ok(())
}
