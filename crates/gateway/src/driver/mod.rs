//! The media path's I/O: the driver around the sans-IO session core (`whipgate_media`).
//!
//! One UDP port (`udp`: one socket per worker in a `SO_REUSEPORT` group, routed by `mux`) and
//! one ICE-TCP port (`tcp`) carry every session; only connectivity checks that verify with a
//! session's ICE credential (`whipgate_media::ice_auth`) teach the router a publisher's
//! address. Each publish is negotiated on a few threads (`negotiate`) into an ICE-lite,
//! receive-only peer connection (`whipgate_media::peer`) wrapped in a
//! `whipgate_media::session::Session`. The media `worker` that receives a connected session's
//! datagrams drives it directly and runs its timers (`driver`); forwarded RTP leaves for the
//! ingest's UDP targets (`forward`) in batches (`batch`). Sessions still setting up (ICE, DTLS)
//! are driven on low-priority `setup` threads, so that handshakes never stall media. A small
//! control task per session (`cell::Control`) takes commands, caps and statistics, and closes
//! it; its events go to the registry and its counters to Prometheus (`report`).

mod batch;
mod cell;
mod forward;
mod mux;
mod negotiate;
mod report;
mod setup;
mod tcp;
mod udp;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::Admission;
use cell::{Cell, Control};
use forward::ForwardSockets;
use mux::UdpMux;
use negotiate::{Negotiators, Refused};
use whipgate_media::codec::OfferPlan;
use whipgate_media::peer::PeerFactory;
use whipgate_media::session::{Params, Session, SessionTimers, Targets};
use worker::{Worker, WorkerHandle};

/// What a successful publish answers.
#[derive(Debug)]
pub struct Answer {
    /// SDP answer (ICE-lite, all candidates included).
    pub sdp: String,
    /// Strong ETag of the ICE session.
    pub etag: String,
}

