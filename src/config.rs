//! Configuration: plain data with defaults, merged from a TOML file, `WHIPGATE_*` environment
//! variables and command-line flags (flags win, then environment, then file, then defaults).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything the gateway needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// WHIP (HTTP) listener.
    pub http_listen: SocketAddr,
    /// gRPC control-plane listener.
    pub grpc_listen: SocketAddr,
    /// The one UDP port every WebRTC session shares.
    pub udp_listen: SocketAddr,
    /// ICE-TCP (passive) listener for publishers whose networks block UDP; `None`: off.
    pub tcp_listen: Option<SocketAddr>,
    /// Addresses advertised in ICE candidates instead of the local ones (NAT 1:1).
    pub public_ip: Vec<IpAddr>,
    /// Interfaces whose addresses are advertised when bound to a wildcard (empty: all).
    pub interfaces: Vec<String>,
    /// Global cap on live publishers.
    pub max_publishers: usize,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Largest SDP offer accepted, in bytes.
    pub max_sdp_bytes: usize,
    /// A publisher that sends no media for this long is closed.
    pub media_timeout: Duration,
    /// A session that does not connect (ICE + DTLS) within this is closed.
    pub connect_timeout: Duration,
    /// Deadline for producing an answer (ICE gathering included): 504 after it.
    pub answer_timeout: Duration,
    /// Interval of session-stats events.
    pub stats_interval: Duration,
    /// How many events the in-memory history keeps for resuming watchers.
    pub event_history: usize,
    /// API key required on control RPCs (`authorization: Bearer <key>`); none: open.
    pub api_key: Option<String>,
    /// Separate listener for `/metrics`; none: served on the HTTP listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Label per-ingest metrics with the ingest id (unbounded label set: opt in).
    pub metrics_ingest_label: bool,
    /// How long shutdown waits for sessions to close.
    pub shutdown_grace: Duration,
    /// STUN/TURN servers offered to publishers (`Link: rel="ice-server"` on the 201).
    pub ice_servers: Vec<IceServer>,
    /// Where registrations, caps and stream continuity are kept across restarts (the
    /// embedded store's file lives here); `None`: in memory only (tests, embedders).
    pub data_dir: Option<PathBuf>,
    /// Kernel receive and send buffer of the media socket, in bytes (0: the kernel default).
    pub media_socket_buffer: usize,
}

/// The data dir when none is configured: relative to the working directory, so
/// `cargo run --release` on a fresh checkout just works.
pub const DEFAULT_DATA_DIR: &str = "whipgate-data";

/// A STUN or TURN server for publishers (RFC 9725 section 4.6).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URI.
    pub url: String,
    /// TURN username.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN credential (password).
    #[serde(default)]
    pub credential: Option<String>,
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
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            tcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8189))),
            public_ip: Vec::new(),
            interfaces: Vec::new(),
            max_publishers: 64,
            cors_origins: vec!["*".to_owned()],
            max_sdp_bytes: 64 * 1024,
            media_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            event_history: 4096,
            api_key: None,
            metrics_listen: None,
            metrics_ingest_label: false,
            shutdown_grace: Duration::from_secs(10),
            ice_servers: Vec::new(),
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            media_socket_buffer: 8 * 1024 * 1024,
        }
    }
}

impl Config {
    /// A configuration for tests and embedding: every listener on `127.0.0.1:0`.
    pub fn loopback() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            http_listen: any,
            grpc_listen: any,
            udp_listen: any,
            tcp_listen: Some(any),
            data_dir: None,
            ..Config::default()
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_sdp_bytes < 1024 {
            return Err("max_sdp_bytes must be at least 1024".into());
        }
        if self.event_history == 0 {
            return Err("event_history must be at least 1".into());
        }
        for (name, d) in [
            ("media_timeout", self.media_timeout),
            ("connect_timeout", self.connect_timeout),
            ("answer_timeout", self.answer_timeout),
            ("stats_interval", self.stats_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        for server in &self.ice_servers {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| server.url.starts_with(s));
            if !scheme_ok || server.url.contains(['<', '>', '"', '\r', '\n']) {
                return Err(format!(
                    "ice server {:?}: expected a stun:/turn: URI",
                    server.url
                ));
            }
            if server.url.starts_with("turn")
                && (server.username.is_none() || server.credential.is_none())
            {
                return Err(format!(
                    "ice server {:?}: TURN needs username and credential",
                    server.url
                ));
            }
        }
        if self.cors_origins.is_empty() {
            return Err("cors_origins must name at least one origin (or \"*\")".into());
        }
        Ok(())
    }
}

