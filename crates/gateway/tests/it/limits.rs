//! Per-client connection caps on the HTTP and gRPC listeners: one address holding its share
//! cannot keep another address from publishing or calling the control plane, and a gRPC
//! connection that never speaks is closed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Endpoint;
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

use crate::harness::{PATIENCE, TestGateway, UdpSink, header};
use crate::publisher::{Publisher, Video};

const OTHER: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `to` from `from` (any port).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    Ok(socket.connect(to).await?)
}

/// Reads until EOF (or an error, e.g. a reset) within `patience`; what was read.
async fn read_to_close(stream: &mut TcpStream, patience: Duration) -> Result<Vec<u8>> {
    let mut seen = Vec::new();
    tokio::time::timeout(patience, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .context("the connection stayed open")?;
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_at_its_http_share_cannot_block_another_address_publishing() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| c.http_max_connections_per_client = 4).await?;
    let sink = UdpSink::bind().await?;
    gw.register("cam", Some(&sink), None).await?;
    // 127.0.0.1 takes its four connections and keeps them (no request sent).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 1], gw.bound.http).await?);
    }
    // Its fifth is answered 503 and closed at once.
    let mut fifth = connect_from([127, 0, 0, 1], gw.bound.http).await?;
    let said = String::from_utf8_lossy(&read_to_close(&mut fifth, PATIENCE).await?).into_owned();
    assert!(
        said.starts_with("HTTP/1.1 503") && said.contains("too many open connections"),
        "{said:?}"
    );
    // Another address publishes for real meanwhile.
    let other = reqwest::Client::builder()
        .local_address(IpAddr::from(OTHER))
        .build()?;
    let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
    let response = other
        .post(gw.whip_url("cam"))
        .header("content-type", "application/sdp")
        .body(offer)
        .send()
        .await?;
    if response.status() != 201 {
        bail!(
            "publish from {OTHER:?} answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let location = header(&response, "location")?;
    publisher.set_answer(response.text().await?).await?;
    publisher.connected(PATIENCE).await?;
    let refused = other.get(gw.url("/metrics")).send().await?.text().await?;
    assert!(
        refused.contains(
            "whipgate_connections_refused_total{listener=\"http\",reason=\"per_client\"}"
        ),
        "refusals are counted"
    );
    // Freed places are taken again.
    held.clear();
    let status = other.delete(gw.url(&location)).send().await?.status();
    assert!(status.is_success());
    crate::harness::eventually(PATIENCE, "127.0.0.1 to connect again", || {
        let http = gw.http.clone();
        let url = gw.url("/healthz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        }
    })
    .await?;
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_at_its_grpc_share_cannot_block_another_and_silent_ones_are_closed()
-> Result<()> {
    let gw = TestGateway::start_with(|c| {
        c.grpc_max_connections_per_client = 3;
        c.http_header_timeout = Duration::from_secs(1);
    })
    .await?;
    // The harness holds one gRPC connection from 127.0.0.1; two silent ones fill the share.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(connect_from([127, 0, 0, 1], gw.bound.grpc).await?);
    }
    let mut over = connect_from([127, 0, 0, 1], gw.bound.grpc).await?;
    // Beyond the share: closed at once, without a word.
    let said = read_to_close(&mut over, Duration::from_millis(500)).await?;
    assert!(said.is_empty(), "{said:?}");
    // Another address calls the control plane meanwhile.
    let channel = Endpoint::from_shared(format!("http://{}", gw.bound.grpc))?
        .local_address(Some(IpAddr::from(OTHER)))
        .connect()
        .await?;
    IngestControlClient::new(channel)
        .list_ingests(pb::ListIngestsRequest::default())
        .await?;
    // The silent ones sent no HTTP/2 preface: closed after the first-byte deadline (1 s).
    for stream in &mut silent {
        let said = read_to_close(stream, PATIENCE).await?;
        // The server may have sent its SETTINGS before giving up.
        assert!(said.len() < 1024, "{} bytes", said.len());
    }
    // A connection that speaks is not closed by that deadline.
    let mut speaking = connect_from([127, 0, 0, 1], gw.bound.grpc).await?;
    speaking
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), async {
            let mut buf = [0u8; 256];
            loop {
                if matches!(speaking.read(&mut buf).await, Ok(0) | Err(_)) {
                    break;
                }
            }
        })
        .await
        .is_err(),
        "a connection that sent its preface stays open past the deadline"
    );
    gw.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_back_strangers_not_publishers_with_their_token() -> Result<()> {
    let mut gw = TestGateway::start_with(|c| {
        let defaults = whipgate::Config::default();
        c.rate_limit_per_sec = defaults.rate_limit_per_sec;
        c.rate_limit_burst = defaults.rate_limit_burst;
    })
    .await?;
    gw.register_with(pb::RegisterIngestRequest {
        ingest_id: "studio".into(),
        bearer_token: "s3cret".into(),
        ..Default::default()
    })
    .await?;
    let post = |token: &'static str| {
        // Not an SDP body: whatever the handler answers, it is not the rate limit's 429.
        gw.http
            .post(gw.whip_url("studio"))
            .header("content-type", "text/plain")
            .bearer_auth(token)
            .send()
    };
    let burst = whipgate::Config::default().rate_limit_burst as usize;
    for n in 0..burst + 20 {
        let status = post("s3cret").await?.status();
        assert_eq!(status, 415, "POST {n} with the ingest's token");
    }
    let mut limited = 0;
    for _ in 0..burst + 20 {
        if post("guess").await?.status() == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 19, "wrong tokens are rate-limited ({limited})");
    gw.stop().await
}
