//! The cluster's Redis side against a real, private redis-server: leases, node records,
//! shared state, the event stream, routed calls, Redis going away and coming back.

use std::time::{Duration, Instant};

use anyhow::Result;
use whipgate::topology::cluster::events::EventStream;
use whipgate::topology::cluster::lease::{Acquired, Holder, Leases};
use whipgate::topology::cluster::nodes::{NodeRecord, Nodes, least_loaded};
use whipgate::topology::cluster::rpc::Rpc;
use whipgate::topology::cluster::state::{SharedState, Table};
use whipgate::topology::cluster::trust::Trust;
use whipgate::topology::cluster::{ClusterError, Keys, Redis, Timeouts};

use crate::harness::eventually;
use crate::redis_harness::RedisServer;

/// The cluster secret the test nodes share.
pub const TEST_SECRET: &[u8] = b"whipgate-integration-tests-cluster-secret-0123456789";

/// The keys of [`TEST_SECRET`].
pub fn test_trust() -> Trust {
    Trust::from_secret(TEST_SECRET).expect("long enough")
}

/// A file holding `secret`, for `--cluster-secret-file` (in a scratch directory of this test
/// run; one file per secret).
pub fn secret_file(secret: &[u8]) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("scratch dir"));
    let name = format!("secret-{:x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        secret.hash(&mut h);
        h.finish()
    });
    let path = dir.path().join(&name);
    // Written whole under a temporary name, so a racing test never reads half a file.
    let tmp = dir
        .path()
        .join(format!("{name}.{:?}.tmp", std::thread::current().id()));
    std::fs::write(&tmp, [secret, b"\n"].concat()).expect("secret file");
    std::fs::rename(&tmp, &path).expect("secret file");
    path
}

/// A handle as one node would hold it (its own connection), with the test nodes' secret.
pub fn node_handle(url: &str) -> Redis {
    Redis::open(url, Timeouts::default(), test_trust()).expect("valid url")
}

fn holder(node: &str, session: &str) -> Holder {
    Holder {
        node: node.into(),
        session: session.into(),
    }
}

#[tokio::test]
async fn racing_lease_acquisitions_have_exactly_one_winner() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = Leases::new(node_handle(&redis.url()), Keys::default());
    let b = Leases::new(node_handle(&redis.url()), Keys::default());
    let ttl = Duration::from_secs(10);
    for round in 0..50 {
        let ingest = format!("cam-{round}");
        let (ha, hb) = (holder("a", "s1"), holder("b", "s2"));
        let (ra, rb) = tokio::join!(a.acquire(&ingest, &ha, ttl), b.acquire(&ingest, &hb, ttl));
        match (ra?, rb?) {
            (Acquired::Won, Acquired::HeldBy(h)) => assert_eq!(h, ha),
            (Acquired::HeldBy(h), Acquired::Won) => assert_eq!(h, hb),
            other => panic!("round {round}: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_unrenewed_lease_expires_and_the_old_holder_cannot_touch_the_new_one() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = Leases::new(node_handle(&redis.url()), Keys::default());
    let b = Leases::new(node_handle(&redis.url()), Keys::default());
    let (ha, hb) = (holder("a", "s1"), holder("b", "s2"));
    let short = Duration::from_millis(300);
    assert_eq!(a.acquire("cam", &ha, short).await?, Acquired::Won);
    assert_eq!(
        b.acquire("cam", &hb, short).await?,
        Acquired::HeldBy(ha.clone())
    );
    let started = Instant::now();
    eventually(Duration::from_secs(5), "the lease to expire", || async {
        (b.acquire("cam", &hb, Duration::from_secs(10)).await.ok()? == Acquired::Won).then_some(())
    })
    .await?;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!a.renew("cam", &ha, short).await?, "renewing a lost lease");
    assert!(!a.release("cam", &ha).await?, "releasing a lost lease");
    assert_eq!(a.holder("cam").await?, Some(hb.clone()));
    assert!(b.release("cam", &hb).await?);
    assert_eq!(a.holder("cam").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl_and_take_over_names_the_previous_holder() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = Leases::new(node_handle(&redis.url()), Keys::default());
    let (ha, hb) = (holder("a", "s1"), holder("b", "s2"));
    // Renewed every 100 ms, the lease must outlive three of its TTLs. The TTL leaves room for a
    // loaded test machine (every test of the binary runs at once on two cores): a stall of
    // 400 ms once let a 400 ms lease lapse between two renewals.
    let ttl = Duration::from_millis(1000);
    assert_eq!(a.acquire("cam", &ha, ttl).await?, Acquired::Won);
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        assert!(a.renew("cam", &ha, ttl).await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.holder("cam").await?, Some(ha.clone()));
    assert_eq!(a.reassert("cam", &ha, ttl).await?, Acquired::Won);
    assert_eq!(
        a.reassert("cam", &hb, ttl).await?,
        Acquired::HeldBy(ha.clone())
    );
    assert_eq!(a.take_over("cam", &hb, ttl).await?, Some(ha));
    assert_eq!(a.holder("cam").await?, Some(hb));
    Ok(())
}

fn record(id: &str, live: u64) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        advertise_url: format!("http://127.0.0.1/{id}"),
        live_publishers: live,
        capacity: 4,
        draining: false,
        last_heartbeat_ms: 0,
    }
}

