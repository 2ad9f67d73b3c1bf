//! The cluster's trust boundary against a real redis-server: someone who can write to Redis
//! but does not hold the cluster secret can no longer drive a node with routed calls (forged,
//! replayed, or from a node with another secret), forge an answer, redirect media by editing a
//! registration, or take a publisher over with a forged lease; a node refuses cluster mode
//! without a secret; Redis over TLS (`rediss://`) with an ACL user.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use whipgate::topology::cluster::calls::RoutedCall;
use whipgate::topology::cluster::lease::Leases;
use whipgate::topology::cluster::nodes::{NodeRecord, Nodes};
use whipgate::topology::cluster::rpc::Rpc;
use whipgate::topology::cluster::trust::{Record, Trust};
use whipgate::topology::cluster::{ClusterError, Keys, Redis, Timeouts, now_ms};
use whipgate_proto::pb;

use crate::cluster_gateway::node;
use crate::cluster_redis::{TEST_SECRET, node_handle, secret_file, test_trust};
use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::Video;
use crate::redis_harness::{RedisServer, TlsRedisServer};
use crate::tls_pki::TestPki;

/// `whipgate_cluster_untrusted_total{kind="<kind>"}` on `gw` (0 before the first).
async fn untrusted(gw: &TestGateway, kind: &str) -> Result<u64> {
    let text = gw.metrics().await?;
    let prefix = format!("whipgate_cluster_untrusted_total{{kind=\"{kind}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse::<u64>())
        .transpose()?
        .unwrap_or(0))
}

fn teardown(ingest: &str) -> String {
    serde_json::to_string(&RoutedCall::Teardown {
        ingest: ingest.into(),
        detail: "forged".into(),
    })
    .expect("json")
}

/// A handle with keys from another secret: a Redis client that is not a member.
fn stranger_handle(url: &str) -> Result<Redis> {
    let trust = Trust::from_secret(&[7; 32]).map_err(anyhow::Error::msg)?;
    Ok(Redis::open(url, Timeouts::default(), trust)?)
}

fn live(gw: &TestGateway, ingest: &str) -> Result<bool> {
    Ok(gw.registry.get(ingest)?.session.is_some())
}

#[tokio::test]
async fn routed_calls_without_a_valid_tag_are_not_executed_and_are_counted() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("cam", Some(&sink), None).await?;
    let _published = a.publish("cam", Some(Video::H264), false).await?;
    let keys = Keys::default();

    // Pushed by hand, as the envelope was before: no tag.
    let bare = serde_json::json!({
        "reply_to": keys.rpc_reply(&uuid::Uuid::new_v4().to_string()),
        "deadline_ms": now_ms() + 5_000,
        "body": teardown("cam"),
    });
    redis
        .cmd::<i64>(
            redis::cmd("RPUSH")
                .arg(keys.rpc_queue("a"))
                .arg(bare.to_string()),
        )
        .await?;
    // Tagged, but with a key derived from another secret.
    let stranger = Rpc::new(stranger_handle(&redis.url())?, keys.clone(), "b");
    let err = stranger
        .call("a", &teardown("cam"), Duration::from_millis(500))
        .await
        .expect_err("a does not answer a stranger");
    assert!(matches!(err, ClusterError::NodeTimeout(_)), "{err}");
    eventually(PATIENCE, "both calls dropped and counted", || async {
        (untrusted(&a, "rpc_call").await.ok()? >= 2).then_some(())
    })
    .await?;
    assert!(live(&a, "cam")?, "the session survives forged teardowns");

    // The same call from a member is executed: the forged ones reached the queue a serves.
    let member = Rpc::new(node_handle(&redis.url()), keys, "b");
    let answer = member
        .call("a", &teardown("cam"), Duration::from_secs(2))
        .await?;
    assert_eq!(answer, r#"{"outcome":"done","flag":true}"#);
    assert!(!live(&a, "cam")?);
    Ok(())
}

