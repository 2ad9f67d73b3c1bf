//! Configuration, each setting declared once: one struct whose clap attributes give the flag,
//! the `WHIPGATE_*` environment variable and the default, and whose serde attributes give the
//! TOML key. Sources layer as flags > environment > file (`--config`) > defaults: clap resolves
//! flags, environment and defaults, and a file key replaces a value only where clap reports it
//! came from the default. Adding a setting is one field here.

mod serde_secs;

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use serde_secs::parse_secs;

/// `whipgate`: a WHIP ingest gateway. WebRTC in, plain RTP over UDP out, driven over gRPC.
///
/// Every flag can also be set in the TOML file given with --config (same name, with
/// underscores) and with a WHIPGATE_* environment variable. Flags win over the
/// environment, which wins over the file.
#[derive(Clone, Debug, Parser, Serialize, Deserialize)]
#[command(name = "whipgate", version, about, long_about = None)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TOML configuration file.
    #[arg(long, env = "WHIPGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// WHIP/HTTP listen address.
    #[arg(long, env = "WHIPGATE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,
    /// gRPC control-plane listen address. Loopback by default: binding another address
    /// needs an API key (or --insecure-control).
    #[arg(long, env = "WHIPGATE_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// WebRTC media UDP address, one port shared by all sessions.
    #[arg(long, env = "WHIPGATE_UDP_LISTEN", default_value = "0.0.0.0:8189")]
    pub udp_listen: SocketAddr,
    /// ICE-TCP (passive) listen address, for publishers whose networks block UDP;
    /// `None` (with --ice-tcp false): off.
    #[arg(long, env = "WHIPGATE_TCP_LISTEN", default_value = "0.0.0.0:8189")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<SocketAddr>,
    /// Offer ICE-TCP candidates at all.
    #[arg(long, env = "WHIPGATE_ICE_TCP", default_value_t = true, action = ArgAction::Set)]
    pub ice_tcp: bool,
    /// Address to advertise in ICE candidates (NAT 1:1); repeat or comma-separate for several.
    #[arg(long, env = "WHIPGATE_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<IpAddr>,
    /// With a wildcard media address and no --public-ip: advertise only these interfaces'
    /// addresses (comma-separated names, e.g. eth0) [default: all].
    #[arg(long, env = "WHIPGATE_INTERFACES", value_delimiter = ',')]
    pub interfaces: Vec<String>,
    /// Maximum live publishers across all ingests (2 cores forward 500 with room to spare:
    /// see the README's benchmark).
    #[arg(long, env = "WHIPGATE_MAX_PUBLISHERS", default_value_t = 256)]
    pub max_publishers: usize,
    /// CORS allowed origins, comma-separated; "*" for any.
    #[arg(
        long,
        env = "WHIPGATE_CORS_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origins: Vec<String>,
    /// Origins allowed to read the dashboard's API (/api/ingests, /events, /events/token)
    /// from their pages, comma-separated; none by default (same-origin only); "*" is refused.
    #[arg(long, env = "WHIPGATE_API_CORS_ORIGINS", value_delimiter = ',')]
    pub api_cors_origins: Vec<String>,
    /// Serve the dashboard's data to anyone, without a credential, redacted (no RTP targets,
    /// consumer SDPs, publisher addresses, session ids); the API key still reads everything.
    #[arg(long, env = "WHIPGATE_PUBLIC_DASHBOARD")]
    pub public_dashboard: bool,
    /// Largest accepted SDP offer in bytes.
    #[arg(long, env = "WHIPGATE_MAX_SDP_BYTES", default_value_t = 64 * 1024)]
    pub max_sdp_bytes: usize,
    /// Close a publisher that sends no media for this many seconds.
    #[arg(id = "media_timeout_secs", long = "media-timeout-secs", env = "WHIPGATE_MEDIA_TIMEOUT_SECS", default_value = "10", value_parser = parse_secs)]
    #[serde(rename = "media_timeout_secs", with = "serde_secs")]
    pub media_timeout: Duration,
    /// Close a session not connected (ICE + DTLS) after this many seconds.
    #[arg(id = "connect_timeout_secs", long = "connect-timeout-secs", env = "WHIPGATE_CONNECT_TIMEOUT_SECS", default_value = "30", value_parser = parse_secs)]
    #[serde(rename = "connect_timeout_secs", with = "serde_secs")]
    pub connect_timeout: Duration,
    /// Answer deadline in seconds, ICE gathering included; 504 after it.
    #[arg(id = "answer_timeout_secs", long = "answer-timeout-secs", env = "WHIPGATE_ANSWER_TIMEOUT_SECS", default_value = "5", value_parser = parse_secs)]
    #[serde(rename = "answer_timeout_secs", with = "serde_secs")]
    pub answer_timeout: Duration,
    /// Seconds between session-stats events.
    #[arg(id = "stats_interval_secs", long = "stats-interval-secs", env = "WHIPGATE_STATS_INTERVAL_SECS", default_value = "5", value_parser = parse_secs)]
    #[serde(rename = "stats_interval_secs", with = "serde_secs")]
    pub stats_interval: Duration,
    /// Events kept in memory for WatchEvents resume.
    #[arg(long, env = "WHIPGATE_EVENT_HISTORY", default_value_t = 4096)]
    pub event_history: usize,
    /// API key required on control RPCs and reflection as "authorization: Bearer <key>".
    /// Prefer --api-key-file or the environment: a flag shows in the process list.
    #[arg(long, env = "WHIPGATE_API_KEY", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// File holding the API key (surrounding whitespace ignored).
    #[arg(long, env = "WHIPGATE_API_KEY_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// JWKS file (RFC 7517) of the keys publish tokens are signed with (`oct`: HS256, `EC`
    /// P-256: ES256, `OKP` Ed25519: EdDSA; `kid` picks the key). A publisher's bearer may then
    /// be a signed token (`sub`: the ingest, `scope`: publish, `exp`), and an ingest registered
    /// without a static token needs one. SIGHUP re-reads the file.
    #[arg(long, env = "WHIPGATE_TOKEN_KEYS_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_keys_file: Option<PathBuf>,
    /// The audience signed tokens must name in `aud` when they carry one.
    #[arg(long, env = "WHIPGATE_TOKEN_AUDIENCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_audience: Option<String>,
    /// Allow a non-loopback gRPC address without an API key (anyone reaching it controls
    /// routing: only behind a trusted network boundary).
    #[arg(long, env = "WHIPGATE_INSECURE_CONTROL")]
    pub insecure_control: bool,
    /// Serve /metrics on this address instead of the HTTP listener.
    #[arg(long, env = "WHIPGATE_METRICS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Label per-ingest metrics with the ingest id (unbounded label set: opt in).
    #[arg(long, env = "WHIPGATE_METRICS_INGEST_LABEL", default_value_t = false, action = ArgAction::Set)]
    pub metrics_ingest_label: bool,
    /// Seconds shutdown waits for sessions to close (after the drain window).
    #[arg(id = "shutdown_grace_secs", long = "shutdown-grace-secs", env = "WHIPGATE_SHUTDOWN_GRACE_SECS", default_value = "10", value_parser = parse_secs)]
    #[serde(rename = "shutdown_grace_secs", with = "serde_secs")]
    pub shutdown_grace: Duration,
    /// Pre-drain window in seconds on SIGTERM: health reports 503 / NOT_SERVING and new
    /// publishes get 503 while live sessions keep forwarding; then sessions end.
    #[arg(id = "drain_secs", long = "drain-secs", env = "WHIPGATE_DRAIN_SECS", default_value = "5", value_parser = parse_secs)]
    #[serde(rename = "drain_secs", with = "serde_secs")]
    pub drain: Duration,
    /// STUN server URI offered to publishers (repeatable); TURN servers with credentials go
    /// in the file as [[ice_servers]] url, username, credential.
    #[arg(
        long = "ice-server",
        env = "WHIPGATE_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Vec<IceServer>,
    /// Directory of the embedded store (registrations, tokens, caps, stream continuity),
    /// created if missing; `None` (embedders, tests): in memory only.
    #[arg(long, env = "WHIPGATE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Kernel receive and send buffer of the media socket in bytes (0: the kernel default).
    #[arg(long, env = "WHIPGATE_MEDIA_SOCKET_BUFFER", default_value_t = 8 * 1024 * 1024)]
    pub media_socket_buffer: usize,
    /// Media workers, each with its own socket on the media port and its own sessions
    /// (0: one per CPU core); as many setup and negotiation threads are started.
    #[arg(long, env = "WHIPGATE_MEDIA_WORKERS", default_value_t = 0)]
    pub media_workers: usize,
    /// Cluster mode: the shared Redis, `redis://[user:password@]host:port/db` (`rediss://`:
    /// TLS) or `redis[s]+sentinel://[user:password@]host:port,host:port/<master>/db`; unset:
    /// single node.
    #[arg(long, env = "WHIPGATE_CLUSTER_REDIS", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_redis: Option<String>,
    /// File holding the cluster secret (at least 32 bytes, surrounding whitespace ignored),
    /// the same on every node: routed calls, registrations, leases and node records in Redis
    /// are authenticated with keys derived from it. Required in cluster mode.
    #[arg(long, env = "WHIPGATE_CLUSTER_SECRET_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Cluster mode without --cluster-secret-file: anyone who can write to Redis can drive
    /// every node, redirect media and take over publishers (only for a throwaway test setup).
    #[arg(long, env = "WHIPGATE_INSECURE_CLUSTER")]
    pub insecure_cluster: bool,
    /// CA certificates (PEM) a `rediss://` cluster Redis's certificate must chain to
    /// [default: the system's roots].
    #[arg(long, env = "WHIPGATE_CLUSTER_REDIS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_redis_ca: Option<PathBuf>,
    /// This node's id in the cluster [default: <hostname>-<http port>].
    #[arg(long, env = "WHIPGATE_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Base URL at which publishers reach this node's WHIP edge, e.g. http://10.0.0.5:8080
    /// (used in 307s and Location) [default: http://<hostname>:<http port>].
    #[arg(long, env = "WHIPGATE_ADVERTISE_URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// Cluster mode: a full or draining node answers a POST with 307 to a node with room
    /// (OBS and browsers follow it, re-sending the token to that node's advertise URL)
    /// instead of handing the offer to that node itself and answering in its name (the
    /// default: no client has to follow a redirect).
    #[arg(long, env = "WHIPGATE_CLUSTER_REDIRECT_PUBLISH")]
    pub cluster_redirect_publish: bool,
    /// Publisher lease and node heartbeat time to live in cluster mode, in seconds.
    #[arg(id = "cluster_lease_secs", long = "cluster-lease-secs", env = "WHIPGATE_CLUSTER_LEASE_SECS", default_value = "10", value_parser = parse_secs)]
    #[serde(rename = "cluster_lease_secs", with = "serde_secs")]
    pub cluster_lease: Duration,
    /// WHIP requests (POST, PATCH, DELETE) per second allowed per client IP (IPv6: per /64);
    /// 0 turns rate limiting off. Over it: 429 with Retry-After.
    #[arg(long, env = "WHIPGATE_RATE_LIMIT_PER_SEC", default_value_t = 5.0)]
    pub rate_limit_per_sec: f64,
    /// Burst of WHIP requests a client may make before the rate applies.
    #[arg(long, env = "WHIPGATE_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Seconds a client has to send a request's headers before the connection is closed.
    #[arg(id = "http_header_timeout_secs", long = "http-header-timeout-secs", env = "WHIPGATE_HTTP_HEADER_TIMEOUT_SECS", default_value = "10", value_parser = parse_secs)]
    #[serde(rename = "http_header_timeout_secs", with = "serde_secs")]
    pub http_header_timeout: Duration,
    /// Seconds an HTTP request may take in total (body and answer included); 408 after it.
    #[arg(id = "http_request_timeout_secs", long = "http-request-timeout-secs", env = "WHIPGATE_HTTP_REQUEST_TIMEOUT_SECS", default_value = "30", value_parser = parse_secs)]
    #[serde(rename = "http_request_timeout_secs", with = "serde_secs")]
    pub http_request_timeout: Duration,
    /// Open HTTP connections at most; further connections wait in the kernel's backlog.
    #[arg(long, env = "WHIPGATE_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Open HTTP connections per client (IPv4 address, IPv6 /64) at most; more are closed
    /// at once (plaintext: after a 503). Room for a studio's 50 encoders behind one NAT.
    #[arg(
        long,
        env = "WHIPGATE_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 64
    )]
    pub http_max_connections_per_client: usize,
    /// HTTP requests handled at once at most; more get 503 with Retry-After.
    #[arg(long, env = "WHIPGATE_HTTP_MAX_REQUESTS", default_value_t = 256)]
    pub http_max_requests: usize,
    /// WebRTC negotiations (offer to answer) at once at most; more POSTs wait for a slot
    /// (--negotiation-wait-secs), served in turn by client.
    #[arg(long, env = "WHIPGATE_MAX_NEGOTIATIONS", default_value_t = 16)]
    pub max_negotiations: usize,
    /// Seconds a POST waits for a negotiation slot before a 503 with Retry-After. The wait
    /// comes first; --answer-timeout-secs then bounds the negotiation itself, and the two
    /// together must fit in --http-request-timeout-secs.
    #[arg(id = "negotiation_wait_secs", long = "negotiation-wait-secs", env = "WHIPGATE_NEGOTIATION_WAIT_SECS", default_value = "3", value_parser = parse_secs)]
    #[serde(rename = "negotiation_wait_secs", with = "serde_secs")]
    pub negotiation_wait: Duration,
    /// POSTs waiting for a negotiation slot at most; more get 503 with Retry-After at once.
    #[arg(long, env = "WHIPGATE_NEGOTIATION_QUEUE", default_value_t = 1024)]
    pub negotiation_queue: usize,
    /// POSTs of one client (IPv4 address, IPv6 /64) waiting for a negotiation slot at most.
    #[arg(
        long,
        env = "WHIPGATE_NEGOTIATION_QUEUE_PER_CLIENT",
        default_value_t = 256
    )]
    pub negotiation_queue_per_client: usize,
    /// Open gRPC connections at most (TLS: counted from accept to close); more wait in the
    /// kernel's backlog.
    #[arg(long, env = "WHIPGATE_GRPC_MAX_CONNECTIONS", default_value_t = 256)]
    pub grpc_max_connections: usize,
    /// Open gRPC connections per client (IPv4 address, IPv6 /64) at most; more are closed.
    #[arg(
        long,
        env = "WHIPGATE_GRPC_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 32
    )]
    pub grpc_max_connections_per_client: usize,
    /// Concurrent HTTP/2 streams per gRPC connection.
    #[arg(long, env = "WHIPGATE_GRPC_MAX_STREAMS", default_value_t = 128)]
    pub grpc_max_streams: u32,
    /// Concurrent WatchEvents streams at most; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "WHIPGATE_GRPC_MAX_WATCHERS", default_value_t = 64)]
    pub grpc_max_watchers: usize,
    /// TLS certificate chain (PEM) of the HTTP listener (WHIP, pages, /events, /metrics, the
    /// metrics listener) and, unless --grpc-tls-cert is given, of gRPC. With --tls-key: HTTPS
    /// only. SIGHUP re-reads the files.
    #[arg(long, env = "WHIPGATE_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "WHIPGATE_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// gRPC's own certificate chain (PEM) [default: --tls-cert].
    #[arg(long, env = "WHIPGATE_GRPC_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// gRPC's own private key (PEM) [default: --tls-key].
    #[arg(long, env = "WHIPGATE_GRPC_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_key: Option<PathBuf>,
}

