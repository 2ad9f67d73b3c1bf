//! Persistence across kill -9: the real `whipgate` binary as a child process on a temporary
//! data dir, killed with SIGKILL and started again on the same dir. Registrations, tokens,
//! caps, limits and layer choices come back; a consumer that kept running sees the same SSRC
//! and sequence numbers that never go backwards once the publisher reconnects; a watcher
//! resuming from the old run is told so.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;
use whipgate_media::continuity::{RESTORE_WINDOW, restart_margin};
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

use crate::harness::{PATIENCE, RtpSeen, UdpSink, header};
use crate::publisher::{Publisher, Video};

const TOKEN: &str = "restart-token";

/// Kills (SIGKILL, by PID) and reaps its child on drop, whatever happens.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `whipgate` child process and clients for it.
struct Child9 {
    process: KillOnDrop,
    http: SocketAddr,
    grpc: IngestControlClient<Channel>,
}

impl Child9 {
    async fn start(data_dir: &Path, log: &Path) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_whipgate"))
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--grpc-listen", "127.0.0.1:0"])
            .args(["--udp-listen", "127.0.0.1:0"])
            .args(["--tcp-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("spawning whipgate")?;
        let stdout = child.stdout.take().context("no stdout")?;
        // From here on the guard owns the child: an early return kills it.
        let process = KillOnDrop(child);
        let line = tokio::time::timeout(
            PATIENCE,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .context("whipgate printed no bound addresses")???;
        let bound: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("bound-address line {line:?}; log: {}", tail(log)))?;
        let addr = |key: &str| -> Result<SocketAddr> {
            Ok(bound[key].as_str().context("address missing")?.parse()?)
        };
        let channel = Channel::from_shared(format!("http://{}", addr("grpc")?))?
            .connect()
            .await
            .context("connecting gRPC")?;
        Ok(Child9 {
            process,
            http: addr("http")?,
            grpc: IngestControlClient::new(channel),
        })
    }

    fn kill9(&mut self) -> Result<()> {
        // std's Child::kill sends SIGKILL to this PID.
        self.process.0.kill()?;
        self.process.0.wait()?;
        Ok(())
    }

    async fn post(&self, offer: &str, token: Option<&str>) -> Result<reqwest::Response> {
        let mut request = reqwest::Client::new()
            .post(format!("http://{}/whip/cam", self.http))
            .header("content-type", "application/sdp")
            .body(offer.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Ok(request.send().await?)
    }

    /// Publishes H264 with a real WebRTC client and the token; media flowing.
    async fn publish(&self) -> Result<Publisher> {
        let (mut publisher, offer) = Publisher::new(Some(Video::H264), false).await?;
        let response = self.post(&offer, Some(TOKEN)).await?;
        if response.status() != 201 {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        header(&response, "location")?;
        publisher.set_answer(response.text().await?).await?;
        publisher.connected(PATIENCE).await?;
        publisher.start_media().await?;
        Ok(publisher)
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(2000);
    text.get(start..).unwrap_or_default().to_owned()
}

/// Receives until `span` of forwarded media has been seen.
pub(crate) async fn receive_for(sink: &UdpSink, span: Duration) -> Result<Vec<RtpSeen>> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < span {
        seen.push(sink.recv_rtp(PATIENCE).await?);
    }
    Ok(seen)
}

/// The newest sequence number of a run of packets (modulo 2^16).
pub(crate) fn newest(packets: &[RtpSeen]) -> Option<u16> {
    packets.iter().map(|p| p.sequence).reduce(|a, b| {
        if (1..0x8000).contains(&b.wrapping_sub(a)) {
            b
        } else {
            a
        }
    })
}

#[tokio::test]
async fn registrations_and_stream_continuity_survive_kill_9() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let data_dir = scratch.path().join("data");
    let sink = UdpSink::bind().await?;

    // Run 1: register with a token, caps, limits and a layer choice; publish.
    let mut first = Child9::start(&data_dir, &scratch.path().join("run1.log")).await?;
    let mut grpc = first.grpc.clone();
    grpc.register_ingest(pb::RegisterIngestRequest {
        ingest_id: "cam".into(),
        video_target: sink.addr.to_string(),
        bearer_token: TOKEN.into(),
        labels: [("room".to_owned(), "42".to_owned())].into(),
        ..Default::default()
    })
    .await?;
    grpc.set_caps(pb::SetCapsRequest {
        max_publishers: Some(7),
        ingest_id: "cam".into(),
        limits: Some(pb::IngestLimits {
            max_bitrate_bps: 50_000_000,
            max_session_seconds: 0,
        }),
    })
    .await?;
    grpc.select_simulcast_layer(pb::SelectSimulcastLayerRequest {
        ingest_id: "cam".into(),
        rid: "h".into(),
    })
    .await?;
    let mut watch = grpc
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    let publisher = first.publish().await?;
    let event = tokio::time::timeout(PATIENCE, watch.message())
        .await?
        .context("watching")?
        .context("an event of run 1")?;
    // Long enough for two checkpoints with traffic (the packet rate is measured between them).
    let before = receive_for(&sink, Duration::from_millis(2500)).await?;
    let ssrc = before.last().context("media before the kill")?.ssrc;

    first.kill9()?;
    drop(publisher);
    // The token is nowhere on disk (only its salted hash), and the files are private.
    let store_file = data_dir.join("whipgate.redb");
    let bytes = std::fs::read(&store_file)?;
    assert!(
        !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the bearer token is stored in clear"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
        assert_eq!(mode(&data_dir)?, 0o700, "data dir");
        assert_eq!(mode(&store_file)?, 0o600, "store file");
    }
    let mut last_seen = before;
    while let Ok(p) = sink.recv_rtp(Duration::from_millis(200)).await {
        last_seen.push(p);
    }
    let last_seq = newest(&last_seen).context("packets")?;

    // Run 2 on the same data dir.
    let second = Child9::start(&data_dir, &scratch.path().join("run2.log")).await?;
    let mut grpc = second.grpc.clone();
    let ingest = grpc
        .get_ingest(pb::GetIngestRequest {
            ingest_id: "cam".into(),
        })
        .await?
        .into_inner()
        .ingest
        .context("the ingest survived")?;
    assert!(ingest.has_bearer_token);
    assert_eq!(ingest.labels.get("room").map(String::as_str), Some("42"));
    assert_eq!(ingest.video_target, sink.addr.to_string());
    assert_eq!(ingest.simulcast_layer, "h");
    assert_eq!(ingest.limits.map(|l| l.max_bitrate_bps), Some(50_000_000));
    assert!(ingest.session.is_none(), "no session survives a restart");
    let caps = grpc.get_caps(pb::GetCapsRequest {}).await?.into_inner();
    assert_eq!(caps.caps.map(|c| c.max_publishers), Some(7));

    // The old token is still required.
    let (_, offer) = Publisher::new(Some(Video::H264), false).await?;
    assert_eq!(second.post(&offer, None).await?.status(), 401);
    assert_eq!(second.post(&offer, Some("wrong")).await?.status(), 401);

    // The publisher reconnects; the consumer's stream continues.
    let _publisher = second.publish().await?;
    let after = sink.recv_n(5, PATIENCE).await?;
    assert!(after.iter().all(|p| p.ssrc == ssrc), "same output SSRC");
    let first_new = after[0].sequence;
    let jump = first_new.wrapping_sub(last_seq);
    // The synthetic publisher sends ~30 video packets/s; twice that bounds the rate measured.
    let bound = restart_margin(60.0, RESTORE_WINDOW) + 1;
    assert!(
        (1..=bound).contains(&jump),
        "sequence numbers continue forward by at most the margin: last {last_seq}, \
         then {first_new} (jump {jump}, bound {bound})"
    );

    // A watcher resuming with a seq of run 1 gets a clear status.
    let stale = grpc
        .watch_events(pb::WatchEventsRequest {
            from_seq: event.seq,
            ..Default::default()
        })
        .await
        .err()
        .context("an old-run from_seq is refused")?;
    assert_eq!(stale.code(), tonic::Code::OutOfRange, "{stale:?}");
    assert!(
        stale.message().contains("oldest held"),
        "{}",
        stale.message()
    );
    let other_epoch = grpc
        .watch_events(pb::WatchEventsRequest {
            from_seq: event.seq,
            epoch: event.epoch,
            ..Default::default()
        })
        .await
        .err()
        .context("another epoch is refused")?;
    assert_eq!(other_epoch.code(), tonic::Code::FailedPrecondition);
    assert!(
        other_epoch
            .message()
            .contains(&format!("epoch {}", event.epoch + 1)),
        "{}",
        other_epoch.message()
    );
    Ok(())
}