/// `whipgate`: a WHIP ingest gateway. WebRTC in, plain RTP over UDP out, driven over gRPC.
///
/// Every flag can also be set in the TOML file given with --config (same name, with
/// underscores) and with a WHIPGATE_* environment variable. Flags win over the
/// environment, which wins over the file.
#[derive(Debug, Default, Parser)]
#[command(name = "whipgate", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "WHIPGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// WHIP/HTTP listen address [default: 0.0.0.0:8080].
    #[arg(long, env = "WHIPGATE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// gRPC control-plane listen address [default: 0.0.0.0:50051].
    #[arg(long, env = "WHIPGATE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// WebRTC media UDP address, one port shared by all sessions [default: 0.0.0.0:8189].
    #[arg(long, env = "WHIPGATE_UDP_LISTEN")]
    pub udp_listen: Option<SocketAddr>,
    /// ICE-TCP (passive) listen address, for publishers whose networks block UDP
    /// [default: 0.0.0.0:8189].
    #[arg(long, env = "WHIPGATE_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,
    /// Offer ICE-TCP candidates at all [default: true].
    #[arg(long, env = "WHIPGATE_ICE_TCP")]
    pub ice_tcp: Option<bool>,
    /// Address to advertise in ICE candidates (NAT 1:1); repeat or comma-separate for several.
    #[arg(long, env = "WHIPGATE_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Option<Vec<IpAddr>>,
    /// With a wildcard media address and no --public-ip: advertise only these interfaces'
    /// addresses (comma-separated names, e.g. eth0) [default: all].
    #[arg(long, env = "WHIPGATE_INTERFACES", value_delimiter = ',')]
    pub interfaces: Option<Vec<String>>,
    /// Maximum live publishers across all ingests [default: 64].
    #[arg(long, env = "WHIPGATE_MAX_PUBLISHERS")]
    pub max_publishers: Option<usize>,
    /// CORS allowed origins, comma-separated; "*" for any [default: *].
    #[arg(long, env = "WHIPGATE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Largest accepted SDP offer in bytes [default: 65536].
    #[arg(long, env = "WHIPGATE_MAX_SDP_BYTES")]
    pub max_sdp_bytes: Option<usize>,
    /// Close a publisher that sends no media for this many seconds [default: 10].
    #[arg(long, env = "WHIPGATE_MEDIA_TIMEOUT_SECS")]
    pub media_timeout_secs: Option<f64>,
    /// Close a session not connected after this many seconds [default: 30].
    #[arg(long, env = "WHIPGATE_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<f64>,
    /// Answer deadline in seconds, ICE gathering included; 504 after it [default: 5].
    #[arg(long, env = "WHIPGATE_ANSWER_TIMEOUT_SECS")]
    pub answer_timeout_secs: Option<f64>,
    /// Seconds between session-stats events [default: 5].
    #[arg(long, env = "WHIPGATE_STATS_INTERVAL_SECS")]
    pub stats_interval_secs: Option<f64>,
    /// Events kept in memory for WatchEvents resume [default: 4096].
    #[arg(long, env = "WHIPGATE_EVENT_HISTORY")]
    pub event_history: Option<usize>,
    /// API key required on control RPCs as "authorization: Bearer <key>".
    #[arg(long, env = "WHIPGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serve /metrics on this address instead of the HTTP listener.
    #[arg(long, env = "WHIPGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Label per-ingest metrics with the ingest id (unbounded label set).
    #[arg(long, env = "WHIPGATE_METRICS_INGEST_LABEL")]
    pub metrics_ingest_label: Option<bool>,
    /// Seconds shutdown waits for sessions to close [default: 10].
    #[arg(long, env = "WHIPGATE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<f64>,
    /// STUN server URI offered to publishers (repeatable); TURN servers with credentials go
    /// in the file as [[ice_servers]] url, username, credential.
    #[arg(
        long = "ice-server",
        env = "WHIPGATE_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Option<Vec<String>>,
    /// Directory of the embedded store (registrations, tokens, caps, stream continuity),
    /// created if missing [default: ./whipgate-data].
    #[arg(long, env = "WHIPGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kernel buffer of the media socket in bytes (0: kernel default) [default: 8 MiB].
    #[arg(long, env = "WHIPGATE_MEDIA_SOCKET_BUFFER")]
    pub media_socket_buffer: Option<usize>,
}

/// The TOML file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_listen: Option<SocketAddr>,
    grpc_listen: Option<SocketAddr>,
    udp_listen: Option<SocketAddr>,
    tcp_listen: Option<SocketAddr>,
    ice_tcp: Option<bool>,
    public_ip: Option<Vec<IpAddr>>,
    interfaces: Option<Vec<String>>,
    max_publishers: Option<usize>,
    cors_origins: Option<Vec<String>>,
    max_sdp_bytes: Option<usize>,
    media_timeout_secs: Option<f64>,
    connect_timeout_secs: Option<f64>,
    answer_timeout_secs: Option<f64>,
    stats_interval_secs: Option<f64>,
    event_history: Option<usize>,
    api_key: Option<String>,
    metrics_listen: Option<SocketAddr>,
    metrics_ingest_label: Option<bool>,
    shutdown_grace_secs: Option<f64>,
    ice_servers: Option<Vec<IceServer>>,
    data_dir: Option<PathBuf>,
    media_socket_buffer: Option<usize>,
}