#[tokio::test]
async fn node_records_vanish_when_heartbeats_stop() -> Result<()> {
    let redis = RedisServer::start().await?;
    let nodes = Nodes::new(node_handle(&redis.url()), Keys::default());
    nodes
        .heartbeat(&record("a", 4), Duration::from_secs(10))
        .await?;
    nodes
        .heartbeat(&record("b", 1), Duration::from_millis(300))
        .await?;
    nodes
        .heartbeat(&record("c", 2), Duration::from_secs(10))
        .await?;
    let listed = nodes.list().await?;
    assert_eq!(
        listed.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(listed.iter().all(|n| n.last_heartbeat_ms > 0));
    assert_eq!(least_loaded(&listed, "a").map(|n| n.id.as_str()), Some("b"));
    let listed = eventually(Duration::from_secs(5), "b to expire", || async {
        let l = nodes.list().await.ok()?;
        (l.len() == 2).then_some(l)
    })
    .await?;
    assert_eq!(least_loaded(&listed, "a").map(|n| n.id.as_str()), Some("c"));
    let members: Vec<String> = redis
        .cmd(redis::cmd("ZRANGE").arg("whipgate:nodes").arg(0).arg(-1))
        .await?;
    assert_eq!(members, ["a", "c"], "expired ids are pruned from the set");
    nodes.remove("c").await?;
    assert_eq!(nodes.get("c").await?, None);
    Ok(())
}

#[tokio::test]
async fn shared_state_writes_are_atomic_across_nodes() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = SharedState::new(node_handle(&redis.url()), Keys::default());
    let b = SharedState::new(node_handle(&redis.url()), Keys::default());
    let (ra, rb) = tokio::join!(
        a.insert_new(Table::Ingests, "cam", "from-a"),
        b.insert_new(Table::Ingests, "cam", "from-b")
    );
    assert!(ra? ^ rb?, "exactly one insert wins");
    let winner = b.get(Table::Ingests, "cam").await?.expect("registered");
    assert!(
        !a.compare_and_set(Table::Ingests, "cam", Some("stale"), "x")
            .await?
    );
    assert!(
        a.compare_and_set(Table::Ingests, "cam", Some(&winner), "v2")
            .await?
    );
    assert!(a.compare_and_set(Table::Ingests, "new", None, "v1").await?);
    b.put(Table::Layers, "cam", "q").await?;
    b.put(Table::Outputs, "cam", "ssrc=1").await?;
    a.put_caps("{\"max_publishers\":3}").await?;
    assert_eq!(b.caps().await?.as_deref(), Some("{\"max_publishers\":3}"));
    assert_eq!(
        b.all(Table::Ingests).await?,
        [
            ("cam".to_string(), "v2".to_string()),
            ("new".to_string(), "v1".to_string())
        ]
    );
    assert!(b.remove_ingest("cam").await?);
    assert!(!b.remove_ingest("cam").await?);
    for table in Table::ALL {
        assert_eq!(a.get(table, "cam").await?, None, "{table:?}");
    }
    Ok(())
}

