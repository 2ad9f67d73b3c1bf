//! A Sentinel failover under a live cluster handle: a private master, replica and three
//! `redis-sentinel`; the master is killed; leases and registrations keep working on the
//! promoted replica through the same `redis+sentinel://` URL.

use std::time::Duration;

use anyhow::Result;
use whipgate::topology::cluster::events::EventStream;
use whipgate::topology::cluster::lease::{Acquired, Holder, Leases};
use whipgate::topology::cluster::state::{SharedState, Table};
use whipgate::topology::cluster::{ClusterError, Keys};

use crate::cluster_redis::node_handle;
use crate::harness::eventually;
use crate::redis_harness::{SentinelSet, command};

#[tokio::test]
async fn sentinel_failover_keeps_leases_and_registrations() -> Result<()> {
    let mut set = SentinelSet::start().await?;
    let handle = node_handle(&set.url());
    let state = SharedState::new(handle.clone(), Keys::default());
    let leases = Leases::new(handle.clone(), Keys::default());
    let events = EventStream::new(handle.clone(), Keys::default(), 100);
    let me = Holder {
        node: "a".into(),
        session: "s1".into(),
    };
    let ttl = Duration::from_secs(30);
    state.put(Table::Ingests, "cam", "spec").await?;
    assert_eq!(leases.acquire("cam", &me, ttl).await?, Acquired::Won);
    assert_eq!(events.append("a", "before").await?, 1);
    // Replication is asynchronous; the test is about failover, not about the lost-write
    // window, so wait until the replica has everything.
    let acked: i64 = command(set.master.port, redis::cmd("WAIT").arg(1).arg(5000)).await?;
    assert_eq!(acked, 1);

    let old_master = set.master.port;
    set.master.kill();
    eventually(
        Duration::from_secs(30),
        "a sentinel to promote the replica",
        || async { (set.master_port().await.ok()? == set.replica.port).then_some(()) },
    )
    .await?;
    assert_ne!(set.master_port().await?, old_master);

    // The same handle follows the new master (errors until it has reconnected are
    // "unavailable", never anything else).
    eventually(
        Duration::from_secs(10),
        "writes on the new master",
        || async {
            match leases.renew("cam", &me, ttl).await {
                Ok(ok) => Some(ok),
                Err(ClusterError::Unavailable(_)) => None,
                Err(e) => panic!("unexpected error during failover: {e}"),
            }
        },
    )
    .await
    .map(|renewed| assert!(renewed, "the lease survived the failover"))?;
    assert_eq!(
        state.get(Table::Ingests, "cam").await?.as_deref(),
        Some("spec")
    );
    let other = Holder {
        node: "b".into(),
        session: "s2".into(),
    };
    assert_eq!(
        leases.acquire("cam", &other, ttl).await?,
        Acquired::HeldBy(me.clone())
    );
    assert_eq!(leases.acquire("cam2", &other, ttl).await?, Acquired::Won);
    assert_eq!(events.append("a", "after").await?, 2, "seq continues");
    Ok(())
}
