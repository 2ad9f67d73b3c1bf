//! Whole gateways in cluster mode on one private redis-server: node records, registrations
//! read back from Redis, one publisher per ingest across nodes (leases), placement of a full
//! node's publishers, and Redis going away under a live session.

use std::time::Duration;

use anyhow::Result;
use whipgate::topology::cluster::Keys;
use whipgate::topology::cluster::lease::Leases;
use whipgate::topology::cluster::nodes::Nodes;
use whipgate_proto::pb;

use crate::cluster_redis::node_handle;
use whipgate_media::continuity::{RESTORE_WINDOW, restart_margin};

use crate::harness::{PATIENCE, Published, TestGateway, UdpSink, eventually, header};
use crate::publisher::{Publisher, Video};
use crate::redis_harness::RedisServer;
use crate::restart::{newest, receive_for};

pub(crate) async fn node(
    redis: &RedisServer,
    id: &str,
    tweak: impl FnOnce(&mut whipgate::Config),
) -> Result<TestGateway> {
    let url = redis.url();
    let id = id.to_string();
    TestGateway::start_with(move |c| {
        c.cluster_redis = Some(url);
        c.cluster_secret_file = Some(crate::cluster_redis::secret_file(
            crate::cluster_redis::TEST_SECRET,
        ));
        c.node_id = Some(id);
        c.cluster_lease = Duration::from_secs(2);
        tweak(c);
    })
    .await
}

pub(crate) async fn post(gw: &TestGateway, ingest: &str) -> Result<reqwest::Response> {
    let (_publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    gw.post_offer(ingest, &offer, None).await
}

#[tokio::test]
async fn nodes_heartbeat_and_a_later_node_reads_registrations_from_redis() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    a.register("cam", Some(&sink), None).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let c = node(&redis, "c", |_| {}).await?;
    let ingest = b
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: "cam".into(),
        })
        .await?
        .into_inner()
        .ingest
        .expect("ingest");
    assert_eq!(ingest.video_target, sink.addr.to_string());
    let nodes = Nodes::new(node_handle(&redis.url()), Keys::default());
    let listed = eventually(PATIENCE, "three node records", || async {
        let l = nodes.list().await.ok()?;
        (l.len() == 3).then_some(l)
    })
    .await?;
    let ids: Vec<&str> = listed.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(listed[1].advertise_url, format!("http://{}", b.bound.http));
    assert!(listed.iter().all(|n| n.capacity == 256 && !n.draining));
    c.stop().await?;
    let listed = eventually(PATIENCE, "c's record to go", || async {
        let l = nodes.list().await.ok()?;
        (l.len() == 2).then_some(l)
    })
    .await?;
    assert!(
        listed.iter().all(|n| n.id != "c"),
        "a clean stop removes the record at once"
    );
    drop(a);
    Ok(())
}

#[tokio::test]
async fn one_publisher_per_ingest_across_nodes() -> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    a.register("cam", Some(&sink), None).await?;
    // B learns the registration from the shared state; the same registration sent to B
    // as well is harmless (identical: nothing changes).
    b.register("cam", Some(&sink), None).await?;
    let published = a.publish("cam", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;
    let leases = Leases::new(node_handle(&redis.url()), Keys::default());
    let holder = leases.holder("cam").await?.expect("lease");
    assert_eq!(holder.node, "a");
    let refused = post(&b, "cam").await?;
    assert_eq!(refused.status(), 409, "{}", refused.text().await?);
    assert_eq!(b.registry.live_count(), 0, "the refused slot is freed");
    assert_eq!(a.delete(&published.location).await?, 200);
    eventually(PATIENCE, "the lease to be released", || async {
        leases.holder("cam").await.ok()?.is_none().then_some(())
    })
    .await?;
    let second = b.publish("cam", Some(Video::H264), false).await?;
    assert_eq!(leases.holder("cam").await?.expect("lease").node, "b");
    drop(second);
    Ok(())
}

