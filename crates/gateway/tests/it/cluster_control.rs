//! Control from any node: three whole gateways on one private redis-server. The RPCs acting on
//! a live session (TeardownStream, RequestKeyframe, SetCaps limits, SelectSimulcastLayer,
//! UnregisterIngest) sent to a node without it reach the node that holds it, and answer as a
//! single node would; PATCH and DELETE on another node's session URL are carried to the owner.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tonic::Code;
use whipgate_proto::pb;

use crate::cluster_gateway::{node, node_that_can_die};
use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually, header};
use crate::publisher::{Publisher, Video};
use crate::redis_harness::RedisServer;

/// Nodes a, b, c with `ingests` registered on a before b and c start (they read it at boot).
async fn three_nodes(
    redis: &RedisServer,
    sink: &UdpSink,
    ingests: &[&str],
) -> Result<(TestGateway, TestGateway, TestGateway)> {
    let mut a = node(redis, "a", |_| {}).await?;
    for id in ingests {
        a.register(id, Some(sink), None).await?;
    }
    let b = node(redis, "b", |_| {}).await?;
    let c = node(redis, "c", |_| {}).await?;
    Ok((a, b, c))
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.err().map_or(Code::Ok, |status| status.code())
}

fn ingest(id: &str) -> pb::GetIngestRequest {
    pb::GetIngestRequest {
        ingest_id: id.into(),
    }
}

async fn gauge(gw: &TestGateway) -> Result<String> {
    let text = gw.metrics().await?;
    text.lines()
        .find(|l| l.starts_with("whipgate_live_publishers "))
        .map(str::to_owned)
        .context("live publishers gauge")
}

#[tokio::test]
async fn teardown_and_unregister_on_a_end_the_session_on_b() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let (mut a, b, _c) = three_nodes(&redis, &sink, &["cam"]).await?;
    let published = b.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    assert_eq!(gauge(&b).await?, "whipgate_live_publishers 1");

    let teardown = |reason: &str| pb::TeardownStreamRequest {
        ingest_id: "cam".into(),
        reason: reason.into(),
    };
    let answer = a
        .grpc
        .teardown_stream(teardown("moved"))
        .await?
        .into_inner();
    assert!(answer.session_closed, "a reports b's session closed");
    eventually(PATIENCE, "b's gauge back to 0", || async {
        (gauge(&b).await.ok()? == "whipgate_live_publishers 0").then_some(())
    })
    .await?;
    // The session is gone on b: its media stops reaching the consumer.
    assert!(b.registry.get("cam")?.session.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.drain();
    assert!(
        sink.recv_rtp(Duration::from_secs(1)).await.is_err(),
        "no media after the teardown"
    );
    drop(published);
    // Nothing live anywhere: as on a single node.
    let again = a.grpc.teardown_stream(teardown("")).await?.into_inner();
    assert!(!again.session_closed);
    let unknown = a
        .grpc
        .teardown_stream(pb::TeardownStreamRequest {
            ingest_id: "ghost".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(unknown), Code::NotFound);

    // Unregister on a: b's new session ends too (reason: unregister).
    let _second = b.publish("cam", Some(Video::H264), false).await?;
    let answer = a
        .grpc
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: "cam".into(),
        })
        .await?
        .into_inner();
    assert!(answer.session_closed);
    eventually(PATIENCE, "b's session to end", || async {
        (b.registry.live_count() == 0).then_some(())
    })
    .await?;
    assert!(b.registry.get("cam").is_err(), "b forgot the registration");
    let refused = crate::cluster_gateway::post(&b, "cam").await?;
    assert_eq!(refused.status(), 404, "the publisher cannot come back on b");
    Ok(())
}

#[tokio::test]
async fn request_keyframe_via_c_reaches_the_publisher_on_b() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let (_a, mut b, mut c) = three_nodes(&redis, &sink, &["kf", "idle"]).await?;
    let _published = b.publish("kf", Some(Video::H264), false).await?;
    let plis = || {
        let mut grpc = b.grpc.clone();
        async move {
            let ingest = grpc
                .get_ingest(ingest("kf"))
                .await
                .ok()?
                .into_inner()
                .ingest?;
            ingest.session?.counters.map(|c| c.plis_sent)
        }
    };
    let before = eventually(PATIENCE, "the track-start PLI", || async {
        plis().await.filter(|n| *n >= 1)
    })
    .await?;
    let keyframe = |id: &str| pb::RequestKeyframeRequest {
        ingest_id: id.into(),
    };
    c.grpc.request_keyframe(keyframe("kf")).await?;
    eventually(PATIENCE, "the routed PLI on b", || async {
        plis().await.filter(|n| *n > before)
    })
    .await?;
    // NOT_FOUND when nothing is live, or the ingest is unknown, as on a single node.
    assert_eq!(
        code(c.grpc.request_keyframe(keyframe("idle")).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.grpc.request_keyframe(keyframe("ghost")).await),
        Code::NotFound
    );
    // Layer choice: durable, and the live session on b is told.
    let layer = c
        .grpc
        .select_simulcast_layer(pb::SelectSimulcastLayerRequest {
            ingest_id: "kf".into(),
            rid: "h".into(),
        })
        .await?
        .into_inner();
    assert!(layer.session_live, "b's live session was told");
    let on_b = b.grpc.get_ingest(ingest("kf")).await?.into_inner();
    assert_eq!(on_b.ingest.map(|i| i.simulcast_layer).as_deref(), Some("h"));
    Ok(())
}

