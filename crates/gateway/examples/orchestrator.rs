//! A small control-plane client an orchestrator author can copy.
//!
//! Registers an ingest, prints the consumer SDP, watches its events, and (on Ctrl-C, or after
//! `--seconds`) tears the publisher down and unregisters.
//!
//! ```text
//! cargo run --example orchestrator -- --grpc http://127.0.0.1:50051 --ingest cam1 \
//!     --video 127.0.0.1:5004 --audio 127.0.0.1:5006 --sdp cam1.sdp
//! ```

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

#[derive(Parser)]
struct Args {
    /// gRPC address of whipgate.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// Ingest id (the WHIP URL is /whip/<ingest>).
    #[arg(long, default_value = "cam1")]
    ingest: String,
    /// Video RTP target host:port (RTCP goes to port + 1).
    #[arg(long, default_value = "127.0.0.1:5004")]
    video: String,
    /// Audio RTP target host:port.
    #[arg(long, default_value = "127.0.0.1:5006")]
    audio: String,
    /// Only accept H264 (so the consumer SDP is exact for FFmpeg).
    #[arg(long)]
    h264_only: bool,
    /// WHIP bearer token publishers must send.
    #[arg(long)]
    token: Option<String>,
    /// Control-plane API key, if whipgate requires one.
    #[arg(long, env = "WHIPGATE_API_KEY")]
    api_key: Option<String>,
    /// Write the consumer SDP here.
    #[arg(long)]
    sdp: Option<std::path::PathBuf>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.grpc.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.grpc))?;
    // Every RPC carries the API key when one is configured.
    let key: Option<MetadataValue<_>> = match &args.api_key {
        Some(k) => Some(format!("Bearer {k}").parse()?),
        None => None,
    };
    let mut client =
        IngestControlClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(key) = &key {
                req.metadata_mut().insert("authorization", key.clone());
            }
            Ok(req)
        });

    // 1. Register (idempotent: running this twice with the same arguments is fine).
    let registered = client
        .register_ingest(pb::RegisterIngestRequest {
            ingest_id: args.ingest.clone(),
            video_target: args.video.clone(),
            audio_target: args.audio.clone(),
            bearer_token: args.token.clone().unwrap_or_default(),
            video_codecs: if args.h264_only {
                vec![pb::VideoCodec::H264 as i32]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .await?
        .into_inner();
    let ingest = registered.ingest.context("no ingest in the answer")?;
    println!(
        "registered {} (created: {})",
        ingest.ingest_id, registered.created
    );
    println!("publish to: POST /whip/{}", ingest.ingest_id);
    match &args.sdp {
        Some(path) => {
            std::fs::write(path, &ingest.consumer_sdp)?;
            println!("consumer SDP written to {}", path.display());
        }
        None => println!("consumer SDP:\n{}", ingest.consumer_sdp),
    }

    // 2. Watch this ingest's events until asked to stop.
    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            ingest_ids: vec![args.ingest.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let stop = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = events.next() => match event {
                Some(Ok(event)) => print_event(&event),
                Some(Err(status)) => {
                    eprintln!("event stream ended: {status}");
                    break;
                }
                None => break,
            },
        }
    }

    // 3. Tear the publisher down (if any), then unregister.
    let teardown = client
        .teardown_stream(pb::TeardownStreamRequest {
            ingest_id: args.ingest.clone(),
            reason: "orchestrator example stopping".into(),
        })
        .await?
        .into_inner();
    println!("teardown: session closed = {}", teardown.session_closed);
    client
        .unregister_ingest(pb::UnregisterIngestRequest {
            ingest_id: args.ingest,
        })
        .await?;
    println!("unregistered");
    Ok(())
}

fn print_event(event: &pb::Event) {
    use pb::event::Payload;
    let what = match &event.payload {
        Some(Payload::PublishAccepted(p)) => format!("publish accepted from {}", p.remote_addr),
        Some(Payload::PublishRejected(p)) => format!("publish rejected: {}", p.detail),
        Some(Payload::SessionConnected(c)) => format!("connected in {} ms", c.connect_millis),
        Some(Payload::TrackStarted(t)) => format!("track started: {} ssrc {}", t.codec, t.ssrc),
        Some(Payload::SessionStats(s)) => format!("{} kbit/s", s.bitrate_bps / 1000),
        Some(Payload::SessionEnded(e)) => format!(
            "session ended: {:?} ({})",
            pb::EndReason::try_from(e.reason).unwrap_or(pb::EndReason::Unspecified),
            e.detail
        ),
        Some(other) => format!("{other:?}"),
        None => "unknown event".into(),
    };
    println!("#{} {} {}", event.seq, event.ingest_id, what);
}
