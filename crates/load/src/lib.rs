//! `whipgate-load`: the load generator operators run to size a machine ("how many publishers
//! does this box take?"). It drives N WHIP publishers from a few worker tasks, each publisher a
//! WebRTC client (offer from a sans-IO `rtc` peer connection; ICE, DTLS and SRTP from webrtc-rs's
//! crates) on its own UDP socket sending pre-built H264 or VP8 frames and 50 pps Opus-like audio; optionally registers the ingests itself over gRPC and measures what
//! arrives at its built-in UDP sink (loss per SSRC, latency, keyframes).
//!
//! | module | owns |
//! |---|---|
//! | [`engine`] | a batch of publishers: POSTs with bounded concurrency and ramp, workers, teardown |
//! | `worker` | the loop that services a share of the publishers |
//! | `offer` | a publisher's offer, from an `rtc` peer connection |
//! | `publisher` | one publisher's peer connection, pacer and packetizer |
//! | `lean` | ICE, DTLS and SRTP of a publisher without the peer connection's pipeline |
//! | `outbox` | a publisher's outgoing datagrams: `sendmmsg` batches on a connected socket |
//! | `gso` | segmented sends (`--gso`) |
//! | [`payload`] | pre-built H264 / VP8 / Opus payloads and the latency stamp |
//! | [`sink`] | the UDP sink (RFC 3550 loss, latency, keyframes) |
//! | [`relay`] | a bare UDP relay, the floor the benchmark compares whipgate with |
//! | [`soak`] | publish/DELETE and publish/vanish cycles while sampling the gateway process |
//! | [`stats`] | histogram and `/proc` readers |

pub mod engine;
mod gso;
mod lean;
mod offer;
mod outbox;
pub mod payload;
mod publisher;
pub mod relay;
pub mod sink;
pub mod soak;
pub mod stats;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

pub use engine::{Engine, Report, run};

/// The video codec the publishers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    Vp8,
}

impl From<VideoCodec> for whipgate_media::codec::VideoCodec {
    fn from(codec: VideoCodec) -> Self {
        match codec {
            VideoCodec::H264 => Self::H264,
            VideoCodec::Vp8 => Self::Vp8,
        }
    }
}

/// Everything a load run is told on the command line.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadConfig {
    /// WHIP base URL; publisher i posts to `{url}/{prefix}{i}`.
    #[arg(long, default_value = "http://127.0.0.1:8080/whip")]
    pub url: String,
    /// Number of publishers.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub publishers: u32,
    /// Ingest id prefix.
    #[arg(long, default_value = "load-")]
    pub prefix: String,
    /// Video codec.
    #[arg(long, value_enum, default_value_t = VideoCodec::H264)]
    pub codec: VideoCodec,
    /// Video bitrate per publisher, bits per second.
    #[arg(long, default_value_t = 1_000_000)]
    pub bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Largest RTP payload, bytes (H264 slices are FU-A fragmented to it).
    #[arg(long, default_value_t = 1200)]
    pub payload_size: usize,
    /// Seconds between keyframes.
    #[arg(long, default_value_t = 2.0)]
    pub keyframe_interval: f64,
    /// Send no audio (default: 50 packets/s of Opus-like audio per publisher).
    #[arg(long)]
    pub no_audio: bool,
    /// POSTs in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// New publishers per second (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Bearer token for the WHIP requests (and the ingests registered with `--grpc`).
    #[arg(long, env = "WHIPGATE_LOAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds of media once every publisher has been set up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Register the ingests first, via `whipgate.v1.IngestControl/RegisterIngest` at this
    /// gRPC address (e.g. http://127.0.0.1:50051), pointing at the built-in sink.
    #[arg(long)]
    pub grpc: Option<String>,
    /// PEM CA certificate(s) to trust for https:// URLs (--url, --grpc): a private CA or a
    /// self-signed certificate [default: the system's roots].
    #[arg(long, env = "WHIPGATE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// API key for `--grpc`.
    #[arg(long, env = "WHIPGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Run the built-in UDP sink (implied by `--grpc`) and report loss, latency, keyframes.
    #[arg(long)]
    pub sink: bool,
    /// Fixed sink ports "VIDEO,AUDIO" (default: ephemeral), when the ingests are registered by
    /// someone else.
    #[arg(long, value_delimiter = ',')]
    pub sink_ports: Option<Vec<u16>>,
    /// Local address for the publishers' sockets (media and POSTs) and the sink's.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Spread the publishers over this many consecutive IPv4 addresses from --bind-ip
    /// (publisher i POSTs and sends from --bind-ip + i % N): publishers on distinct hosts, as
    /// the gateway's per-client limits see them. 1: all from --bind-ip.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub spread_ips: u32,
    /// Do not retry a POST answered 429 or 503 (OBS and FFmpeg do not): it is a failure.
    #[arg(long)]
    pub no_retry: bool,
    /// Worker tasks driving the publishers (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// End with no DELETE: publishers just stop sending (the gateway's media timeout ends them).
    #[arg(long)]
    pub vanish: bool,
    /// Send plain RTP (no WHIP, no WebRTC) to "VIDEO_ADDR,AUDIO_ADDR": the input of a bare relay
    /// for the benchmark's floor.
    #[arg(long, value_delimiter = ',')]
    pub plain: Option<Vec<SocketAddr>>,
    /// Also measure this process (the gateway, or a relay) over the same window: CPU, RSS.
    #[arg(long)]
    pub watch_pid: Option<u32>,
    /// Also report the kernel's drops at this UDP socket (the gateway's media port).
    #[arg(long)]
    pub watch_udp: Option<SocketAddr>,
    /// Send a frame's packets in one UDP GSO send where the kernel offers it (default: one
    /// `sendmmsg` per frame, each packet its own datagram, as browsers send them). Lowers the
    /// generator's cost a little, but the gateway then receives frames coalesced by GRO, which
    /// real publishers do not send: off for benchmarks of the gateway.
    #[arg(long)]
    pub gso: bool,
    /// Drive each publisher's media through the `rtc` peer connection's full handler pipeline
    /// (about twice the generator's CPU per packet) instead of the default lean path: the
    /// same ICE, DTLS and SRTP from webrtc-rs's own crates, without the pipeline.
    #[arg(long)]
    pub full_rtc: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            c: LoadConfig,
        }
        Wrap::parse_from(["whipgate-load"]).c
    }
}