/// Two nodes, a full after one publisher (each with "one" and "two" registered, "two" with
/// the bearer token `two_token` unless it is empty); "two"'s sink is returned.
async fn a_full(
    redirect: bool,
    two_token: &str,
) -> Result<(RedisServer, TestGateway, TestGateway, UdpSink, Published)> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |c| {
        c.max_publishers = 1;
        c.cluster_redirect_publish = redirect;
    })
    .await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    // Separate sinks: what reaches "two"'s comes from "two"'s publisher only.
    let (sink, two) = (UdpSink::bind().await?, UdpSink::bind().await?);
    for gw in [&mut a, &mut b] {
        gw.register("one", Some(&sink), None).await?;
        gw.register_with(pb::RegisterIngestRequest {
            ingest_id: "two".into(),
            video_target: two.addr.to_string(),
            bearer_token: two_token.into(),
            ..Default::default()
        })
        .await?;
    }
    let first = a.publish("one", Some(Video::H264), false).await?;
    let nodes = Nodes::new(node_handle(&redis.url()), Keys::default());
    eventually(PATIENCE, "a's record to show it full", || async {
        let l = nodes.list().await.ok()?;
        l.iter()
            .any(|n| n.id == "a" && n.live_publishers == 1)
            .then_some(())
    })
    .await?;
    sink.recv_rtp(PATIENCE).await?;
    Ok((redis, a, b, two, first))
}

#[tokio::test]
async fn a_full_node_hands_the_publish_to_one_with_room() -> Result<()> {
    let (_redis, a, b, sink, _first) = a_full(false, "").await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let response = http
        .post(a.whip_url("two"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    assert_eq!(response.status(), 201, "answered by b, through a");
    let location = header(&response, "location")?;
    assert!(location.starts_with("/whip/two/"), "{location}");
    let answer = response.text().await?;
    // Media goes straight to b: the answer's candidates are b's media address.
    let b_media = b.bound.udp.port().to_string();
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with("a=candidate") && l.contains(&b_media)),
        "{answer}"
    );
    publisher.set_answer(answer).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    sink.recv_rtp(PATIENCE).await?;
    assert_eq!(b.registry.live_count(), 1);
    assert_eq!(a.registry.live_count(), 1, "a still holds only its first");
    // The session URL on a reaches b's session.
    let deleted = http.delete(a.url(&location)).send().await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(b.registry.live_count(), 0);
    Ok(())
}

#[tokio::test]
async fn with_cluster_redirect_publish_a_full_node_answers_307_followed_with_the_bearer()
-> Result<()> {
    let (_redis, a, b, sink, _first) = a_full(true, "tw0-secret").await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let post = |url: &str, token: Option<&str>| {
        let request = http
            .post(url)
            .header("content-type", "application/sdp")
            .body(offer.clone());
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    // Without the token a tells nothing, not even where the ingest would go.
    let refused = post(&a.whip_url("two"), None).await?;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("location").is_none());
    let response = post(&a.whip_url("two"), Some("tw0-secret")).await?;
    assert_eq!(response.status(), 307);
    let location = header(&response, "location")?;
    assert_eq!(location, b.whip_url("two"));
    // The redirected POST stands on its own: b wants the token too.
    let refused = post(&location, None).await?;
    assert_eq!(refused.status(), 401);
    let refused = post(&location, Some("tw0-secre")).await?;
    assert_eq!(refused.status(), 401);
    assert_eq!(b.registry.live_count(), 0, "no session for a refused POST");
    // The publisher follows it with the same Authorization header, as OBS (libcurl) does.
    let response = post(&location, Some("tw0-secret")).await?;
    assert_eq!(response.status(), 201);
    let session_url = header(&response, "location")?;
    assert!(session_url.starts_with("/whip/two/"), "{session_url}");
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    publisher.start_media().await?;
    // b forwards its media to "two"'s target.
    let forwarded = sink.recv_n(10, PATIENCE).await?;
    assert!(
        forwarded.iter().all(|p| p.payload_type == 96),
        "{forwarded:?}"
    );
    assert_eq!(b.registry.live_count(), 1);
    assert_eq!(a.registry.live_count(), 1, "a still holds only its first");
    Ok(())
}

