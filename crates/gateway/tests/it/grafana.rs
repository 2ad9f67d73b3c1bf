//! The Grafana dashboard in `docs/grafana/` queries only metrics a running gateway exports.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::harness::{PATIENCE, TestGateway, UdpSink, eventually};
use crate::publisher::Video;

const DASHBOARD: &str = include_str!("../../../../docs/grafana/whipgate.json");

/// Every `whipgate_*` metric name in the dashboard's queries.
fn queried_metrics(dashboard: &Value) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().context("targets")? {
            let expr = target["expr"].as_str().context("expr")?;
            let mut rest = expr;
            while let Some(at) = rest.find("whipgate_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    Ok(names)
}

/// The metric names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() -> Result<()> {
    let dashboard: Value = serde_json::from_str(DASHBOARD)?;
    let queried = queried_metrics(&dashboard)?;
    assert!(queried.len() >= 15, "{queried:?}");

    // Exercise every path once, so labelled series exist: a publish with both kinds, a
    // refused publish, control RPCs, a session that ends.
    let mut gw = TestGateway::start().await?;
    let (video, audio) = (UdpSink::bind().await?, UdpSink::bind().await?);
    gw.register("graf", Some(&video), Some(&audio)).await?;
    let published = gw.publish("graf", Some(Video::H264), true).await?;
    video.recv_n(5, PATIENCE).await?;
    audio.recv_n(5, PATIENCE).await?;
    assert_eq!(gw.post_offer("nope", "v=0\r\n", None).await?.status(), 404);
    assert_eq!(gw.delete(&published.location).await?, 200);
    gw.all_clean().await?;

    // A datagram from nobody: the media path drops it (whipgate_media_dropped_total).
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    stray.send_to(b"not stun, not rtp", gw.bound.udp).await?;
    let http = gw.http.clone();
    let url = gw.url("/metrics");
    let missing = eventually(PATIENCE, "every queried metric in /metrics", || {
        let (http, url, queried) = (http.clone(), url.clone(), queried.clone());
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            let metrics = exported(&text);
            let missing: Vec<_> = queried
                .iter()
                .filter(|m| !metrics.contains(*m))
                .cloned()
                .collect();
            missing.is_empty().then_some(missing)
        }
    })
    .await;
    assert!(missing.is_ok(), "queried but not exported: {:?}", {
        let metrics = exported(&gw.metrics().await?);
        queried
            .iter()
            .filter(|m| !metrics.contains(*m))
            .cloned()
            .collect::<Vec<_>>()
    });
    gw.stop().await
}