impl LoadConfig {
    /// The media each publisher sends.
    pub fn plan(&self) -> MediaPlan {
        MediaPlan {
            codec: self.codec,
            fps: self.fps.clamp(1, 240),
            bitrate: self.bitrate,
            payload_size: self.payload_size.clamp(64, 1400),
            keyframe_interval: self.keyframe_interval.max(0.04),
            audio: !self.no_audio,
            audio_bytes: 80,
        }
    }

    /// The local address of publisher `i` (see `--spread-ips`).
    pub fn publisher_ip(&self, i: u32) -> IpAddr {
        match self.bind_ip {
            IpAddr::V4(v4) if self.spread_ips > 1 => IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(v4).wrapping_add(i % self.spread_ips),
            )),
            ip => ip,
        }
    }

    /// The WHIP endpoint of publisher `i`.
    pub fn endpoint(&self, i: u32) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), self.ingest_id(i))
    }

    /// The bytes of `--ca-cert`, if given.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, LoadError> {
        self.ca_cert
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| LoadError::Other(format!("--ca-cert {}: {e}", path.display())))
            })
            .transpose()
    }

    /// The ingest id of publisher `i`.
    pub fn ingest_id(&self, i: u32) -> String {
        format!("{}{i}", self.prefix)
    }
}

/// What one publisher sends, derived from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct MediaPlan {
    pub codec: VideoCodec,
    pub fps: u32,
    pub bitrate: u64,
    pub payload_size: usize,
    pub keyframe_interval: f64,
    pub audio: bool,
    pub audio_bytes: usize,
}

/// Keyframes are this many times the size of other frames, as from a real encoder.
const KEYFRAME_WEIGHT: u64 = 3;

impl MediaPlan {
    fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }

    fn keyframe_frames(&self) -> u64 {
        ((self.keyframe_interval * f64::from(self.fps)).round() as u64).max(1)
    }

    /// Coded bytes of a frame, so that a keyframe interval averages to the bitrate.
    fn frame_bytes(&self, keyframe: bool) -> usize {
        let k = self.keyframe_frames();
        let interval_bytes = self.bitrate / 8 * k / u64::from(self.fps);
        let unit = interval_bytes / (k - 1 + KEYFRAME_WEIGHT);
        let bytes = if keyframe {
            unit * KEYFRAME_WEIGHT
        } else {
            unit
        };
        bytes.max(1) as usize
    }
}

/// A UDP socket with large buffers (what the kernel grants: `net.core.rmem_max` caps it).
pub fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Errors of a load run. A publisher's setup and POST errors print as the report's
/// `POST errors` labels (`timeout`, `503`, `201 without Location`, `answer: ...`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("gRPC: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("gRPC connection: {0}")]
    GrpcTransport(#[from] tonic::transport::Error),
    #[error("WebRTC: {0}")]
    Rtc(#[from] rtc::shared::error::Error),
    #[error("{0}")]
    Other(String),
    /// A publisher's socket could not be opened.
    #[error("socket: {0}")]
    Socket(std::io::ErrorKind),
    /// A publisher's offer could not be made.
    #[error("offer: {0}")]
    Offer(rtc::shared::error::Error),
    /// A POST got no answer: `timeout`, `connect` or `http error`.
    #[error("{0}")]
    Unanswered(&'static str),
    /// The gateway answered a POST with this status instead of 201.
    #[error("{0}")]
    Status(u16),
    /// A 201 without a Location header.
    #[error("201 without Location")]
    NoLocation,
    /// The gateway's answer could not be applied.
    #[error("answer: {0}")]
    Answer(rtc::shared::error::Error),
    /// A POST's task ended without its result.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The lean transport cannot go on: what the SDP lacks, or its DTLS or SRTP setup (the
    /// text says which).
    #[error("{0}")]
    Lean(String),
}

#[cfg(test)]
mod tests;
