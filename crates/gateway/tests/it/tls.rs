//! TLS with real certificates (a CA and leaves generated with rcgen in a temp dir): WHIP over
//! HTTPS with a real WebRTC publisher, `/metrics` over HTTPS, gRPC over TLS, a certificate
//! reload that new handshakes see while a live session and a WatchEvents stream go on, a
//! broken reload that keeps the old certificate, and configuration errors.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use whipgate::net::tls::TlsReload;
use whipgate::{Bound, Config, Gateway};
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

use crate::harness::{PATIENCE, UdpSink, eventually, header};
use crate::publisher::{Publisher, Video};
use crate::tls_pki::TestPki;

/// An in-process gateway with TLS on HTTP and gRPC, and clients trusting the test CA.
struct TlsGateway {
    bound: Bound,
    reload: TlsReload,
    https: reqwest::Client,
    grpc: IngestControlClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TlsGateway {
    async fn start(pki: &TestPki) -> Result<Self> {
        Self::start_with(pki, |_| {}).await
    }

    async fn start_with(pki: &TestPki, tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config::loopback();
        config.stats_interval = Duration::from_millis(300);
        pki.configure(&mut config);
        tweak(&mut config);
        let gateway = Gateway::bind(config).await?;
        let bound = gateway.bound();
        let reload = gateway.tls_reload();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(gateway.run(async {
            let _ = rx.await;
        }));
        Ok(TlsGateway {
            bound,
            reload,
            https: pki.https()?,
            grpc: pki.grpc(bound.grpc).await?,
            shutdown: Some(tx),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.bound.http)
    }

    /// Registers `cam` (H264) forwarding video to `sink`.
    async fn register(&mut self, sink: &UdpSink) -> Result<pb::Ingest> {
        let request = pb::RegisterIngestRequest {
            ingest_id: "cam".to_owned(),
            video_target: sink.addr.to_string(),
            ..Default::default()
        };
        let response = self.grpc.register_ingest(request).await?.into_inner();
        response.ingest.context("no ingest")
    }

    /// Publishes H264 to `cam` over HTTPS with a real WebRTC client; media flowing.
    async fn publish(&self) -> Result<Publisher> {
        let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
        let response = self
            .https
            .post(self.url("/whip/cam"))
            .header("content-type", "application/sdp")
            .body(offer)
            .send()
            .await?;
        if response.status() != 201 {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        let location = header(&response, "location")?;
        assert!(location.starts_with("/whip/cam/"), "{location}");
        publisher.set_answer(response.text().await?).await?;
        publisher.connected(PATIENCE).await?;
        publisher.start_media().await?;
        Ok(publisher)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_metrics_over_https_only() -> Result<()> {
    let pki = TestPki::new()?;
    let mut gw = TlsGateway::start(&pki).await?;
    let sink = UdpSink::bind().await?;
    gw.register(&sink).await?;
    let _publisher = gw.publish().await?;
    sink.recv_n(10, PATIENCE).await?;

    // Plain HTTP to the TLS port gets no answer: the handshake fails, and is counted.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", gw.bound.http))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let metrics = eventually(PATIENCE, "the failed handshake in /metrics", || async {
        let text = gw
            .https
            .get(gw.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| l == "whipgate_tls_handshake_failures_total{listener=\"http\"} 1")
            .then_some(text)
    })
    .await?;
    assert!(metrics.contains("whipgate_live_publishers 1"), "{metrics}");

    // ALPN: HTTP/2 and HTTP/1.1 on the HTTP listener, each served.
    let (_, alpn) = pki.presented(gw.bound.http, &[b"h2", b"http/1.1"]).await?;
    assert_eq!(alpn, b"h2");
    let (_, alpn) = pki.presented(gw.bound.http, &[b"http/1.1"]).await?;
    assert_eq!(alpn, b"http/1.1");
    let h2 = gw.https.get(gw.url("/healthz")).send().await?;
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);
    let h1 = reqwest::Client::builder()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes())?)
        .build()?
        .get(gw.url("/healthz"))
        .send()
        .await?;
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);

    // The node advertises an https:// URL.
    let nodes = gw.grpc.list_nodes(pb::ListNodesRequest::default()).await?;
    let url = &nodes.into_inner().nodes[0].advertise_url;
    assert_eq!(url, &format!("https://{}", gw.bound.http));
    Ok(())
}