#[tokio::test]
async fn a_replayed_genuine_call_is_not_executed_again() -> Result<()> {
    let redis = RedisServer::start().await?;
    let keys = Keys::default();
    let queue = keys.rpc_queue("a");
    // A genuine teardown queued before a runs, captured from Redis by an eavesdropper.
    let made = Instant::now();
    let caller = Rpc::new(node_handle(&redis.url()), keys.clone(), "b");
    let first = tokio::spawn(async move {
        caller
            .call("a", &teardown("cam"), Duration::from_secs(25))
            .await
    });
    let captured: String = eventually(PATIENCE, "the call to be queued", || async {
        let queued: Vec<String> = redis
            .cmd(redis::cmd("LRANGE").arg(&queue).arg(0).arg(-1))
            .await
            .ok()?;
        queued.into_iter().next()
    })
    .await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    // a executes it once, when nothing is registered.
    assert_eq!(first.await??, r#"{"outcome":"ingest_not_found"}"#);
    let sink = UdpSink::bind().await?;
    a.register("cam", Some(&sink), None).await?;
    let _published = a.publish("cam", Some(Video::H264), false).await?;
    assert!(
        made.elapsed() < Duration::from_secs(20),
        "the replay must happen before the call's deadline"
    );
    redis
        .cmd::<i64>(redis::cmd("RPUSH").arg(&queue).arg(&captured))
        .await?;
    eventually(PATIENCE, "the replay dropped and counted", || async {
        (untrusted(&a, "rpc_call").await.ok()? >= 1).then_some(())
    })
    .await?;
    assert!(live(&a, "cam")?, "the replayed teardown did not run");
    Ok(())
}

#[tokio::test]
async fn nodes_with_different_secrets_refuse_each_others_calls_and_forged_answers() -> Result<()> {
    let redis = RedisServer::start().await?;
    let keys = Keys::default();
    let member = Rpc::new(node_handle(&redis.url()), keys.clone(), "a");
    let stranger = Rpc::new(stranger_handle(&redis.url())?, keys.clone(), "b");
    for (caller, callee, name) in [(&member, &stranger, "b"), (&stranger, &member, "a")] {
        let mut inbox = callee.serve(name);
        let call = caller.call(name, "x", Duration::from_millis(300));
        let (answer, served) = tokio::join!(call, inbox.next(Duration::from_secs(1)));
        assert!(served?.is_none(), "{name} dropped the call");
        assert!(matches!(answer, Err(ClusterError::NodeTimeout(_))));
        let left: i64 = redis
            .cmd(redis::cmd("LLEN").arg(keys.rpc_queue(name)))
            .await?;
        assert_eq!(left, 0, "popped, not executed");
    }

    // An answer pushed by hand is not taken for the callee's: the caller waits for the real one.
    let queue = keys.rpc_queue("c");
    let other = member.clone();
    let call = tokio::spawn(async move { other.call("c", "x", Duration::from_secs(5)).await });
    let queued: String = eventually(PATIENCE, "the call to be queued", || async {
        let q: Vec<String> = redis
            .cmd(redis::cmd("LRANGE").arg(&queue).arg(0).arg(-1))
            .await
            .ok()?;
        q.into_iter().next()
    })
    .await?;
    let envelope: serde_json::Value = serde_json::from_str(&queued)?;
    let reply_to = envelope["reply_to"].as_str().context("reply key")?;
    redis
        .cmd::<i64>(redis::cmd("RPUSH").arg(reply_to).arg("forged"))
        .await?;
    let c = Rpc::new(node_handle(&redis.url()), keys, "c");
    let mut inbox = c.serve("c");
    let genuine = inbox
        .next(Duration::from_secs(2))
        .await?
        .context("c gets the call")?;
    assert_eq!(genuine.from, "a");
    genuine.reply("genuine").await?;
    assert_eq!(call.await??, "genuine");
    Ok(())
}

#[tokio::test]
async fn a_registration_edited_in_redis_is_not_applied_by_other_nodes() -> Result<()> {
    let redis = RedisServer::start().await?;
    let (sink, attacker) = (UdpSink::bind().await?, UdpSink::bind().await?);
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("cam", Some(&sink), None).await?;
    let mut b = node(&redis, "b", |_| {}).await?;
    let ingests = Keys::default().hash("ingests");
    let stored: String = redis
        .cmd(redis::cmd("HGET").arg(&ingests).arg("cam"))
        .await?;
    // The target changed, the tag kept.
    let edited = stored.replace(&sink.addr.to_string(), &attacker.addr.to_string());
    assert_ne!(stored, edited);
    redis
        .cmd::<i64>(redis::cmd("HSET").arg(&ingests).arg("cam").arg(&edited))
        .await?;

    let request = || pb::GetIngestRequest {
        ingest_id: "cam".into(),
    };
    let mut c = node(&redis, "c", |_| {}).await?;
    let status = c
        .grpc
        .get_ingest(request())
        .await
        .expect_err("c does not apply the edited registration");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(untrusted(&c, "ingest").await? >= 1);
    // b, running since before the edit, reloads on GetIngest: never the attacker's target.
    if let Ok(seen) = b.grpc.get_ingest(request()).await {
        let seen = seen.into_inner().ingest.context("ingest")?;
        assert_eq!(seen.video_target, sink.addr.to_string());
    }
    // A publisher on c is refused rather than forwarded to the edited target.
    let refused = crate::cluster_gateway::post(&c, "cam").await?;
    assert_eq!(refused.status(), 404);
    assert!(attacker.recv_rtp(Duration::from_millis(500)).await.is_err());
    Ok(())
}

#[tokio::test]
async fn a_forged_lease_naming_another_node_is_not_honoured() -> Result<()> {
    let redis = RedisServer::start().await?;
    let sink = UdpSink::bind().await?;
    let mut a = node(&redis, "a", |_| {}).await?;
    a.register("cam", Some(&sink), None).await?;
    let _published = a.publish("cam", Some(Video::H264), false).await?;
    let leases = Leases::new(node_handle(&redis.url()), Keys::default());
    let key = Keys::default().lease("cam");
    let naming_b = format!(r#"{{"node":"b","session":"{}"}}"#, uuid::Uuid::new_v4());
    let other_key = Trust::from_secret(&[9; 32]).map_err(anyhow::Error::msg)?;
    for forged in [
        naming_b.clone(),
        other_key.seal(Record::Lease, "cam", &naming_b),
    ] {
        redis
            .cmd::<()>(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&forged)
                    .arg("PX")
                    .arg(60_000),
            )
            .await?;
        // a's upkeep re-asserts its own lease over the forged value.
        eventually(PATIENCE, "a's lease back", || async {
            let holder = leases.holder("cam").await.ok()??;
            (holder.node == "a").then_some(())
        })
        .await?;
        assert!(live(&a, "cam")?, "a keeps its publisher");
    }
    assert!(untrusted(&a, "lease").await? >= 2);
    Ok(())
}

#[tokio::test]
async fn cluster_mode_needs_a_secret_of_32_bytes_or_insecure_cluster() -> Result<()> {
    let url = "redis://127.0.0.1:1/0";
    let without = crate::config_cli::refused(&["--cluster-redis", url], &[])?;
    assert!(without.contains("--cluster-secret-file"), "{without}");
    let short = secret_file(b"too-short");
    let short_arg = short.to_string_lossy();
    let stderr = crate::config_cli::refused(
        &["--cluster-redis", url, "--cluster-secret-file", &short_arg],
        &[],
    )?;
    assert!(stderr.contains("at least 32"), "{stderr}");
    let good = secret_file(TEST_SECRET);
    let good = good.to_string_lossy();
    let loaded = whipgate::Config::load([
        "whipgate",
        "--cluster-redis",
        url,
        "--cluster-secret-file",
        &good,
    ]);
    assert!(loaded.is_ok(), "{loaded:?}");
    assert!(
        whipgate::Config::load(["whipgate", "--cluster-redis", url, "--insecure-cluster"]).is_ok()
    );
    // Embedders (the test harness) are held to the same rule at bind.
    let redis = RedisServer::start().await?;
    let url = redis.url();
    let refused = TestGateway::start_with(|c| c.cluster_redis = Some(url)).await;
    let err = refused.err().context("no secret, no cluster node")?;
    assert!(
        format!("{err:#}").contains("--cluster-secret-file"),
        "{err:#}"
    );
    Ok(())
}

#[tokio::test]
async fn rediss_with_an_acl_user_works_and_plaintext_does_not() -> Result<()> {
    let pki = TestPki::new()?;
    let server = TlsRedisServer::start(
        pki.dir(),
        &pki.cert_path(),
        &pki.key_path(),
        &[
            "--user",
            "default",
            "off",
            "--user",
            "app",
            "on",
            ">s3cret-pw",
            "~*",
            "&*",
            "+@all",
        ],
    )?;
    let url = format!("rediss://app:s3cret-pw@127.0.0.1:{}/0", server.port);
    let ca = pki.ca_pem.clone().into_bytes();
    let tls = Redis::open_with_ca(&url, Timeouts::default(), test_trust(), Some(ca.clone()))?;
    assert!(!tls.describe().contains("s3cret-pw"), "{}", tls.describe());
    let ping = || async {
        tls.query::<String>(&redis::cmd("PING"))
            .await
            .ok()
            .filter(|p| p == "PONG")
    };
    eventually(PATIENCE, "redis over TLS", ping).await?;
    let nodes = Nodes::new(tls.clone(), Keys::default());
    let record = NodeRecord {
        id: "n1".into(),
        advertise_url: "http://n1".into(),
        live_publishers: 0,
        capacity: 1,
        draining: false,
        last_heartbeat_ms: 0,
    };
    nodes.heartbeat(&record, Duration::from_secs(5)).await?;
    assert_eq!(nodes.list().await?.len(), 1);

    let plain = format!("redis://app:s3cret-pw@127.0.0.1:{}/0", server.port);
    let wrong_password = url.replace("s3cret-pw", "guess");
    for (what, handle) in [
        (
            "plaintext",
            Redis::open(&plain, Timeouts::default(), test_trust())?,
        ),
        (
            "TLS without the CA",
            Redis::open(&url, Timeouts::default(), test_trust())?,
        ),
        (
            "a wrong password",
            Redis::open_with_ca(
                &wrong_password,
                Timeouts::default(),
                test_trust(),
                Some(ca.clone()),
            )?,
        ),
    ] {
        let err = handle
            .query::<String>(&redis::cmd("PING"))
            .await
            .expect_err(what);
        assert!(matches!(err, ClusterError::Unavailable(_)), "{what}: {err}");
        assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    }

    // A whole node on rediss:// with the CA configured.
    let secret = secret_file(TEST_SECRET);
    let ca_path = pki.ca_path();
    let gw_url = url.clone();
    let mut gw = TestGateway::start_with(move |c| {
        c.cluster_redis = Some(gw_url);
        c.cluster_secret_file = Some(secret);
        c.cluster_redis_ca = Some(ca_path);
        c.node_id = Some("tls-node".into());
    })
    .await?;
    let sink = UdpSink::bind().await?;
    gw.register("cam", Some(&sink), None).await?;
    let stored: Option<String> = tls
        .query(
            redis::cmd("HGET")
                .arg(Keys::default().hash("ingests"))
                .arg("cam"),
        )
        .await?;
    assert!(stored.is_some_and(|s| s.starts_with("wg1.")));
    Ok(())
}
