//! `whipgate ctl`: the operator's shell client for the control plane (like `lk ingress`), so
//! nobody needs grpcurl or the proto files. Human output by default, `--json` for scripts (the
//! JSON of [`whipgate_proto::json`], the same as `GET /events`).

mod print;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use whipgate_proto::json;
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

/// `whipgate ctl`: talk to a running gateway's control plane.
#[derive(Debug, Parser)]
#[command(name = "whipgate ctl", about = "Control a running whipgate over gRPC")]
pub struct Ctl {
    /// The gateway's gRPC address: host:port or http://host:port (plaintext), or
    /// https://host:port (TLS).
    #[arg(
        long,
        env = "WHIPGATE_CTL_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    addr: String,
    /// PEM CA certificate(s) to trust for an https:// --addr (a private CA or a self-signed
    /// certificate) [default: the system's roots].
    #[arg(long, env = "WHIPGATE_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// A file holding the API key (else WHIPGATE_API_KEY).
    #[arg(long, global = true)]
    api_key_file: Option<PathBuf>,
    /// Machine-readable output: one JSON document (one per line for `watch`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register (or idempotently confirm) an ingest.
    Register(Register),
    /// Show one ingest and its live session.
    Get { ingest_id: String },
    /// List every ingest.
    List,
    /// Remove an ingest (closes its live publisher).
    Unregister { ingest_id: String },
    /// Close an ingest's live publisher; the registration stays.
    Teardown {
        ingest_id: String,
        /// Why (in the session-ended event).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Ask the live publisher for a keyframe.
    Keyframe { ingest_id: String },
    /// Choose the forwarded simulcast layer (empty RID: the highest bitrate).
    Layer {
        ingest_id: String,
        #[arg(default_value = "")]
        rid: String,
    },
    /// Show or change caps.
    Caps {
        #[command(subcommand)]
        command: CapsCommand,
    },
    /// Stream events as they happen.
    Watch(Watch),
    /// List the gateway nodes.
    Nodes,
}

#[derive(Debug, Subcommand)]
enum CapsCommand {
    /// Global caps and the live publisher count.
    Get,
    /// Change the global cap and/or one ingest's limits.
    Set {
        /// Maximum live publishers on the node.
        #[arg(long)]
        max_publishers: Option<u32>,
        /// The ingest whose limits to set (replaces them).
        #[arg(long)]
        ingest: Option<String>,
        /// Per-ingest bitrate cap in bit/s (0: none).
        #[arg(long, default_value_t = 0, requires = "ingest")]
        max_bitrate_bps: u64,
        /// Per-ingest session duration cap in seconds (0: none).
        #[arg(long, default_value_t = 0, requires = "ingest")]
        max_session_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Codec {
    H264,
    Vp8,
    Vp9,
    Av1,
    H265,
}

#[derive(Debug, Args)]
struct Register {
    ingest_id: String,
    /// host:port for video RTP (RTCP to port + 1).
    #[arg(long)]
    video: Option<String>,
    /// host:port for audio RTP (RTCP to port + 1).
    #[arg(long)]
    audio: Option<String>,
    /// Bearer token WHIP publishers must send.
    #[arg(long)]
    token: Option<String>,
    /// Accepted video codec, in order of preference (repeat; default: h264).
    #[arg(long = "codec", value_enum)]
    codecs: Vec<Codec>,
    /// A label key=value (repeat).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Replace an existing, different ingest.
    #[arg(long)]
    replace: bool,
    /// A new publisher replaces the live one instead of getting 409.
    #[arg(long)]
    takeover: bool,
    /// Bitrate cap in bit/s.
    #[arg(long, default_value_t = 0)]
    max_bitrate_bps: u64,
    /// Session duration cap in seconds.
    #[arg(long, default_value_t = 0)]
    max_session_seconds: u64,
    /// Absolute WHIP URL on another node to redirect publishers to (307).
    #[arg(long)]
    redirect_url: Option<String>,
    /// Simulcast layer (RID) to forward.
    #[arg(long)]
    simulcast_layer: Option<String>,
}

#[derive(Debug, Args)]
struct Watch {
    /// Replay from this sequence number (inclusive), then live.
    #[arg(long, default_value_t = 0)]
    from_seq: u64,
    /// The epoch --from-seq was read in (an event's `epoch`); another run's: refused.
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Only this ingest (repeat).
    #[arg(long = "ingest")]
    ingests: Vec<String>,
    /// Only this kind, e.g. session_stats (repeat).
    #[arg(long = "kind")]
    kinds: Vec<String>,
}

/// What `whipgate ctl` refuses before it calls the gateway (clap prints it with the flag).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A `--label` that is not `key=value`.
    #[error("expected key=value, got {0:?}")]
    Label(String),
}

fn parse_label(s: &str) -> Result<(String, String), CtlError> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| CtlError::Label(s.to_owned()))
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
struct ApiKey(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = IngestControlClient<InterceptedService<Channel, ApiKey>>;

fn api_key(file: Option<&PathBuf>) -> Result<Option<String>> {
    let key = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the API key from {}", path.display()))?,
        ),
        None => std::env::var("WHIPGATE_API_KEY").ok(),
    };
    Ok(key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()))
}

