//! Media workers: several sockets on the one media port, each driving the sessions whose
//! datagrams the kernel gives it.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use futures_util::future::try_join_all;

use crate::harness::{PATIENCE, TestGateway, UdpSink};
use crate::publisher::Video;

/// `whipgate_media_worker_datagrams_total` by worker.
fn datagrams_by_worker(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("whipgate_media_worker_datagrams_total{worker=\""))
        .filter_map(|l| {
            let (worker, rest) = l.split_once("\"}")?;
            Some((worker.to_owned(), rest.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_spread_over_the_workers_and_each_gets_its_own_media() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.media_workers = 4).await?;
    // Ten publishers, each from its own address: the chance that the kernel puts all ten on
    // one of the four sockets is 4 * 4^-10 (about 4 in a million).
    const PUBLISHERS: usize = 10;
    let mut sinks = Vec::new();
    for i in 0..PUBLISHERS {
        let sink = UdpSink::bind().await?;
        gw.register(&format!("w{i}"), Some(&sink), None).await?;
        sinks.push(sink);
    }
    let published = try_join_all((0..PUBLISHERS).map(|i| {
        let gw = &gw;
        async move { gw.publish(&format!("w{i}"), Some(Video::H264), false).await }
    }))
    .await?;
    // Every ingest's target gets its own publisher's stream (one SSRC, H264 at 96).
    for sink in &sinks {
        let packets = sink.recv_n(20, PATIENCE).await?;
        ensure!(packets.iter().all(|p| p.payload_type == 96));
        let ssrc = packets[0].ssrc;
        ensure!(
            packets.iter().all(|p| p.ssrc == ssrc),
            "one stream per target"
        );
    }
    let by_worker = datagrams_by_worker(&gw.metrics().await?);
    ensure!(by_worker.len() == 4, "one series per worker: {by_worker:?}");
    let busy = by_worker.values().filter(|n| **n > 0).count();
    ensure!(
        busy >= 2,
        "publishers were spread over the workers: {by_worker:?}"
    );

    for p in &published {
        ensure!(gw.delete(&p.location).await? == 200);
    }
    gw.all_clean().await?;
    gw.stop().await
}