#[tokio::test]
async fn redis_down_keeps_media_flowing_refuses_new_publishers_and_recovers() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    a.register("live", Some(&sink), None).await?;
    a.register("new", Some(&sink), None).await?;
    let _published = a.publish("live", Some(Video::H264), false).await?;
    sink.recv_rtp(PATIENCE).await?;

    redis.kill();
    let refused = post(&a, "new").await?;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // Media keeps flowing with Redis gone for longer than the lease.
    sink.drain();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = sink.recv_n(20, PATIENCE).await?;
    assert_eq!(during.len(), 20);
    assert_eq!(a.registry.live_count(), 1);
    let status = a
        .grpc
        .register_ingest(pb::RegisterIngestRequest {
            ingest_id: "during-outage".into(),
            video_target: sink.addr.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("no durable write without Redis");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    redis.restart().await?;
    let leases = Leases::new(node_handle(&redis.url()), Keys::default());
    eventually(
        PATIENCE,
        "the live session's lease to be re-asserted",
        || async { (leases.holder("live").await.ok()??.node == "a").then_some(()) },
    )
    .await?;
    let after = eventually(PATIENCE, "a new POST to be admitted", || async {
        let (p, offer) = Publisher::new(Some(Video::H264), false).await.ok()?;
        let r = a.post_offer("new", &offer, None).await.ok()?;
        (r.status() == 201).then_some(p)
    })
    .await?;
    drop(after);
    let ingest = a
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: "live".into(),
        })
        .await?
        .into_inner()
        .ingest
        .expect("registration intact");
    assert!(ingest.session.is_some());
    Ok(())
}

/// Starts node `id` (publisher lease `lease`) on a runtime of its own with a live publisher on
/// `ingest`, and returns a switch that kills it abruptly: the runtime is dropped with every
/// task in it (no lease release, no record removal), as kill -9 would.
pub(crate) fn node_that_can_die(
    redis_url: String,
    id: &'static str,
    ingest: &'static str,
    target: std::net::SocketAddr,
    lease: Duration,
) -> Result<std::sync::mpsc::Sender<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(Err("no runtime".into()));
            return;
        };
        let alive = rt.block_on(async move {
            let started = async {
                let mut gw = TestGateway::start_with(move |c| {
                    c.cluster_redis = Some(redis_url);
                    c.cluster_secret_file = Some(crate::cluster_redis::secret_file(
                        crate::cluster_redis::TEST_SECRET,
                    ));
                    c.node_id = Some(id.into());
                    c.cluster_lease = lease;
                })
                .await?;
                gw.register_with(pb::RegisterIngestRequest {
                    ingest_id: ingest.into(),
                    video_target: target.to_string(),
                    ..Default::default()
                })
                .await?;
                let published = gw.publish(ingest, Some(Video::H264), false).await?;
                anyhow::Ok((gw, published))
            };
            match started.await {
                Ok(alive) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = tokio::task::spawn_blocking(move || kill_rx.recv()).await;
                    Some(alive)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    None
                }
            }
        });
        // No graceful shutdown signal: the gateway and its publisher just stop existing.
        std::mem::forget(alive);
        rt.shutdown_background();
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))?
        .map_err(anyhow::Error::msg)?;
    Ok(kill_tx)
}

#[tokio::test]
async fn a_dead_nodes_ingest_accepts_a_publisher_elsewhere_within_the_lease_time() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let kill_b = node_that_can_die(redis.url(), "b", "cam", sink.addr, Duration::from_secs(2))?;
    let mut c = node(&redis, "c", |_| {}).await?;
    c.register("cam", Some(&sink), None).await?;
    sink.recv_rtp(PATIENCE).await?;
    let refused = post(&c, "cam").await?;
    assert_eq!(refused.status(), 409, "b holds the lease");
    // Long enough for two checkpoints with traffic (the packet rate is measured between them).
    let before = receive_for(&sink, Duration::from_millis(2500)).await?;
    let ssrc = before.last().map(|p| p.ssrc).expect("media from b");

    kill_b.send(())?;
    let killed = std::time::Instant::now();
    let mut last_seen = before;
    while let Ok(p) = sink.recv_rtp(Duration::from_millis(200)).await {
        last_seen.push(p);
    }
    let last_seq = newest(&last_seen).expect("packets");
    let leases = Leases::new(node_handle(&redis.url()), Keys::default());
    eventually(PATIENCE, "b's lease to expire", || async {
        leases.holder("cam").await.ok()?.is_none().then_some(())
    })
    .await?;
    assert!(
        killed.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
        "expired after {:?} (lease 2 s)",
        killed.elapsed()
    );
    let _second = c.publish("cam", Some(Video::H264), false).await?;
    // The consumer started before keeps decoding: same SSRC, sequence numbers forward by at
    // most the margin (b's packets after its last checkpoint are covered by it).
    let after = sink.recv_n(5, PATIENCE).await?;
    assert!(
        after.iter().all(|p| p.ssrc == ssrc),
        "same output SSRC {ssrc}: {:?}",
        after.iter().map(|p| p.ssrc).collect::<Vec<_>>()
    );
    let jump = after[0].sequence.wrapping_sub(last_seq);
    // The synthetic publisher sends ~30 video packets/s; twice that bounds the rate measured.
    let bound = restart_margin(60.0, RESTORE_WINDOW) + 1;
    assert!(
        (1..=bound).contains(&jump),
        "sequence numbers continue forward: last {last_seq}, then {} (jump {jump}, bound {bound})",
        after[0].sequence
    );
    assert_eq!(leases.holder("cam").await?.expect("lease").node, "c");
    let nodes = Nodes::new(node_handle(&redis.url()), Keys::default());
    eventually(PATIENCE, "b's record to expire", || async {
        let l = nodes.list().await.ok()?;
        l.iter().all(|n| n.id != "b").then_some(())
    })
    .await?;
    Ok(())
}