#[tokio::test]
async fn every_reader_sees_one_gap_free_order() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = EventStream::new(node_handle(&redis.url()), Keys::default(), 10_000);
    let b = EventStream::new(node_handle(&redis.url()), Keys::default(), 10_000);
    let mut tail_a = a.tail(0);
    let mut tail_c = b.tail(0);
    let write = |s: EventStream, node: &'static str| async move {
        for i in 0..100 {
            s.append(node, &format!("{node}-{i}")).await?;
        }
        Ok::<_, ClusterError>(())
    };
    let (wa, wb) = tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    wa?;
    wb?;
    let mut seen_a = Vec::new();
    let mut seen_c = Vec::new();
    while seen_a.len() < 200 {
        seen_a.extend(tail_a.next(Duration::from_secs(2)).await?);
    }
    while seen_c.len() < 200 {
        seen_c.extend(tail_c.next(Duration::from_secs(2)).await?);
    }
    assert_eq!(seen_a, seen_c, "two readers on two connections");
    let seqs: Vec<u64> = seen_a.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    // Each writer's own events keep their order within the global one.
    let from_a: Vec<&str> = seen_a
        .iter()
        .filter(|e| e.node == "a")
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(from_a.len(), 100);
    assert_eq!(from_a[0], "a-0");
    assert_eq!(from_a[99], "a-99");
    // Resume on "another node" from a seq first read on this one.
    let replay = b.read_from(seen_a[149].seq).await?;
    assert_eq!(replay.events, seen_a[149..]);
    assert_eq!(replay.last_seq, 200);
    assert!(!replay.more);
    assert_eq!(a.epoch().await?, b.epoch().await?, "one epoch");
    Ok(())
}