#[tokio::test]
async fn set_caps_via_a_applies_its_bitrate_limit_on_b() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let (mut a, mut b, _c) = three_nodes(&redis, &sink, &["cam"]).await?;
    let _published = b.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    let mut events = b
        .grpc
        .watch_events(pb::WatchEventsRequest {
            ingest_ids: vec!["cam".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let limits = pb::IngestLimits {
        max_bitrate_bps: 1_000,
        ..Default::default()
    };
    a.grpc
        .set_caps(pb::SetCapsRequest {
            ingest_id: "cam".into(),
            limits: Some(limits),
            ..Default::default()
        })
        .await?;
    assert_eq!(
        b.registry.limits("cam").and_then(|l| l.max_bitrate_bps),
        Some(1_000)
    );
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.message().await? {
            if let Some(pb::event::Payload::SessionEnded(end)) = event.payload {
                return anyhow::Ok(end.reason);
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await??;
    assert_eq!(ended, pb::EndReason::BitrateCap as i32);
    assert_eq!(b.registry.live_count(), 0);
    Ok(())
}

#[tokio::test]
async fn an_owner_killed_before_its_lease_expires_answers_unavailable() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let kill_b = node_that_can_die(redis.url(), "b", "cam", sink.addr, Duration::from_secs(30))?;
    let mut a = node(&redis, "a", |_| {}).await?;
    sink.recv_rtp(PATIENCE).await?;
    kill_b.send(())?;
    let started = Instant::now();
    let status = a
        .grpc
        .request_keyframe(pb::RequestKeyframeRequest {
            ingest_id: "cam".into(),
        })
        .await
        .expect_err("b is gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?} (route deadline 2 s)",
        started.elapsed()
    );
    let status = a
        .grpc
        .teardown_stream(pb::TeardownStreamRequest {
            ingest_id: "cam".into(),
            ..Default::default()
        })
        .await
        .expect_err("b is gone");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    Ok(())
}

#[tokio::test]
async fn patch_and_delete_on_another_nodes_session_are_carried_to_the_owner() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register_with(pb::RegisterIngestRequest {
        ingest_id: "cam".into(),
        video_target: sink.addr.to_string(),
        bearer_token: "s3cret".into(),
        ..Default::default()
    })
    .await?;
    let b = node(&redis, "b", |_| {}).await?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let created = b.post_offer("cam", &offer, Some("s3cret")).await?;
    assert_eq!(created.status(), 201);
    let location = header(&created, "location")?;
    let etag = header(&created, "etag")?;
    publisher.set_answer(created.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    sink.recv_rtp(PATIENCE).await?;

    // A client that never follows redirects talks to a only.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let trickle = "a=ice-ufrag:x\r\na=ice-pwd:yyyyyyyyyyyyyyyyyyyyyy\r\n";
    let patch = |url: String, token: Option<&str>| {
        let mut request = http
            .patch(url)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", &etag)
            .body(trickle);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    };
    // The token is checked on a, before anything is routed.
    assert_eq!(patch(a.url(&location), None).send().await?.status(), 401);
    assert_eq!(
        patch(a.url(&location), Some("wrong"))
            .send()
            .await?
            .status(),
        401
    );
    let carried = patch(a.url(&location), Some("s3cret")).send().await?;
    assert_eq!(carried.status(), 204, "b's answer, through a");
    let stale = http
        .patch(a.url(&location))
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", "\"stale\"")
        .bearer_auth("s3cret")
        .body(trickle)
        .send()
        .await?;
    assert_eq!(stale.status(), 412, "b's precondition check, through a");

    // A real ICE restart through a: b's new fragment and ETag come back.
    let restarted = publisher
        .restart_ice(|fragment| {
            let (http, a_url) = (http.clone(), a.url(&location));
            async move {
                let answered = http
                    .patch(a_url)
                    .header("content-type", "application/trickle-ice-sdpfrag")
                    .header("if-match", "*")
                    .bearer_auth("s3cret")
                    .body(fragment.clone())
                    .send()
                    .await?;
                anyhow::ensure!(
                    answered.status() == 200,
                    "PATCH through a: {}",
                    answered.status()
                );
                anyhow::ensure!(answered.headers().contains_key("etag"), "an ETag");
                Ok(answered.text().await?)
            }
        })
        .await?;
    assert!(!restarted.is_empty());
    publisher.connected(PATIENCE).await?;
    sink.drain();
    sink.recv_rtp(PATIENCE).await?;

    // DELETE through a: the token is checked on a.
    assert_eq!(http.delete(a.url(&location)).send().await?.status(), 401);
    assert_eq!(b.registry.live_count(), 1);
    let deleted = http
        .delete(a.url(&location))
        .bearer_auth("s3cret")
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(b.registry.live_count(), 0);
    // No node holds it any more: a answers as a single node does.
    let leases = whipgate::topology::cluster::lease::Leases::new(
        crate::cluster_redis::node_handle(&redis.url()),
        whipgate::topology::cluster::Keys::default(),
    );
    eventually(PATIENCE, "the lease to be released", || async {
        leases.holder("cam").await.ok()?.is_none().then_some(())
    })
    .await?;
    assert_eq!(
        patch(a.url(&location), Some("s3cret"))
            .send()
            .await?
            .status(),
        404
    );
    let gone = http
        .delete(a.url(&location))
        .bearer_auth("s3cret")
        .send()
        .await?;
    assert!(gone.status().is_success(), "{}", gone.status());
    Ok(())
}

#[tokio::test]
async fn without_redis_calls_and_session_urls_it_cannot_place_answer_unavailable() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("live", Some(&sink), None).await?;
    a.register("idle", Some(&sink), None).await?;
    let published = a.publish("live", Some(Video::H264), false).await?;
    redis.kill();
    // This node's own session: answered here, Redis or not.
    let keyframe = |id: &str| pb::RequestKeyframeRequest {
        ingest_id: id.into(),
    };
    a.grpc.request_keyframe(keyframe("live")).await?;
    // Nothing live here: it may be live elsewhere, which only Redis can tell.
    assert_eq!(
        code(a.grpc.request_keyframe(keyframe("idle")).await),
        Code::Unavailable
    );
    let elsewhere = format!("/whip/idle/{}", uuid::Uuid::new_v4());
    let r = a.http.delete(a.url(&elsewhere)).send().await?;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(a.delete(&published.location).await?, 200, "its own session");
    Ok(())
}

/// Benchmark-class (run by hand):
/// `cargo test --release --test it routed_call_latency -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn routed_call_latency() -> Result<()> {
    const N: usize = 200;
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let (a, b, _c) = three_nodes(&redis, &sink, &["cam"]).await?;
    let _published = b.publish("cam", Some(Video::H264), false).await?;
    let timed = |gw: &TestGateway| {
        let mut grpc = gw.grpc.clone();
        async move {
            let mut out = Vec::with_capacity(N);
            for _ in 0..N {
                let started = Instant::now();
                grpc.request_keyframe(pb::RequestKeyframeRequest {
                    ingest_id: "cam".into(),
                })
                .await?;
                out.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            out.sort_by(f64::total_cmp);
            anyhow::Ok(out)
        }
    };
    let local = timed(&b).await?;
    let routed = timed(&a).await?;
    let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "RequestKeyframe over {N} calls: on the owner p50 {:.2} ms p90 {:.2} ms; \
         routed through another node p50 {:.2} ms p90 {:.2} ms",
        p(&local, 0.5),
        p(&local, 0.9),
        p(&routed, 0.5),
        p(&routed, 0.9)
    );
    Ok(())
}