/// POST-to-201 latency of `n` publish/DELETE cycles, sorted (ms).
async fn admission_latencies(gw: &mut TestGateway, n: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (_publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
        let started = std::time::Instant::now();
        let response = gw.post_offer("lat", &offer, None).await?;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(response.status(), 201);
        let location = header(&response, "location")?;
        assert_eq!(gw.delete(&location).await?, 200);
        gw.all_clean().await?;
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Benchmark-class (run by hand): `cargo test --release --test it admission_latency -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn admission_latency_single_node_vs_cluster() -> Result<()> {
    const N: usize = 40;
    let redis = RedisServer::start().await?;
    let mut single = TestGateway::start().await?;
    let mut clustered = node(&redis, "a", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    single.register("lat", Some(&sink), None).await?;
    clustered.register("lat", Some(&sink), None).await?;
    // Warm up both, then measure each.
    admission_latencies(&mut single, 5).await?;
    admission_latencies(&mut clustered, 5).await?;
    let s = admission_latencies(&mut single, N).await?;
    let c = admission_latencies(&mut clustered, N).await?;
    let p = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "admission latency over {N} publishes: single node p50 {:.2} ms p90 {:.2} ms; \
         cluster (Redis) p50 {:.2} ms p90 {:.2} ms",
        p(&s, 0.5),
        p(&s, 0.9),
        p(&c, 0.5),
        p(&c, 0.9)
    );
    Ok(())
}

/// Redis's own count of `HGET` commands (registrations are read with it).
async fn hget_calls(redis: &RedisServer) -> Result<u64> {
    let info: String = node_handle(&redis.url())
        .query(redis::cmd("INFO").arg("commandstats"))
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn unauthenticated_posts_never_reach_redis_and_unknown_ids_only_at_a_bounded_rate()
-> Result<()> {
    let redis = RedisServer::start().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    let sink = UdpSink::bind().await?;
    a.register_with(pb::RegisterIngestRequest {
        ingest_id: "cam".into(),
        video_target: sink.addr.to_string(),
        bearer_token: "s3cret".into(),
        ..Default::default()
    })
    .await?;
    let b = node(&redis, "b", |_| {}).await?;
    eventually(PATIENCE, "b to hold the registration", || async {
        b.registry.get("cam").ok()
    })
    .await?;
    let (_publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let before = hget_calls(&redis).await?;
    for token in [None, Some("guess"), Some("s3cre"), Some("s3cret0")] {
        let refused = b.post_offer("cam", &offer, token).await?;
        assert_eq!(refused.status(), 401, "{token:?}");
    }
    assert_eq!(
        hget_calls(&redis).await?,
        before,
        "wrong tokens are refused from b's own copy"
    );
    // Made-up ids: b asks Redis about ids it has not heard of, at most 20 a second.
    let before = hget_calls(&redis).await?;
    for n in 0..60 {
        let response = b.post_offer(&format!("nope-{n}"), &offer, None).await?;
        assert_eq!(response.status(), 404);
    }
    let asked = hget_calls(&redis).await? - before;
    assert!(asked <= 25, "{asked} registration reads for 60 made-up ids");
    // The right token still publishes through b.
    let created = b.post_offer("cam", &offer, Some("s3cret")).await?;
    assert_eq!(created.status(), 201);
    Ok(())
}
