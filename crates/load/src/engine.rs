//! A load run: optional gRPC registration, the WHIP POSTs (bounded concurrency, optional
//! ramp), the workers that drive the publishers, the measured window, and teardown (DELETE, or
//! vanish). [`Engine`] is reused by the soak for many batches.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::publisher::Publisher;
use super::sink::{Sink, SinkReport};
use super::stats::{Histogram, Quantiles, proc_sample};
use super::worker::{self, Command, Live};
use super::{LoadConfig, LoadError, VideoCodec};

/// POSTs per publisher at most when the gateway answers 429 or 503.
const POST_ATTEMPTS: u32 = 5;
/// Longest Retry-After honoured between two attempts.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
use whipgate_proto::pb;
use whipgate_proto::pb::ingest_control_client::IngestControlClient;

/// Shared ingredients of every batch: configuration, one DTLS certificate, the HTTP client
/// and the sink.
pub struct Engine {
    cfg: LoadConfig,
    certificate: RTCCertificate,
    http: reqwest::Client,
    /// With `--spread-ips`: one client per local address, in address order.
    spread: Vec<reqwest::Client>,
    sink: Option<Sink>,
    /// POSTs retried after a 429 or 503 (Retry-After).
    retries: Arc<std::sync::atomic::AtomicU64>,
}

/// Publishers set up by [`Engine::start`], running until [`Batch::finish`].
pub struct Batch {
    workers: Vec<(mpsc::UnboundedSender<Command>, JoinHandle<Histogram>)>,
    live: Arc<Live>,
    sessions: Vec<String>,
    /// POST -> 201 times, microseconds.
    pub handshake: Histogram,
    /// Refused or failed POSTs by status (or error kind).
    pub post_errors: BTreeMap<String, u64>,
    /// Wall time of the POST phase.
    pub setup: Duration,
}

/// Counters of a batch at one instant.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    pub connected: u64,
    pub failed: u64,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub bytes: u64,
    pub send_errors: u64,
    pub keyframe_requests: u64,
    pub nacks: u64,
}

/// The outcome of a run, as printed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub publishers: u32,
    /// POSTs answered 201.
    pub created: u32,
    pub post_errors: BTreeMap<String, u64>,
    /// POSTs retried after a 429 or 503 with Retry-After (the gateway was busy).
    pub post_retries: u64,
    /// Publishers whose ICE + DTLS came up.
    pub connected: u64,
    pub failed: u64,
    /// POST -> 201.
    pub handshake: Quantiles,
    /// POST -> 201, mean (1000 / mean: sequential setups per second).
    pub handshake_mean_ms: f64,
    /// POST -> ICE + DTLS connected.
    pub connect: Quantiles,
    /// 201s per second during setup (with `--concurrency 1`: sequential setups per second).
    pub setups_per_second: f64,
    /// Seconds measured (after setup).
    pub window_s: f64,
    /// Sent during the window.
    pub sent: Counters,
    /// The generator's own CPU during the window (publishers, not the sink), in cores.
    pub generator_cores: f64,
    /// The built-in sink's CPU during the window, in cores.
    pub sink_cores: f64,
    /// The built-in sink's view of the window.
    pub sink: Option<SinkReport>,
    /// The process given with `--watch-pid` over the same window.
    pub watched: Option<Watched>,
    /// Datagrams the kernel dropped for full receive buffers, machine-wide, in the window
    /// (`Udp: RcvbufErrors`).
    pub rcvbuf_errors: u64,
    /// Drops at the `--watch-udp` socket in the window (/proc/net/udp).
    pub watched_udp_drops: u64,
}

/// A watched process over the window.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Watched {
    /// utime + stime used during the window.
    pub cpu_s: f64,
    /// RSS before any publisher existed.
    pub rss_kib_before: u64,
    /// RSS at the end of the window.
    pub rss_kib_end: u64,
    pub threads_end: u64,
}

