//! Boots the whole gateway in-process on ephemeral loopback ports, with clients for every
//! surface: HTTP (WHIP), gRPC, and UDP sinks standing in for FFmpeg.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use whipgate::registry::Registry;
use whipgate::{Bound, Config, Gateway};
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

use crate::publisher::{Publisher, Video};

/// How long `eventually` waits by default.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A running gateway; shut down (gracefully) on `stop`, or abruptly on drop.
pub struct TestGateway {
    pub bound: Bound,
    pub registry: Registry,
    pub media: whipgate::driver::Media,
    /// The WHIP edge's limits (negotiation slots, rate limits), shared with the gateway.
    pub limits: std::sync::Arc<whipgate::edge::whip::EdgeLimits>,
    /// What SIGHUP re-reads (TLS certificates, signed-token keys).
    pub reloader: whipgate::Reloader,
    pub http: reqwest::Client,
    pub grpc: IngestControlClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The private redis-server of a one-node cluster ([`Topo::Redis`]); dropped (killed)
    /// after the gateway.
    redis: Option<crate::redis_harness::RedisServer>,
}

/// Which topology a test gateway runs: alone, or as the one node of a cluster on a private
/// redis-server (the same edges, the other `Topology` implementation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topo {
    Local,
    Redis,
}

/// Runs the test body `$name(topo: Topo) -> Result<()>` once per topology, as the tests
/// `$name::local` and `$name::redis`.
macro_rules! on_both_topologies {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() -> anyhow::Result<()> {
                super::$name($crate::harness::Topo::Local).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() -> anyhow::Result<()> {
                super::$name($crate::harness::Topo::Redis).await
            }
        }
    };
}
pub(crate) use on_both_topologies;

impl TestGateway {
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// A gateway on topology `topo`, configured by `tweak` (after the cluster settings).
    pub async fn start_on(topo: Topo, tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        match topo {
            Topo::Local => Self::start_with(tweak).await,
            Topo::Redis => {
                let redis = crate::redis_harness::RedisServer::start().await?;
                let url = redis.url();
                let mut gw = Self::start_with(move |c| {
                    c.cluster_redis = Some(url);
                    c.cluster_secret_file = Some(crate::cluster_redis::secret_file(
                        crate::cluster_redis::TEST_SECRET,
                    ));
                    c.node_id = Some("solo".into());
                    c.cluster_lease = Duration::from_secs(2);
                    tweak(c);
                })
                .await?;
                gw.redis = Some(redis);
                Ok(gw)
            }
        }
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        init_logging();
        let mut config = Config::loopback();
        config.stats_interval = Duration::from_millis(500);
        tweak(&mut config);
        let gateway = Gateway::bind(config).await?;
        let bound = gateway.bound();
        let registry = gateway.registry().clone();
        let media = gateway.media().clone();
        let limits = gateway.edge_limits();
        let reloader = gateway.reloader();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = gateway
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        let channel = Channel::from_shared(format!("http://{}", bound.grpc))?
            .connect()
            .await
            .context("connecting gRPC")?;
        Ok(TestGateway {
            bound,
            registry,
            media,
            limits,
            reloader,
            http: reqwest::Client::new(),
            grpc: IngestControlClient::new(channel),
            shutdown: Some(tx),
            task: Some(task),
            redis: None,
        })
    }