/// The data dir when none is configured: relative to the working directory, so
/// `cargo run --release` on a fresh checkout just works.
pub const DEFAULT_DATA_DIR: &str = "whipgate-data";

/// A STUN or TURN server for publishers (RFC 9725 section 4.6). On the command line a bare
/// URI; in the file a URI string or a table with credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IceServerSpec")]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URI.
    pub url: String,
    /// TURN username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential (password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The shapes an ICE server takes in the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum IceServerSpec {
    Url(String),
    Full {
        url: String,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        credential: Option<String>,
    },
}

impl TryFrom<IceServerSpec> for IceServer {
    type Error = Error;
    fn try_from(spec: IceServerSpec) -> Result<Self, Error> {
        Ok(match spec {
            IceServerSpec::Url(url) => IceServer::from_str(&url)?,
            IceServerSpec::Full {
                url,
                username,
                credential,
            } => IceServer {
                url,
                username,
                credential,
            },
        })
    }
}

impl FromStr for IceServer {
    type Err = Error;
    fn from_str(url: &str) -> Result<Self, Error> {
        Ok(IceServer {
            url: url.to_owned(),
            username: None,
            credential: None,
        })
    }
}

impl IceServer {
    /// The `Link` header value for this server.
    pub fn link_header(&self) -> String {
        let mut link = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(user), Some(credential)) = (&self.username, &self.credential) {
            link.push_str(&format!(
                "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                quote_escape(user),
                quote_escape(credential)
            ));
        }
        link
    }
}