#[tokio::test]
async fn trimmed_or_future_resume_points_are_out_of_range() -> Result<()> {
    let redis = RedisServer::start().await?;
    let s = EventStream::new(node_handle(&redis.url()), Keys::default(), 10);
    assert_eq!(s.read_from(1).await?.events, []);
    let mut lagging = s.tail(0);
    for i in 0..30 {
        s.append("a", &i.to_string()).await?;
    }
    let err = s.read_from(5).await.expect_err("trimmed");
    assert!(
        matches!(&err, ClusterError::OutOfRange(m) if m.contains("oldest held: 21")),
        "{err}"
    );
    let replay = s.read_from(21).await?;
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );
    assert_eq!(
        s.read_from(31).await?.events,
        [],
        "the next seq is live only"
    );
    assert_eq!(s.read_from(0).await?.last_seq, 30);
    let err = s.read_from(32).await.expect_err("future");
    assert!(
        matches!(&err, ClusterError::OutOfRange(m) if m.contains("beyond the newest event (30)")),
        "{err}"
    );
    let err = lagging
        .next(Duration::from_millis(100))
        .await
        .expect_err("lagged");
    assert!(
        matches!(&err, ClusterError::Lagged(m) if m.contains("from_seq=1")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn routed_calls_reach_the_owner_and_time_out_when_it_is_gone() -> Result<()> {
    let redis = RedisServer::start().await?;
    let a = Rpc::new(node_handle(&redis.url()), Keys::default(), "a");
    let b = Rpc::new(node_handle(&redis.url()), Keys::default(), "b");
    let mut inbox = b.serve("b");
    let server = tokio::spawn(async move {
        let mut answered = 0;
        while answered < 2 {
            if let Some(call) = inbox.next(Duration::from_secs(5)).await? {
                let body = format!("b did {}", call.body);
                call.reply(&body).await?;
                answered += 1;
            }
        }
        Ok::<_, ClusterError>(())
    });
    let r1 = a.call("b", "teardown cam", Duration::from_secs(3)).await?;
    let r2 = a.call("b", "keyframe cam", Duration::from_secs(3)).await?;
    assert_eq!(
        (r1.as_str(), r2.as_str()),
        ("b did teardown cam", "b did keyframe cam")
    );
    server.await??;
    let started = Instant::now();
    let err = a
        .call("nobody", "x", Duration::from_millis(300))
        .await
        .expect_err("nobody serves");
    assert!(
        matches!(err, ClusterError::NodeTimeout(ref n) if n == "nobody"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The expired call is dropped, not executed late.
    let mut late = a.serve("nobody");
    assert!(late.next(Duration::from_millis(50)).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn redis_down_fails_fast_and_everything_works_again_after_restart() -> Result<()> {
    let mut redis = RedisServer::start().await?;
    let handle = node_handle(&redis.url());
    let state = SharedState::new(handle.clone(), Keys::default());
    let leases = Leases::new(handle.clone(), Keys::default());
    let events = EventStream::new(handle.clone(), Keys::default(), 100);
    let me = holder("a", "s1");
    state.put(Table::Ingests, "cam", "spec").await?;
    assert_eq!(
        leases.acquire("cam", &me, Duration::from_secs(30)).await?,
        Acquired::Won
    );
    events.append("a", "before").await?;

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let err = state.get(Table::Ingests, "cam").await.expect_err("down");
        assert!(matches!(err, ClusterError::Unavailable(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "failed after {:?}",
            started.elapsed()
        );
        let err = leases
            .acquire("other", &me, Duration::from_secs(1))
            .await
            .expect_err("down");
        assert!(
            err.to_string().contains("cluster store unavailable"),
            "{err}"
        );
    }

    redis.restart().await?;
    let back = eventually(Duration::from_secs(5), "Redis to answer again", || async {
        state.get(Table::Ingests, "cam").await.ok()
    })
    .await?;
    assert_eq!(back.as_deref(), Some("spec"), "registrations survive (AOF)");
    assert_eq!(
        leases.reassert("cam", &me, Duration::from_secs(30)).await?,
        Acquired::Won
    );
    assert_eq!(events.append("a", "after").await?, 2, "seq continues");

    // A clean stop (SIGTERM) and start: the same.
    redis.stop();
    redis.restart().await?;
    let back = eventually(Duration::from_secs(5), "Redis after SIGTERM", || async {
        state.get(Table::Ingests, "cam").await.ok()
    })
    .await?;
    assert_eq!(back.as_deref(), Some("spec"));
    assert_eq!(events.last_seq().await?, 2);
    Ok(())
}

#[tokio::test]
async fn tokens_in_redis_are_salted_hashes_and_clear_ones_are_migrated_on_read() -> Result<()> {
    use whipgate::store::Store;
    use whipgate::store::redis::RedisStore;
    let redis = RedisServer::start().await?;
    let state = SharedState::new(node_handle(&redis.url()), Keys::default());
    // A registration with the token in clear, as a node of this cluster stored it before
    // tokens were hashed (sealed: an unsealed record is not read at all).
    let old = r#"{"id":"old","video_target":"127.0.0.1:5004","bearer_token":"clear-t0ken",
        "labels":{},"video_codecs":["H264"],"audio_codecs":["opus"],"created_at_ms":1}"#;
    let old = test_trust().seal(
        whipgate::topology::cluster::trust::Record::Ingest,
        "old",
        old,
    );
    state.put(Table::Ingests, "old", &old).await?;
    let store = RedisStore::new(node_handle(&redis.url()), Keys::default(), "n1");
    let loaded = store.load().await?;
    let record = loaded.ingests.first().expect("the old registration loads");
    let hash = record.bearer_token_hash.clone().expect("hashed on read");
    assert!(hash.matches("clear-t0ken") && !hash.matches("clear"));
    let raw = state.get(Table::Ingests, "old").await?.expect("stored");
    assert!(!raw.contains("clear-t0ken"), "written back hashed: {raw}");
    assert!(raw.contains("\"bearer_token_hash\":\"sha256:"), "{raw}");
    // Another node reading it now sees the same stored hash, not a new one.
    let other = RedisStore::new(node_handle(&redis.url()), Keys::default(), "n2");
    let seen = other.get_ingest("old").await?.expect("registered");
    assert_eq!(seen.bearer_token_hash, Some(hash));

    // A registration written now holds the hash only.
    let mut fresh = seen.clone();
    fresh.id = "new".into();
    fresh.bearer_token_hash = Some(whipgate::secret::TokenHash::new("n3w-t0ken"));
    store.put_ingest(&fresh).await?;
    let raw = state.get(Table::Ingests, "new").await?.expect("stored");
    assert!(!raw.contains("n3w-t0ken"), "{raw}");
    Ok(())
}