fn secs(value: Option<f64>, default: Duration, name: &str) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(s) => {
            Duration::try_from_secs_f64(s).map_err(|_| format!("{name}: invalid duration {s}"))
        }
    }
}

impl Cli {
    /// Merges flags and environment (already in `self`) over the file over the defaults.
    pub fn into_config(self) -> Result<Config, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("parsing {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let d = Config::default();
        let config = Config {
            http_listen: self
                .http_listen
                .or(file.http_listen)
                .unwrap_or(d.http_listen),
            grpc_listen: self
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or(d.grpc_listen),
            udp_listen: self.udp_listen.or(file.udp_listen).unwrap_or(d.udp_listen),
            tcp_listen: if self.ice_tcp.or(file.ice_tcp).unwrap_or(true) {
                self.tcp_listen.or(file.tcp_listen).or(d.tcp_listen)
            } else {
                None
            },
            public_ip: self.public_ip.or(file.public_ip).unwrap_or(d.public_ip),
            interfaces: self.interfaces.or(file.interfaces).unwrap_or(d.interfaces),
            max_publishers: self
                .max_publishers
                .or(file.max_publishers)
                .unwrap_or(d.max_publishers),
            cors_origins: self
                .cors_origins
                .or(file.cors_origins)
                .unwrap_or(d.cors_origins),
            max_sdp_bytes: self
                .max_sdp_bytes
                .or(file.max_sdp_bytes)
                .unwrap_or(d.max_sdp_bytes),
            media_timeout: secs(
                self.media_timeout_secs.or(file.media_timeout_secs),
                d.media_timeout,
                "media_timeout_secs",
            )?,
            connect_timeout: secs(
                self.connect_timeout_secs.or(file.connect_timeout_secs),
                d.connect_timeout,
                "connect_timeout_secs",
            )?,
            answer_timeout: secs(
                self.answer_timeout_secs.or(file.answer_timeout_secs),
                d.answer_timeout,
                "answer_timeout_secs",
            )?,
            stats_interval: secs(
                self.stats_interval_secs.or(file.stats_interval_secs),
                d.stats_interval,
                "stats_interval_secs",
            )?,
            media_socket_buffer: self
                .media_socket_buffer
                .or(file.media_socket_buffer)
                .unwrap_or(d.media_socket_buffer),
            event_history: self
                .event_history
                .or(file.event_history)
                .unwrap_or(d.event_history),
            api_key: self.api_key.or(file.api_key).filter(|k| !k.is_empty()),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            metrics_ingest_label: self
                .metrics_ingest_label
                .or(file.metrics_ingest_label)
                .unwrap_or(d.metrics_ingest_label),
            shutdown_grace: secs(
                self.shutdown_grace_secs.or(file.shutdown_grace_secs),
                d.shutdown_grace,
                "shutdown_grace_secs",
            )?,
            ice_servers: match self.ice_servers {
                Some(urls) => urls
                    .into_iter()
                    .map(|url| IceServer {
                        url,
                        username: None,
                        credential: None,
                    })
                    .collect(),
                None => file.ice_servers.unwrap_or_default(),
            },
            data_dir: self.data_dir.or(file.data_dir).or(d.data_dir),
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ports() {
        let c = Cli::default().into_config().unwrap();
        assert_eq!(c.http_listen.port(), 8080);
        assert_eq!(c.grpc_listen.port(), 50051);
        assert_eq!(c.udp_listen.port(), 8189);
        assert_eq!(c.max_publishers, 64);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("whipgate-cfg-{}", std::process::id()));
        std::fs::write(
            &dir,
            "max_publishers = 3\nhttp_listen = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "whipgate",
            "--config",
            dir.to_str().unwrap(),
            "--max-publishers",
            "7",
        ])
        .unwrap();
        let c = cli.into_config().unwrap();
        std::fs::remove_file(&dir).ok();
        assert_eq!(c.max_publishers, 7);
        assert_eq!(
            c.http_listen,
            "127.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap()
        );
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let turn = IceServer {
            url: "turn:turn.example.net?transport=udp".into(),
            username: Some("user".into()),
            credential: Some("pa\"ss".into()),
        };
        assert_eq!(
            turn.link_header(),
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; \
             credential=\"pa\\\"ss\"; credential-type=\"password\""
        );
        let file = "[[ice_servers]]\nurl = \"stun:stun.example.net\"\n";
        let parsed: FileConfig = toml::from_str(file).unwrap();
        assert_eq!(
            parsed.ice_servers.unwrap()[0].link_header(),
            "<stun:stun.example.net>; rel=\"ice-server\""
        );
        let bad = Config {
            ice_servers: vec![IceServer {
                url: "turn:x".into(),
                username: None,
                credential: None,
            }],
            ..Config::default()
        };
        assert!(bad.validate().is_err(), "TURN without credentials");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("max_publisher = 3").is_err());
    }

    #[test]
    fn zero_durations_are_rejected() {
        let cli = Cli {
            media_timeout_secs: Some(0.0),
            ..Cli::default()
        };
        assert!(cli.into_config().is_err());
    }
}