fn quote_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Default for Config {
    /// The defaults declared on the fields (environment ignored).
    fn default() -> Self {
        let matches = Config::command()
            .mut_args(|arg| arg.env(None))
            .get_matches_from(["whipgate"]);
        // The defaults are literals in this file; a test parses them.
        #[allow(clippy::expect_used)]
        Config::from_arg_matches(&matches).expect("the declared defaults parse")
    }
}

impl Config {
    /// A configuration for tests and embedding: every listener on `127.0.0.1:0`, no drain
    /// window, no per-client rate limit and per-client connection caps equal to the totals
    /// (every local client shares one address).
    pub fn loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let defaults = Config::default();
        Config {
            http_listen: any,
            grpc_listen: any,
            udp_listen: any,
            tcp_listen: Some(any),
            data_dir: None,
            drain: Duration::ZERO,
            rate_limit_per_sec: 0.0,
            http_max_connections_per_client: defaults.http_max_connections,
            grpc_max_connections_per_client: defaults.grpc_max_connections,
            ..defaults
        }
    }

    /// Parses `args` (the program name first) and the environment, layers the file named by
    /// `--config` under them, reads `--api-key-file`, and validates.
    pub fn load<I, T>(args: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Config::command()
            .try_get_matches_from(args)
            .map_err(|e| Error::Config(e.to_string()))?;
        Config::from_matches(&matches)
    }

    /// [`Config::load`] from the process's arguments; `--help`, `--version` and usage errors
    /// print clap's text and exit.
    pub fn from_cli() -> Result<Config, Error> {
        Config::from_matches(&Config::command().get_matches())
    }

    fn from_matches(matches: &clap::ArgMatches) -> Result<Config, Error> {
        let mut config =
            Config::from_arg_matches(matches).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(path) = config.config.clone() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
            let file: toml::Table = toml::from_str(&text)
                .map_err(|e| Error::Config(format!("parsing {}: {e}", path.display())))?;
            // Checks names and types (deny_unknown_fields), so every key below is an arg id.
            toml::Value::Table(file.clone())
                .try_into::<Config>()
                .map_err(|e| Error::Config(format!("parsing {}: {e}", path.display())))?;
            let toml::Value::Table(mut merged) =
                toml::Value::try_from(&config).map_err(|e| Error::Config(e.to_string()))?
            else {
                return Err(Error::Config(
                    "configuration does not serialize as a table".into(),
                ));
            };
            for (key, value) in file {
                if matches!(
                    matches.value_source(&key),
                    None | Some(ValueSource::DefaultValue)
                ) {
                    merged.insert(key, value);
                }
            }
            config = toml::Value::Table(merged)
                .try_into::<Config>()
                .map_err(|e| Error::Config(format!("parsing {}: {e}", path.display())))?;
            config.config = Some(path);
        }
        if matches.value_source("api_key") == Some(ValueSource::CommandLine) {
            tracing::warn!(
                "--api-key on the command line is visible in the process list: \
                 use --api-key-file or WHIPGATE_API_KEY"
            );
        }
        config.resolve()?;
        config.validate()?;
        Ok(config)
    }

    /// Derived values: the API key file read, ICE-TCP off when disabled, empty keys dropped.
    fn resolve(&mut self) -> Result<(), Error> {
        if let Some(path) = &self.api_key_file {
            if self.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
                return Err(Error::Config(
                    "give --api-key or --api-key-file, not both".into(),
                ));
            }
            let key = std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("reading the API key file {}: {e}", path.display()))
            })?;
            self.api_key = Some(key.trim().to_owned());
        }
        self.api_key = self.api_key.take().filter(|k| !k.is_empty());
        if !self.ice_tcp {
            self.tcp_listen = None;
        }
        Ok(())
    }

    /// The cluster's keys: derived from `--cluster-secret-file`, or `--insecure-cluster`'s
    /// public ones; an error naming the flag when neither (or both) is given.
    pub fn cluster_trust(&self) -> Result<crate::topology::cluster::trust::Trust, Error> {
        use crate::topology::cluster::trust::{Trust, read_secret_file};
        match (&self.cluster_secret_file, self.insecure_cluster) {
            (Some(_), true) => Err(Error::Config(
                "give --cluster-secret-file or --insecure-cluster, not both".into(),
            )),
            (Some(path), false) => Trust::from_secret(&read_secret_file(path)?),
            (None, true) => Ok(Trust::insecure()),
            (None, false) => Err(Error::Config(
                "cluster mode needs --cluster-secret-file (WHIPGATE_CLUSTER_SECRET_FILE): a \
                 file with the same secret of at least 32 bytes on every node (e.g. `openssl \
                 rand -hex 32`). Without it anyone who can write to Redis drives every node. \
                 --insecure-cluster runs without one, for a throwaway test setup only"
                    .into(),
            )),
        }
    }

    /// The media path's settings (`Media::bind`).
    pub fn media_settings(&self) -> crate::driver::MediaSettings {
        crate::driver::MediaSettings {
            udp_listen: self.udp_listen,
            tcp_listen: self.tcp_listen,
            public_ip: self.public_ip.clone(),
            interfaces: self.interfaces.clone(),
            media_socket_buffer: self.media_socket_buffer,
            media_workers: self.media_workers,
            max_negotiations: self.max_negotiations,
            media_timeout: self.media_timeout,
            connect_timeout: self.connect_timeout,
            answer_timeout: self.answer_timeout,
            stats_interval: self.stats_interval,
        }
    }

    /// The WHIP edge's settings (`WhipState::new`, `whip::router`, `EdgeLimits::new`).
    pub fn whip_settings(&self) -> crate::edge::whip::WhipSettings {
        crate::edge::whip::WhipSettings {
            ice_server_links: self
                .ice_servers
                .iter()
                .map(IceServer::link_header)
                .collect(),
            api_key: self.api_key.clone(),
            public_dashboard: self.public_dashboard,
            cors_origins: self.cors_origins.clone(),
            api_cors_origins: self.api_cors_origins.clone(),
            max_sdp_bytes: self.max_sdp_bytes,
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            http_max_requests: self.http_max_requests,
            http_request_timeout: self.http_request_timeout,
            max_negotiations: self.max_negotiations,
            negotiation_wait: self.negotiation_wait,
            negotiation_queue: self.negotiation_queue,
            negotiation_queue_per_client: self.negotiation_queue_per_client,
        }
    }

    /// The control plane's settings (`ControlService::new`, the gRPC server).
    pub fn control_settings(&self) -> crate::control::ControlSettings {
        crate::control::ControlSettings {
            api_key: self.api_key.clone(),
            max_watchers: self.grpc_max_watchers,
            max_streams: self.grpc_max_streams,
        }
    }

    /// Checks values that parse but cannot work, and refuses an open control plane.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_sdp_bytes < 1024 {
            return Err(Error::Config("max_sdp_bytes must be at least 1024".into()));
        }
        if let Some(url) = &self.cluster_redis {
            crate::topology::cluster::RedisTarget::parse(url)
                .map_err(|e| Error::Config(e.to_string()))?;
            self.cluster_trust()?;
        }
        if let Some(id) = &self.node_id {
            crate::topology::cluster::validate_node_id(id)?;
        }
        if let Some(url) = &self.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "advertise_url {url:?}: expected an http:// or https:// URL"
            )));
        }
        if self.cluster_lease < Duration::from_millis(300) {
            return Err(Error::Config(
                "cluster_lease_secs must be at least 0.3".into(),
            ));
        }
        if self.event_history == 0 {
            return Err(Error::Config("event_history must be at least 1".into()));
        }
        for (name, d) in [
            ("media_timeout", self.media_timeout),
            ("connect_timeout", self.connect_timeout),
            ("answer_timeout", self.answer_timeout),
            ("stats_interval", self.stats_interval),
            ("http_header_timeout", self.http_header_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config(format!("{name} must be greater than zero")));
            }
        }
        if !self.drain.is_zero() && self.drain >= self.shutdown_grace {
            return Err(Error::Config(
                "drain_secs must be shorter than shutdown_grace_secs".into(),
            ));
        }
        if self.http_request_timeout <= self.answer_timeout {
            return Err(Error::Config(
                "http_request_timeout must be longer than answer_timeout".into(),
            ));
        }
        if self.http_request_timeout <= self.answer_timeout + self.negotiation_wait {
            return Err(Error::Config(
                "http_request_timeout must be longer than negotiation_wait and answer_timeout \
                 together"
                    .into(),
            ));
        }
        for (name, n) in [
            ("http_max_connections", self.http_max_connections),
            (
                "http_max_connections_per_client",
                self.http_max_connections_per_client,
            ),
            ("grpc_max_connections", self.grpc_max_connections),
            (
                "grpc_max_connections_per_client",
                self.grpc_max_connections_per_client,
            ),
            ("http_max_requests", self.http_max_requests),
            ("max_negotiations", self.max_negotiations),
            (
                "negotiation_queue_per_client",
                self.negotiation_queue_per_client,
            ),
            ("grpc_max_watchers", self.grpc_max_watchers),
            ("grpc_max_streams", self.grpc_max_streams as usize),
        ] {
            if n == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if !self.rate_limit_per_sec.is_finite()
            || self.rate_limit_per_sec < 0.0
            || (self.rate_limit_per_sec > 0.0 && self.rate_limit_per_sec < 0.01)
        {
            return Err(Error::Config(format!(
                "rate_limit_per_sec {}: expected 0 (off) or a rate of at least 0.01 per second",
                self.rate_limit_per_sec
            )));
        }
        if self.rate_limit_per_sec > 0.0 && self.rate_limit_burst == 0 {
            return Err(Error::Config("rate_limit_burst must be at least 1".into()));
        }
        for server in &self.ice_servers {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| server.url.starts_with(s));
            if !scheme_ok || server.url.contains(['<', '>', '"', '\r', '\n']) {
                return Err(Error::Config(format!(
                    "ice server {:?}: expected a stun:/turn: URI",
                    server.url
                )));
            }
            if server.url.starts_with("turn")
                && (server.username.is_none() || server.credential.is_none())
            {
                return Err(Error::Config(format!(
                    "ice server {:?}: TURN needs username and credential",
                    server.url
                )));
            }
        }
        crate::net::tls::validate_pairs(self)?;
        for origin in &self.api_cors_origins {
            if origin == "*" {
                return Err(Error::Config(
                    "api_cors_origins: \"*\" would let any web page read the \
                            dashboard's data; name the origins (https://ops.example.com)"
                        .into(),
                ));
            }
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || axum::http::HeaderValue::from_str(origin).is_err()
            {
                return Err(Error::Config(format!(
                    "api_cors_origins: {origin:?} is not an origin (scheme://host[:port])"
                )));
            }
        }
        if self.cors_origins.is_empty() {
            return Err(Error::Config(
                "cors_origins must name at least one origin (or \"*\")".into(),
            ));
        }
        if !self.grpc_listen.ip().is_loopback() && self.api_key.is_none() && !self.insecure_control
        {
            return Err(Error::Config(format!(
                "the gRPC control plane would listen on {} without an API key: anyone reaching \
                 it could reroute every stream. Set --api-key-file (or --api-key / \
                 WHIPGATE_API_KEY), bind a loopback address, or pass --insecure-control",
                self.grpc_listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