/// Shared media state: the socket, the DTLS certificate, forwarding sockets.
#[derive(Clone)]
pub struct Media {
    mux: UdpMux,
    /// Hands a new session's timers to a worker (round robin until its datagrams arrive).
    homes: Arc<[WorkerHandle]>,
    next_home: Arc<AtomicUsize>,
    /// The bound ICE-TCP address, if ICE-TCP is on.
    tcp_local: Option<SocketAddr>,
    factory: Arc<PeerFactory>,
    /// Threads that answer offers, in arrival order.
    negotiators: Negotiators,
    forward: ForwardSockets,
    timers: SessionTimers,
    answer_timeout: Duration,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

/// What the media path is told at start (`Config::media_settings`).
#[derive(Clone, Debug)]
pub struct MediaSettings {
    /// `--udp-listen`: the one media UDP port.
    pub udp_listen: SocketAddr,
    /// `--tcp-listen`: the ICE-TCP port, if any.
    pub tcp_listen: Option<SocketAddr>,
    /// `--public-ip`: addresses advertised instead of the bound one.
    pub public_ip: Vec<IpAddr>,
    /// `--interface`: interfaces whose addresses are advertised.
    pub interfaces: Vec<String>,
    /// `--media-socket-buffer`: kernel buffer sizes of the media sockets.
    pub media_socket_buffer: usize,
    /// `--media-workers`: workers (0: one per core).
    pub media_workers: usize,
    /// `--max-negotiations`: offers answered at once.
    pub max_negotiations: usize,
    /// `--media-timeout-secs`, `--connect-timeout-secs`, `--answer-timeout-secs`,
    /// `--stats-interval-secs`.
    pub media_timeout: Duration,
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    pub stats_interval: Duration,
}

/// What receives on the bound media ports, until [`Receivers::spawn`] starts it: the workers
/// and the ICE-TCP listener.
pub struct Receivers {
    workers: Vec<Worker>,
    tcp: Option<TcpListener>,
}

impl Media {
    /// Binds the media ports and prepares what every session shares; nothing runs until the
    /// receivers are spawned.
    pub async fn bind(
        config: &MediaSettings,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
    ) -> Result<(Self, Receivers), Error> {
        let count = match config.media_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let sockets = udp::bind_group(config.udp_listen, config.media_socket_buffer, count)
            .map_err(|e| Error::bind("--udp-listen", config.udp_listen, &e))?;
        let local = sockets[0].local_addr().map_err(Error::internal)?;
        let candidates = advertised_addrs(local, &config.public_ip, &config.interfaces);
        let tcp = match config.tcp_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::bind("--tcp-listen", addr, &e))?,
            ),
            None => None,
        };
        let tcp_local = match &tcp {
            Some(listener) => Some(listener.local_addr().map_err(Error::internal)?),
            None => None,
        };
        let tcp_candidates = match tcp_local {
            Some(tcp_local) => advertised_addrs(tcp_local, &config.public_ip, &config.interfaces),
            None => Vec::new(),
        };
        tracing::info!(udp = %local, workers = count, ?candidates, ?tcp_candidates, "media ports bound");
        let factory = PeerFactory::new(candidates, tcp_candidates).map_err(Error::internal)?;
        let forward = ForwardSockets::bind().await.map_err(Error::internal)?;
        let mut sockets = sockets.into_iter().map(Arc::new);
        let first = sockets
            .next()
            .ok_or_else(|| Error::internal("no media socket"))?;
        let mux = UdpMux::new(Arc::clone(&first), factory.crypto());
        let (workers, homes): (Vec<_>, Vec<_>) = std::iter::once(first)
            .chain(sockets)
            .enumerate()
            .map(|(i, socket)| {
                Worker::new(
                    i,
                    socket,
                    mux.clone(),
                    forward.clone(),
                    Arc::clone(&metrics),
                )
            })
            .unzip();
        let media = Media {
            mux,
            homes: homes.into(),
            next_home: Arc::new(AtomicUsize::new(0)),
            tcp_local,
            factory: Arc::new(factory),
            negotiators: Negotiators::start(count, config.max_negotiations, &tracker),
            forward,
            timers: SessionTimers {
                media_timeout: config.media_timeout,
                connect_timeout: config.connect_timeout,
                stats_interval: config.stats_interval,
            },
            answer_timeout: config.answer_timeout,
            metrics,
            tracker,
        };
        Ok((media, Receivers { workers, tcp }))
    }

    /// Deadline for producing an answer (also used for ICE restarts).
    pub fn answer_timeout(&self) -> Duration {
        self.answer_timeout
    }

    /// The bound media address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.mux.socket().local_addr()
    }

    /// Routing entries of the media ports (diagnostics, leak checks): zero without sessions.
    pub fn routes(&self) -> usize {
        self.mux.router().routes()
    }

    /// The session a publisher address is routed to, if any (diagnostics, tests).
    pub fn routed_session(&self, addr: SocketAddr) -> Option<uuid::Uuid> {
        self.mux.router().session_of(addr)
    }

    /// The bound ICE-TCP address, if ICE-TCP is on.
    pub fn tcp_local_addr(&self) -> Option<SocketAddr> {
        self.tcp_local
    }

    /// Negotiates an admitted publish and starts its session task. Dropping the admission on
    /// any failure ends the session in the registry.
    pub async fn publish(
        &self,
        mut admission: Admission,
        offer: String,
        plan: OfferPlan,
    ) -> Result<Answer, Error> {
        let factory = Arc::clone(&self.factory);
        let blocking_plan = plan.clone();
        let negotiation = self
            .negotiators
            .submit(move || factory.negotiate(offer, &blocking_plan, std::time::Instant::now()))
            .map_err(|refused| match refused {
                Refused::Busy => Error::Overloaded("too many negotiations in progress".into()),
                Refused::Closed => Error::Draining,
            })?;
        let started = std::time::Instant::now();
        let negotiated = match tokio::time::timeout(self.answer_timeout, negotiation).await {
            Err(_) => return Err(Error::GatherTimeout),
            // Finished, but too late for a publisher that is already giving up.
            Ok(_) if started.elapsed() > self.answer_timeout => return Err(Error::GatherTimeout),
            Ok(Err(_)) => return Err(Error::internal("the negotiation failed unexpectedly")),
            Ok(Ok(Err(err))) => {
                return Err(Error::BadRequest(format!(
                    "cannot answer this offer: {err}"
                )));
            }
            Ok(Ok(Ok(negotiated))) => negotiated,
        };
        let session_id = admission.session_id;
        let ufrag = negotiated.ufrag;
        let commands = std::mem::replace(&mut admission.commands, tokio::sync::mpsc::channel(1).1);
        let cancel = admission.cancel.clone();
        let session = Session::new(Params {
            id: session_id,
            ingest: admission.spec.id.clone(),
            targets: Targets {
                video: admission.spec.video_target,
                audio: admission.spec.audio_target,
            },
            preferred_layer: admission.spec.simulcast_layer.clone(),
            plan,
            peer: negotiated.peer,
            ufrag: ufrag.clone(),
            ice_local: self.factory.ice_local_addr(false),
            ice_local_tcp: self.factory.ice_local_addr(true),
            continuity: Arc::clone(&admission.continuity),
            counters: Arc::clone(&admission.counters),
            meter: Arc::new(report::SessionMeter::new(Arc::clone(&self.metrics))),
            timers: self.timers,
            now: std::time::Instant::now(),
            wall_clock: std::time::SystemTime::now(),
        });
        let span = tracing::info_span!("session", ingest = %admission.spec.id, %session_id);
        let home = self.next_home.fetch_add(1, Ordering::Relaxed) % self.homes.len();
        let net = cell::Net {
            socket: Arc::clone(self.mux.socket()),
            mux: self.mux.clone(),
        };
        let cell = Cell::new(session, admission, net, self.homes[home].clone());
        let route = self.mux.router().route(
            ufrag.clone(),
            &negotiated.pwd,
            session_id,
            Arc::clone(&cell),
        );
        let control = Control {
            cell,
            route,
            commands,
            cancel,
            stats_interval: self.timers.stats_interval,
            sockets: self.forward.clone(),
            metrics: Arc::clone(&self.metrics),
        };
        self.tracker.spawn(control.run().instrument(span));
        Ok(Answer {
            sdp: negotiated.answer_sdp,
            etag: format!("\"{ufrag}\""),
        })
    }
}