async fn connect(ctl: &Ctl) -> Result<Client> {
    let key = api_key(ctl.api_key_file.as_ref())?
        .map(|k| MetadataValue::try_from(format!("Bearer {k}")))
        .transpose()
        .context("the API key must be printable ASCII")?;
    let addr = endpoint_url(&ctl.addr);
    let mut endpoint = Endpoint::from_shared(addr.clone())
        .with_context(|| format!("invalid --addr {:?}", ctl.addr))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if addr.starts_with("https://") {
        endpoint = endpoint
            .tls_config(client_tls(ctl.ca_cert.as_deref())?)
            .context("TLS configuration")?;
    } else if ctl.ca_cert.is_some() {
        bail!("--ca-cert needs an https:// --addr");
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", ctl.addr))?;
    Ok(IngestControlClient::with_interceptor(channel, ApiKey(key)))
}

/// `--addr` as a URL: grpcurl-style `host:port` is plaintext HTTP/2 (`http://host:port`).
fn endpoint_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// TLS for an https:// address: the given CA, else the system's roots.
fn client_tls(ca_cert: Option<&std::path::Path>) -> Result<ClientTlsConfig> {
    let tls = ClientTlsConfig::new();
    Ok(match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA certificate {}", path.display()))?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    })
}

/// Runs `whipgate ctl` with `args` (the words after `ctl`); returns the process exit code
/// (0 ok, 1 the gateway refused or could not be reached, 2 usage).
pub async fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    match run(args).await {
        Ok(()) => 0,
        Err(err) => {
            match err.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!(
                    "whipgate ctl: {}: {}",
                    whipgate_proto::code_name(status.code()),
                    status.message()
                ),
                None => eprintln!("whipgate ctl: {err:#}"),
            }
            1
        }
    }
}

/// Runs `whipgate ctl` with `args` (the words after `ctl`).
pub async fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<()> {
    let ctl = Ctl::parse_from(std::iter::once("whipgate ctl".into()).chain(args));
    let mut client = connect(&ctl).await?;
    let out = print::Out { json: ctl.json };
    match ctl.command {
        Command::Register(r) => {
            let response = client
                .register_ingest(register_request(r))
                .await?
                .into_inner();
            let ingest = response.ingest.context("no ingest in the response")?;
            out.ingest(&ingest, Some(response.created));
        }
        Command::Get { ingest_id } => {
            let response = client
                .get_ingest(pb::GetIngestRequest { ingest_id })
                .await?
                .into_inner();
            out.ingest(&response.ingest.context("no ingest in the response")?, None);
        }
        Command::List => {
            let response = client
                .list_ingests(pb::ListIngestsRequest::default())
                .await?;
            out.ingests(&response.into_inner().ingests);
        }
        Command::Unregister { ingest_id } => {
            let r = client
                .unregister_ingest(pb::UnregisterIngestRequest { ingest_id })
                .await?;
            out.flag("session_closed", r.into_inner().session_closed);
        }
        Command::Teardown { ingest_id, reason } => {
            let r = client
                .teardown_stream(pb::TeardownStreamRequest { ingest_id, reason })
                .await?;
            out.flag("session_closed", r.into_inner().session_closed);
        }
        Command::Keyframe { ingest_id } => {
            client
                .request_keyframe(pb::RequestKeyframeRequest { ingest_id })
                .await?;
            out.flag("requested", true);
        }
        Command::Layer { ingest_id, rid } => {
            let r = client
                .select_simulcast_layer(pb::SelectSimulcastLayerRequest { ingest_id, rid })
                .await?;
            out.flag("session_live", r.into_inner().session_live);
        }
        Command::Caps { command } => caps(&mut client, command, out).await?,
        Command::Watch(w) => watch(&mut client, w, out).await?,
        Command::Nodes => {
            let r = client.list_nodes(pb::ListNodesRequest {}).await?;
            out.nodes(&r.into_inner().nodes);
        }
    }
    Ok(())
}

