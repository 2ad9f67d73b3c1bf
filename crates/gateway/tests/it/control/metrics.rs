//! Control plane: the Prometheus metrics endpoint.

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};

use crate::harness::{PATIENCE, TestGateway, UdpSink};
use crate::publisher::Video;

/// One sample of Prometheus text exposition.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format: every non-comment line is `name{label="value",...} value`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').context(format!("no value: {line}"))?;
        let value: f64 = value.parse().context(format!("not a float: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').context("unclosed {")?),
            None => (series, ""),
        };
        let valid = |(i, c): (usize, char)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        };
        ensure!(
            !name.is_empty() && name.char_indices().all(valid),
            "bad name: {line}"
        );
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once("=\"")
                .context(format!("bad label: {line}"))?;
            map.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
        }
        let (name, labels) = (name.to_owned(), map);
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_bounded_labels() -> Result<()> {
    let mut gw = TestGateway::start().await?;
    let video = UdpSink::bind().await?;
    gw.register("m", Some(&video), None).await?;
    let published = gw.publish("m", Some(Video::H264), true).await?;
    video.recv_n(5, PATIENCE).await?;
    assert_eq!(gw.post_offer("ghost", "v=0\r\n", None).await?.status(), 404);
    assert_eq!(gw.delete(&published.location).await?, 200);

    let text = gw.metrics().await?;
    let samples = parse_prometheus(&text)?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        let matches = |s: &&Sample| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        };
        samples.iter().find(matches).map(|s| s.value)
    };
    for status in ["201", "404"] {
        let labels = [
            ("route", "/whip/{ingest_id}"),
            ("method", "POST"),
            ("code", status),
        ];
        let requests = value("whipgate_whip_requests_total", &labels);
        assert_eq!(requests, Some(1.0), "{status}\n{text}");
    }
    assert_eq!(value("whipgate_sessions_started_total", &[]), Some(1.0));
    let deleted = value(
        "whipgate_sessions_ended_total",
        &[("reason", "publisher_delete")],
    );
    assert_eq!(deleted, Some(1.0));
    let video = [("kind", "video")];
    let received = value("whipgate_rtp_packets_received_total", &video);
    assert!(received.is_some_and(|v| v > 0.0), "{text}");
    let forwarded = value("whipgate_rtp_packets_forwarded_total", &video);
    assert!(forwarded.is_some_and(|v| v > 0.0), "{text}");
    let register_ok = [("method", "RegisterIngest"), ("code", "OK")];
    assert_eq!(
        value("whipgate_control_requests_total", &register_ok),
        Some(1.0)
    );
    let connected = [("result", "connected")];
    let connects = value("whipgate_ice_connect_duration_seconds_count", &connected);
    assert_eq!(connects, Some(1.0));
    let per_ingest: Vec<&str> = samples
        .iter()
        .filter(|s| s.labels.contains_key("ingest"))
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        per_ingest.is_empty(),
        "ingest label without opting in: {per_ingest:?}"
    );
    gw.stop().await
}