impl Receivers {
    /// Starts the receive loops of the media port's workers and the ICE-TCP listener, and the
    /// setup and negotiation threads' end at `cancel`.
    pub fn spawn(self, media: &Media, cancel: CancellationToken) {
        let negotiators = media.negotiators.clone();
        let closing = cancel.clone();
        media.tracker.spawn(async move {
            closing.cancelled().await;
            negotiators.close();
        });
        let metrics = Arc::clone(&media.metrics);
        let tracker = &media.tracker;
        // Only the workers and the ICE-TCP tasks hold the setup queue: its threads end with them.
        let setup = setup::Setup::start(self.workers.len(), &media.forward, &metrics, tracker);
        for (i, worker) in self.workers.into_iter().enumerate() {
            tracker.spawn(
                worker
                    .run(setup.clone(), cancel.clone())
                    .instrument(tracing::info_span!("media_worker", worker = i)),
            );
        }
        if let Some(listener) = self.tcp {
            let accept = tcp::accept(
                listener,
                media.mux.clone(),
                media.forward.clone(),
                setup.clone(),
                metrics,
                cancel,
                tracker.clone(),
            );
            tracker.spawn(accept.instrument(tracing::info_span!("ice_tcp")));
        }
    }
}

/// The addresses put in ICE candidates: the configured public ones, else the bound one, else
/// (wildcard bind) every address of the socket's family on the allowed interfaces (all when
/// none are named). IPv4 comes first: FFmpeg's WHIP muxer takes only the first UDP host
/// candidate of the answer and libdatachannel (OBS) tries them in order, and IPv4 is the
/// family every publisher can reach.
fn advertised_addrs(
    local: SocketAddr,
    public: &[IpAddr],
    interfaces: &[String],
) -> Vec<SocketAddr> {
    let port = local.port();
    if !public.is_empty() {
        let mut addrs: Vec<SocketAddr> =
            public.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        return addrs;
    }
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let mut addrs: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|iface| interfaces.is_empty() || interfaces.contains(&iface.name))
        .map(|iface| iface.ip())
        .filter(|ip| local.is_ipv6() || ip.is_ipv4())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    // Non-loopback first (the first address is the one ICE treats as local), then IPv4.
    addrs.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    if addrs.is_empty() {
        addrs.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    addrs
}

#[cfg(test)]
mod tests;