fn register_request(r: Register) -> pb::RegisterIngestRequest {
    let codec = |c: Codec| {
        (match c {
            Codec::H264 => pb::VideoCodec::H264,
            Codec::Vp8 => pb::VideoCodec::Vp8,
            Codec::Vp9 => pb::VideoCodec::Vp9,
            Codec::Av1 => pb::VideoCodec::Av1,
            Codec::H265 => pb::VideoCodec::H265,
        }) as i32
    };
    let limited = r.max_bitrate_bps > 0 || r.max_session_seconds > 0;
    pb::RegisterIngestRequest {
        ingest_id: r.ingest_id,
        video_target: r.video.unwrap_or_default(),
        audio_target: r.audio.unwrap_or_default(),
        bearer_token: r.token.unwrap_or_default(),
        labels: r.labels.into_iter().collect::<HashMap<_, _>>(),
        video_codecs: r.codecs.into_iter().map(codec).collect(),
        audio_codecs: Vec::new(),
        replace: r.replace,
        limits: limited.then_some(pb::IngestLimits {
            max_bitrate_bps: r.max_bitrate_bps,
            max_session_seconds: r.max_session_seconds,
        }),
        redirect_url: r.redirect_url.unwrap_or_default(),
        simulcast_layer: r.simulcast_layer.unwrap_or_default(),
        conflict_policy: if r.takeover {
            pb::ConflictPolicy::Replace
        } else {
            pb::ConflictPolicy::Reject
        } as i32,
    }
}

async fn caps(client: &mut Client, command: CapsCommand, out: print::Out) -> Result<()> {
    let (caps, live) = match command {
        CapsCommand::Get => {
            let r = client.get_caps(pb::GetCapsRequest {}).await?.into_inner();
            (r.caps, r.live_publishers)
        }
        CapsCommand::Set {
            max_publishers,
            ingest,
            max_bitrate_bps,
            max_session_seconds,
        } => {
            if max_publishers.is_none() && ingest.is_none() {
                bail!("caps set needs --max-publishers and/or --ingest with limits");
            }
            let request = pb::SetCapsRequest {
                max_publishers,
                limits: ingest.as_ref().map(|_| pb::IngestLimits {
                    max_bitrate_bps,
                    max_session_seconds,
                }),
                ingest_id: ingest.unwrap_or_default(),
            };
            let r = client.set_caps(request).await?.into_inner();
            (r.caps, r.live_publishers)
        }
    };
    out.caps(caps.as_ref(), live);
    Ok(())
}

async fn watch(client: &mut Client, w: Watch, out: print::Out) -> Result<()> {
    let kinds = w
        .kinds
        .iter()
        .map(|k| {
            json::event_kind_from_name(k)
                .map(|k| k as i32)
                .with_context(|| format!("unknown event kind {k:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let request = pb::WatchEventsRequest {
        ingest_ids: w.ingests,
        kinds,
        from_seq: w.from_seq,
        epoch: w.epoch,
    };
    let mut stream = client.watch_events(request).await?.into_inner();
    while let Some(event) = stream.next().await {
        out.event(&event?);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