#[tokio::test]
async fn malformed_routed_calls_are_dropped_and_the_queue_keeps_serving() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let (mut a, b, _c) = three_nodes(&redis, &sink, &["cam"]).await?;
    let _published = b.publish("cam", Some(Video::H264), false).await?;
    let handle = crate::cluster_redis::node_handle(&redis.url());
    let lease_before: Option<String> = handle
        .query(redis::cmd("GET").arg("whipgate:lease:cam"))
        .await?;
    let far = whipgate::topology::cluster::now_ms() + 3_600_000;
    let soon = whipgate::topology::cluster::now_ms() + 5_000;
    let teardown = r#"{"op":"teardown","ingest":"cam","detail":"forged"}"#;
    let forged = [
        "not json".to_string(),
        // Answers into another key (it would overwrite the lease).
        serde_json::json!({"reply_to": "whipgate:lease:cam", "deadline_ms": soon, "body": teardown})
            .to_string(),
        // A deadline an hour away.
        serde_json::json!({"reply_to": format!("whipgate:rpc:reply:{}", uuid::Uuid::new_v4()),
            "deadline_ms": far, "body": teardown})
        .to_string(),
        // An unknown operation.
        serde_json::json!({"reply_to": format!("whipgate:rpc:reply:{}", uuid::Uuid::new_v4()),
            "deadline_ms": soon, "body": r#"{"op":"reboot"}"#})
        .to_string(),
    ];
    for raw in &forged {
        let _: i64 = handle
            .query(redis::cmd("RPUSH").arg("whipgate:rpc:b").arg(raw))
            .await?;
    }
    // The queue drains past them and still serves real calls.
    eventually(PATIENCE, "b to drain its queue", || async {
        let n: i64 = handle
            .query(redis::cmd("LLEN").arg("whipgate:rpc:b"))
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await?;
    a.grpc
        .request_keyframe(pb::RequestKeyframeRequest {
            ingest_id: "cam".into(),
        })
        .await?;
    assert_eq!(b.registry.live_count(), 1, "no forged teardown ran");
    let lease_after: Option<String> = handle
        .query(redis::cmd("GET").arg("whipgate:lease:cam"))
        .await?;
    assert_eq!(lease_after, lease_before, "the lease was not overwritten");
    Ok(())
}