    /// Starts a graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful shutdown, waiting for the gateway to finish draining.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await??;
        }
        Ok(())
    }

    /// A client of the standard gRPC health service (no API key needed).
    pub async fn health(&self) -> Result<HealthClient<Channel>> {
        let channel = Channel::from_shared(format!("http://{}", self.bound.grpc))?
            .connect()
            .await
            .context("connecting gRPC (health)")?;
        Ok(HealthClient::new(channel))
    }

    pub fn whip_url(&self, ingest_id: &str) -> String {
        format!("http://{}/whip/{ingest_id}", self.bound.http)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.bound.http)
    }

    /// Registers an ingest forwarding to the given sinks.
    pub async fn register(
        &mut self,
        ingest_id: &str,
        video: Option<&UdpSink>,
        audio: Option<&UdpSink>,
    ) -> Result<pb::Ingest> {
        self.register_with(pb::RegisterIngestRequest {
            ingest_id: ingest_id.to_owned(),
            video_target: video.map(|s| s.addr.to_string()).unwrap_or_default(),
            audio_target: audio.map(|s| s.addr.to_string()).unwrap_or_default(),
            ..Default::default()
        })
        .await
    }

    pub async fn register_with(
        &mut self,
        request: pb::RegisterIngestRequest,
    ) -> Result<pb::Ingest> {
        let response = self.grpc.register_ingest(request).await?.into_inner();
        response.ingest.context("no ingest in response")
    }

    /// POSTs an offer.
    pub async fn post_offer(
        &self,
        ingest_id: &str,
        offer: &str,
        token: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.whip_url(ingest_id))
            .header("content-type", "application/sdp")
            .body(offer.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Ok(request.send().await?)
    }

    /// Publishes with a real WebRTC client: POST, answer, connected, media flowing.
    pub async fn publish(
        &self,
        ingest_id: &str,
        video: Option<Video>,
        audio: bool,
    ) -> Result<Published> {
        let (mut publisher, offer) = Publisher::new(video, audio).await?;
        let response = self.post_offer(ingest_id, &offer, None).await?;
        if response.status() != 201 {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        let location = header(&response, "location")?;
        let etag = header(&response, "etag")?;
        let answer = response.text().await?;
        publisher.set_answer(answer.clone()).await?;
        publisher.connected(PATIENCE).await?;
        publisher.start_media().await?;
        Ok(Published {
            publisher,
            location,
            etag,
            answer,
        })
    }

    /// DELETE on a session URL (relative Location).
    pub async fn delete(&self, location: &str) -> Result<reqwest::StatusCode> {
        Ok(self.http.delete(self.url(location)).send().await?.status())
    }

    /// The live session of an ingest, if any.
    pub async fn session(&mut self, ingest_id: &str) -> Result<Option<pb::Session>> {
        let ingest = self
            .grpc
            .get_ingest(pb::GetIngestRequest {
                ingest_id: ingest_id.to_owned(),
            })
            .await?
            .into_inner()
            .ingest
            .context("no ingest")?;
        Ok(ingest.session)
    }

    /// Waits until no session is left anywhere: registry, media routes.
    pub async fn all_clean(&self) -> Result<()> {
        let (registry, media) = (self.registry.clone(), self.media.clone());
        eventually(PATIENCE, "registry and media routes to be empty", || {
            let (registry, media) = (registry.clone(), media.clone());
            async move { (registry.live_count() == 0 && media.routes() == 0).then_some(()) }
        })
        .await
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A successful publish.
pub struct Published {
    pub publisher: Publisher,
    pub location: String,
    pub etag: String,
    pub answer: String,
}

pub fn header(response: &reqwest::Response, name: &str) -> Result<String> {
    Ok(response
        .headers()
        .get(name)
        .with_context(|| format!("missing {name} header"))?
        .to_str()?
        .to_owned())
}

/// A UDP port standing in for FFmpeg: receives forwarded RTP.
pub struct UdpSink {
    pub addr: SocketAddr,
    socket: UdpSocket,
}

/// The fields of a received RTP header the tests look at.
#[derive(Debug, Clone)]
pub struct RtpSeen {
    pub payload_type: u8,
    pub ssrc: u32,
    pub sequence: u16,
    /// The first bytes of the payload.
    pub payload: Vec<u8>,
}

impl UdpSink {
    pub async fn bind() -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        Ok(UdpSink {
            addr: socket.local_addr()?,
            socket,
        })
    }

    /// Next RTP packet, or an error after `patience`.
    pub async fn recv_rtp(&self, patience: Duration) -> Result<RtpSeen> {
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(patience, self.socket.recv_from(&mut buf))
            .await
            .context("no RTP arrived at the sink")??;
        if n < 13 || buf[0] >> 6 != 2 {
            bail!("not an RTP packet ({n} bytes)");
        }
        let cc = usize::from(buf[0] & 0x0f);
        let mut offset = 12 + 4 * cc;
        if buf[0] & 0x10 != 0 {
            let words = usize::from(u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]));
            offset += 4 + 4 * words;
        }
        Ok(RtpSeen {
            payload_type: buf[1] & 0x7f,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: buf
                .get(offset..n.min(offset + 16))
                .unwrap_or_default()
                .to_vec(),
        })
    }

    /// Receives `n` packets.
    pub async fn recv_n(&self, n: usize, patience: Duration) -> Result<Vec<RtpSeen>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.recv_rtp(patience).await?);
        }
        Ok(out)
    }

    /// Drops whatever is queued; returns how many packets that was.
    pub fn drain(&self) -> usize {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while self.socket.try_recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// Polls `check` until it returns `Some`, for at most `patience`.
pub async fn eventually<T, F, Fut>(patience: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs to the test output when RUST_LOG is set.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