impl Engine {
    /// Generates the shared certificate and starts the sink when asked for.
    pub fn new(cfg: LoadConfig) -> Result<Engine, LoadError> {
        let provider =
            rtc::crypto::default_provider().map_err(|e| LoadError::Other(e.to_string()))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["whipgate-load".to_owned()])
                .map_err(|e| LoadError::Other(e.to_string()))?,
        )?;
        let sink = if cfg.sink || cfg.grpc.is_some() {
            Some(Sink::bind(
                cfg.bind_ip,
                cfg.codec,
                cfg.sink_ports.as_deref(),
            )?)
        } else {
            None
        };
        let pem = cfg.ca_pem()?;
        let client = |local: Option<std::net::IpAddr>| -> Result<reqwest::Client, LoadError> {
            let mut http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(cfg.concurrency.max(1))
                .local_address(local);
            if let Some(pem) = &pem {
                http = http.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
            }
            Ok(http.build()?)
        };
        // The POSTs leave from --bind-ip, as the publishers' media does (and, with
        // --spread-ips, each from its publisher's address), so that the gateway's per-client
        // limits see the client the run means; an unspecified address lets the kernel choose.
        let http = client((!cfg.bind_ip.is_unspecified()).then_some(cfg.bind_ip))?;
        let spread = if cfg.spread_ips > 1 {
            (0..cfg.spread_ips)
                .map(|i| client(Some(cfg.publisher_ip(i))))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Engine {
            cfg,
            certificate,
            http,
            spread,
            sink,
            retries: Default::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoadConfig {
        &self.cfg
    }

    /// The built-in sink, if running.
    pub fn sink(&self) -> Option<&Sink> {
        self.sink.as_ref()
    }

    /// Registers ingests `ids` over gRPC (replacing any with the same id), forwarding to the
    /// built-in sink.
    pub async fn register(&self, ids: Range<u32>) -> Result<(), LoadError> {
        let (Some(addr), Some(sink)) = (&self.cfg.grpc, &self.sink) else {
            return Ok(());
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.clone())
            .map_err(|e| LoadError::Other(format!("--grpc {addr}: {e}")))?;
        if addr.starts_with("https://") {
            let tls = match self.cfg.ca_pem()? {
                Some(pem) => tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        let client = IngestControlClient::new(channel);
        let (video, audio) = (sink.video_addr().to_string(), sink.audio_addr().to_string());
        let results: Vec<Result<(), LoadError>> = futures_util::stream::iter(ids)
            .map(|i| {
                let mut client = client.clone();
                let mut request = tonic::Request::new(pb::RegisterIngestRequest {
                    ingest_id: self.cfg.ingest_id(i),
                    video_target: video.clone(),
                    audio_target: if self.cfg.no_audio {
                        String::new()
                    } else {
                        audio.clone()
                    },
                    bearer_token: self.cfg.token.clone().unwrap_or_default(),
                    replace: true,
                    // The codec the publishers send (a default registration accepts H264 only).
                    video_codecs: vec![match self.cfg.codec {
                        VideoCodec::H264 => pb::VideoCodec::H264 as i32,
                        VideoCodec::Vp8 => pb::VideoCodec::Vp8 as i32,
                    }],
                    ..Default::default()
                });
                if let Some(key) = &self.cfg.api_key
                    && let Ok(v) = format!("Bearer {key}").parse()
                {
                    request.metadata_mut().insert("authorization", v);
                }
                async move {
                    client.register_ingest(request).await?;
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// POSTs an offer for each of `ids` and hands every answered publisher to a worker.
    /// Returns once every POST has been answered (or failed).
    pub async fn start(&self, ids: Range<u32>) -> Batch {
        let live = Arc::new(Live::default());
        let n_workers = self
            .cfg
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let workers: Vec<_> = (0..n_workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, tokio::spawn(worker::run(rx, Arc::clone(&live))))
            })
            .collect();
        let mut batch = Batch {
            workers,
            live,
            sessions: Vec::new(),
            handshake: Histogram::default(),
            post_errors: BTreeMap::new(),
            setup: Duration::ZERO,
        };
        let started = Instant::now();
        let ramp = self.cfg.ramp;
        let first = ids.start;
        // Without a ramp every offer is made before the first POST, so `--concurrency` POSTs
        // really go out at once (as from that many publishers, each with its offer ready).
        let ready: Vec<_> = if ramp > 0.0 {
            Vec::new()
        } else {
            ids.clone().map(|i| (i, self.prepare(i))).collect()
        };
        let prepared: Box<dyn Iterator<Item = _> + Send> = if ramp > 0.0 {
            Box::new(ids.map(|i| (i, None)))
        } else {
            Box::new(ready.into_iter().map(|(i, p)| (i, Some(p))))
        };
        let results = futures_util::stream::iter(prepared)
            .then(|(i, prepared)| async move {
                if ramp > 0.0 {
                    let at = started + Duration::from_secs_f64(f64::from(i - first) / ramp);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
                prepared.unwrap_or_else(|| self.prepare(i))
            })
            // Each POST is its own task: its answer is read (and timed) as soon as it arrives,
            // not when this loop next gets to it between other publishers' offers and answers.
            .map(|prepared| {
                let post = match &prepared {
                    Ok((publisher, _, _)) => self.poster(publisher.index),
                    Err(_) => self.poster(0),
                };
                async move {
                    let (publisher, offer, url) = prepared?;
                    tokio::spawn(post.publish(publisher, offer, url)).await?
                }
            })
            .buffer_unordered(self.cfg.concurrency.max(1));
        let mut results = std::pin::pin!(results);
        let mut next_worker = 0;
        while let Some(result) = results.next().await {
            match result {
                Ok((publisher, location, took)) => {
                    batch.handshake.record(took.as_micros() as u64);
                    batch.sessions.push(location);
                    let (tx, _) = &batch.workers[next_worker % batch.workers.len()];
                    next_worker += 1;
                    let _ = tx.send(Command::Add(Box::new(publisher)));
                }
                Err(err) => *batch.post_errors.entry(err.to_string()).or_default() += 1,
            }
        }
        batch.setup = started.elapsed();
        batch
    }

    /// What POSTs publisher `i`'s offer, owned so that each POST can run as its own task.
    fn poster(&self, i: u32) -> Poster {
        let http = match self.spread.len() {
            0 => &self.http,
            n => &self.spread[i as usize % n],
        };
        Poster {
            http: http.clone(),
            token: self.cfg.token.clone(),
            retries: Arc::clone(&self.retries),
            attempts: if self.cfg.no_retry { 1 } else { POST_ATTEMPTS },
        }
    }

    /// One publisher before its POST: socket, peer connection, offer, and the URL to POST to.
    /// A plain publisher (no WebRTC) has no offer: it is "answered" at once.
    fn prepare(&self, i: u32) -> Result<(Publisher, Option<String>, String), LoadError> {
        let local = std::net::SocketAddr::new(self.cfg.publisher_ip(i), 0);
        let socket = super::udp_socket(local, 1 << 20).map_err(|e| LoadError::Socket(e.kind()))?;
        let plan = self.cfg.plan();
        if let Some(to) = &self.cfg.plain {
            let [video_to, audio_to] = to[..] else {
                return Err(LoadError::Other(
                    "--plain wants two addresses: VIDEO,AUDIO".into(),
                ));
            };
            let p = Publisher::plain(i, socket, plan, video_to, audio_to)
                .map_err(|e| LoadError::Socket(e.kind()))?;
            return Ok((p, None, String::new()));
        }
        let (publisher, offer) = Publisher::webrtc(
            i,
            socket,
            plan,
            &self.certificate,
            self.cfg.gso,
            !self.cfg.full_rtc,
        )
        .map_err(LoadError::Offer)?;
        Ok((publisher, Some(offer), self.cfg.endpoint(i)))
    }
}

impl Engine {
    /// A whole run as `whipgate-load` does it: register, publish, measure, tear down.
    pub async fn run(&self) -> Result<Report, LoadError> {
        let n = self.cfg.publishers;
        let watch = || self.cfg.watch_pid.and_then(proc_sample);
        let udp_drops = || self.cfg.watch_udp.map_or(0, super::stats::udp_socket_drops);
        let rcvbuf = || super::stats::udp_rcvbuf_errors().unwrap_or(0);
        let watched_before = watch();
        self.register(0..n).await?;
        let batch = self.start(0..n).await;
        let created = batch.sessions.len() as u32;
        let patience = Duration::from_secs(10) + Duration::from_millis(20 * u64::from(n));
        batch.wait_settled(created, patience).await;
        if let Some(sink) = &self.sink {
            sink.reset();
        }
        let before = batch.counters();
        let sink_cpu = || self.sink.as_ref().map_or(0.0, Sink::cpu_seconds);
        let cpu_before = proc_sample(std::process::id());
        let sink_before = sink_cpu();
        let (watched_start, drops_start, rcvbuf_start) = (watch(), udp_drops(), rcvbuf());
        let window_start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(self.cfg.duration.max(0.0))).await;
        let window = window_start.elapsed();
        let cpu_after = proc_sample(std::process::id());
        let sink_used = sink_cpu() - sink_before;
        let (watched_end, drops_end, rcvbuf_end) = (watch(), udp_drops(), rcvbuf());
        let during = batch.counters().since(&before);
        let setup = batch.setup;
        let handshake = Quantiles::from(&batch.handshake);
        let handshake_mean_ms = round(batch.handshake.mean() / 1000.0);
        let post_errors = batch.post_errors.clone();
        let (connect, at_end) = batch.finish(self, self.cfg.vanish).await;
        // Let what is in flight arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Report {
            publishers: n,
            created,
            post_errors,
            post_retries: self.retries.load(Ordering::Relaxed),
            connected: at_end.connected,
            failed: at_end.failed,
            handshake,
            handshake_mean_ms,
            connect: Quantiles::from(&connect),
            setups_per_second: round(f64::from(created) / setup.as_secs_f64().max(1e-6)),
            window_s: round(window.as_secs_f64()),
            sent: during,
            generator_cores: match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => round((b.cpu_s - a.cpu_s - sink_used) / window.as_secs_f64()),
                _ => 0.0,
            },
            sink_cores: round(sink_used / window.as_secs_f64()),
            sink: self.sink.as_ref().map(Sink::report),
            watched: match (watched_before, watched_start, watched_end) {
                (Some(b), Some(s), Some(e)) => Some(Watched {
                    cpu_s: round(e.cpu_s - s.cpu_s),
                    rss_kib_before: b.rss_kib,
                    rss_kib_end: e.rss_kib,
                    threads_end: e.threads,
                }),
                _ => None,
            },
            rcvbuf_errors: rcvbuf_end.saturating_sub(rcvbuf_start),
            watched_udp_drops: drops_end.saturating_sub(drops_start),
        })
    }
}

/// POSTs one prepared offer (see [`Engine::prepare`]).
struct Poster {
    http: reqwest::Client,
    token: Option<String>,
    retries: Arc<std::sync::atomic::AtomicU64>,
    /// POSTs at most (1: no retry).
    attempts: u32,
}

impl Poster {
    /// POST -> 201 (timed from the request being sent to the answer read), then the answer
    /// applied to the publisher.
    async fn publish(
        self,
        mut publisher: Publisher,
        offer: Option<String>,
        url: String,
    ) -> Result<(Publisher, String, Duration), LoadError> {
        let Some(offer) = offer else {
            return Ok((publisher, String::new(), Duration::ZERO));
        };
        // A gateway that is busy answers 429 or 503 with Retry-After: wait as told (at most
        // `MAX_RETRY_WAIT`) and try again, as a WHIP client should, `attempts` times in all
        // (`--no-retry`: once, as OBS and FFmpeg do).
        let mut attempt = 0;
        let (sent, response) = loop {
            attempt += 1;
            let mut request = self
                .http
                .post(&url)
                .header("content-type", "application/sdp")
                .body(offer.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let sent = Instant::now();
            let response = request.send().await.map_err(error_label)?;
            let status = response.status();
            let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
            if !busy || attempt >= self.attempts {
                break (sent, response);
            }
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs)
                .min(MAX_RETRY_WAIT);
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        };
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = response.text().await.map_err(error_label)?;
        let took = sent.elapsed();
        if status != reqwest::StatusCode::CREATED {
            return Err(LoadError::Status(status.as_u16()));
        }
        let location = location
            .and_then(|l| reqwest::Url::parse(&url).ok()?.join(&l).ok())
            .map(String::from)
            .ok_or(LoadError::NoLocation)?;
        publisher.started = sent;
        publisher.set_answer(&answer).map_err(LoadError::Answer)?;
        Ok((publisher, location, took))
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn error_label(e: reqwest::Error) -> LoadError {
    LoadError::Unanswered(if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "http error"
    })
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            connected: self.connected,
            failed: self.failed,
            video_packets: self.video_packets - earlier.video_packets,
            audio_packets: self.audio_packets - earlier.audio_packets,
            bytes: self.bytes - earlier.bytes,
            send_errors: self.send_errors - earlier.send_errors,
            keyframe_requests: self.keyframe_requests - earlier.keyframe_requests,
            nacks: self.nacks - earlier.nacks,
        }
    }
}

impl Batch {
    /// The counters now.
    pub fn counters(&self) -> Counters {
        let l = &self.live;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            connected: get(&l.connected),
            failed: get(&l.failed),
            video_packets: get(&l.video_packets),
            audio_packets: get(&l.audio_packets),
            bytes: get(&l.bytes),
            send_errors: get(&l.send_errors),
            keyframe_requests: get(&l.keyframe_requests),
            nacks: get(&l.nacks),
        }
    }

    /// Publishers answered 201 in this batch.
    pub fn created(&self) -> usize {
        self.sessions.len()
    }

    /// Waits until `n` publishers connected or failed, for at most `patience`.
    pub async fn wait_settled(&self, n: u32, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            let c = self.counters();
            if c.connected + c.failed >= u64::from(n) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the batch: DELETE every session (unless `vanish`), then stop the workers.
    /// Returns the connect times and the final counters.
    pub async fn finish(self, engine: &Engine, vanish: bool) -> (Histogram, Counters) {
        if !vanish {
            let token = engine.cfg.token.clone();
            futures_util::stream::iter(&self.sessions)
                .filter(|l| std::future::ready(!l.is_empty()))
                .map(|location| {
                    let mut request = engine.http.delete(location);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    async move {
                        let _ = request.send().await;
                    }
                })
                .buffer_unordered(engine.cfg.concurrency.max(1))
                .collect::<Vec<()>>()
                .await;
        }
        let counters = self.counters();
        let mut connect = Histogram::default();
        for (tx, handle) in self.workers {
            let _ = tx.send(Command::Stop { vanish });
            if let Ok(h) = handle.await {
                connect.merge(&h);
            }
        }
        (connect, counters)
    }
}

/// Runs `whipgate-load` with `cfg`.
pub async fn run(cfg: LoadConfig) -> Result<Report, LoadError> {
    Engine::new(cfg)?.run().await
}