/// Reads until the server closes the connection (EOF or reset); how long that took.
async fn closed_after(mut stream: impl tokio::io::AsyncRead + Unpin) -> Result<Duration> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => bail!("the server kept the connection open"),
            Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_and_idle_http2_connections_are_closed() -> Result<()> {
    let pki = TestPki::new()?;
    let timeout = Duration::from_secs(1);
    let gw = TlsGateway::start_with(&pki, |c| c.http_header_timeout = timeout).await?;
    // A client that never starts its handshake is cut off after the timeout, and counted;
    // meanwhile others are served (the handshake runs in the connection's own task).
    let stalled = tokio::net::TcpStream::connect(gw.bound.http).await?;
    let stalled = tokio::spawn(closed_after(stalled));
    let status = gw.https.get(gw.url("/healthz")).send().await?.status();
    assert_eq!(status, 200);
    assert!(stalled.await?? >= timeout - Duration::from_millis(100));
    eventually(PATIENCE, "the timed-out handshake in /metrics", || async {
        let text = gw
            .https
            .get(gw.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| l == "whipgate_tls_handshake_failures_total{listener=\"http\"} 1")
            .then_some(())
    })
    .await?;
    // An HTTP/2 connection with no request is closed after the same timeout, as HTTP/1.1's
    // header-read timeout closes an idle kept-alive connection.
    let idle = pki.connect(gw.bound.http, &[b"h2"]).await?;
    assert_eq!(idle.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let after = closed_after(idle).await?;
    assert!(after >= timeout - Duration::from_millis(100), "{after:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_and_plaintext_refused() -> Result<()> {
    let pki = TestPki::new()?;
    let mut gw = TlsGateway::start(&pki).await?;
    let sink = UdpSink::bind().await?;
    let ingest = gw.register(&sink).await?;
    assert_eq!(ingest.ingest_id, "cam");
    let got = gw
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: "cam".to_owned(),
        })
        .await?
        .into_inner()
        .ingest
        .context("no ingest")?;
    assert_eq!(got.video_target, sink.addr.to_string());
    let (_, alpn) = pki.presented(gw.bound.grpc, &[b"h2"]).await?;
    assert_eq!(alpn, b"h2");

    // A plaintext client gets nowhere (it may fail connecting or on the call).
    let plain = async {
        let channel = Channel::from_shared(format!("http://{}", gw.bound.grpc))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(3))
            .connect()
            .await?;
        IngestControlClient::new(channel)
            .list_ingests(pb::ListIngestsRequest::default())
            .await?;
        anyhow::Ok(())
    };
    assert!(plain.await.is_err(), "a plaintext gRPC call succeeded");
    // The TLS channel still works after that.
    gw.grpc
        .list_ingests(pb::ListIngestsRequest::default())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_without_dropping_anything() -> Result<()> {
    let pki = TestPki::new()?;
    let first = std::fs::read(pki.cert_path())?;
    let first = CertificateDer::from_pem_slice(&first)?.to_vec();
    let mut gw = TlsGateway::start(&pki).await?;
    let sink = UdpSink::bind().await?;
    gw.register(&sink).await?;
    let _publisher = gw.publish().await?;
    sink.recv_n(10, PATIENCE).await?;
    let mut watch = gw
        .grpc
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    tokio::time::timeout(PATIENCE, watch.message())
        .await
        .context("no event before the reload")??
        .context("watch ended")?;
    assert_eq!(pki.presented(gw.bound.http, &[]).await?.0, first);
    assert_eq!(pki.presented(gw.bound.grpc, &[b"h2"]).await?.0, first);

    let second = pki.write_leaf()?;
    assert_ne!(second, first);
    gw.reload.reload().map_err(anyhow::Error::msg)?;
    // New handshakes on both listeners see the new certificate.
    assert_eq!(pki.presented(gw.bound.http, &[]).await?.0, second);
    assert_eq!(pki.presented(gw.bound.grpc, &[b"h2"]).await?.0, second);
    // The live session keeps forwarding, the open watch stream keeps delivering, and the
    // kept-alive HTTPS and gRPC connections keep working.
    sink.drain();
    sink.recv_n(20, PATIENCE).await?;
    for _ in 0..2 {
        tokio::time::timeout(PATIENCE, watch.message())
            .await
            .context("no event after the reload")??
            .context("watch ended after the reload")?;
    }
    let live = gw
        .grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: "cam".to_owned(),
        })
        .await?
        .into_inner()
        .ingest
        .and_then(|i| i.session)
        .context("the session is gone after the reload")?;
    assert!(!live.session_id.is_empty());
    let status = gw.https.get(gw.url("/healthz")).send().await?.status();
    assert_eq!(status, 200);

    // A broken file: the reload fails, the current certificate stays, the server serves.
    std::fs::write(pki.cert_path(), "-----BEGIN CERTIFICATE-----\nnot base64\n")?;
    let err = gw.reload.reload().expect_err("a broken PEM reloaded");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    // A certificate whose key is not the one in key.pem: refused as well.
    let (other, _) = pki.leaf()?;
    std::fs::write(pki.cert_path(), other.pem())?;
    let err = gw.reload.reload().expect_err("a mismatched pair reloaded");
    assert!(err.to_string().contains("unusable"), "{err}");
    assert_eq!(pki.presented(gw.bound.http, &[]).await?.0, second);
    assert_eq!(pki.presented(gw.bound.grpc, &[b"h2"]).await?.0, second);
    sink.drain();
    sink.recv_n(10, PATIENCE).await?;
    let status = pki.https()?.get(gw.url("/healthz")).send().await?.status();
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn tls_configuration_errors_are_clear() -> Result<()> {
    let pki = TestPki::new()?;
    let cert = pki.cert_path().to_string_lossy().into_owned();
    let key = pki.key_path().to_string_lossy().into_owned();
    let err = Config::load(["whipgate", "--tls-cert", &cert]).expect_err("cert alone");
    assert!(err.to_string().contains("tls_key is not"), "{err}");
    let err = Config::load(["whipgate", "--tls-key", &key]).expect_err("key alone");
    assert!(err.to_string().contains("tls_cert is not"), "{err}");
    let err = Config::load(["whipgate", "--grpc-tls-cert", &cert]).expect_err("gRPC cert alone");
    assert!(err.to_string().contains("grpc_tls_key is not"), "{err}");
    // The file keys, as every other option.
    let file = pki.dir().join("whipgate.toml");
    std::fs::write(
        &file,
        format!(
            "tls_cert = {cert:?}\ntls_key = {key:?}\ngrpc_tls_cert = {cert:?}\ngrpc_tls_key = {key:?}\n"
        ),
    )?;
    let config = Config::load(["whipgate", "--config", &file.to_string_lossy()])
        .map_err(anyhow::Error::msg)?;
    assert_eq!(config.tls_cert, Some(pki.cert_path()));
    assert_eq!(config.grpc_tls_key, Some(pki.key_path()));

    // An unreadable or broken file is a startup error naming the file.
    let mut config = Config::loopback();
    config.tls_cert = Some(pki.dir().join("missing.pem"));
    config.tls_key = Some(pki.key_path());
    let err = Gateway::bind(config)
        .await
        .err()
        .context("bound without a cert")?;
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let mut config = Config::loopback();
    config.tls_cert = Some(pki.key_path());
    config.tls_key = Some(pki.key_path());
    let err = Gateway::bind(config)
        .await
        .err()
        .context("bound with a key as cert")?;
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_publishes_over_https() -> Result<()> {
    use whipgate_load::{Engine, LoadConfig};
    let pki = TestPki::new()?;
    let gw = TlsGateway::start(&pki).await?;
    let cfg = LoadConfig {
        url: gw.url("/whip"),
        grpc: Some(format!("https://{}", gw.bound.grpc)),
        ca_cert: Some(pki.ca_path()),
        publishers: 2,
        prefix: "tls-load-".to_owned(),
        duration: 1.0,
        workers: Some(1),
        ..LoadConfig::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(30), Engine::new(cfg)?.run()).await??;
    assert_eq!(report.created, 2, "{report:?}");
    assert_eq!(report.connected, 2, "{report:?}");
    assert!(report.post_errors.is_empty(), "{report:?}");
    let sink = report.sink.as_ref().context("no sink report")?;
    assert!(sink.packets > 0, "{report:?}");
    Ok(())
}
