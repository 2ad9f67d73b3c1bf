//! The application: its configuration ([`config`]), and the [`Gateway`] that binds every
//! listener, wires the registry, the WHIP edge, the media path and the control plane
//! together, runs them, and drains cleanly on shutdown.

pub mod config;
mod grpc_conns;
mod idle;
mod serve;

use serve::GrpcIncoming;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic_health::server::HealthReporter;

use crate::app::config::Config;
use crate::control::{self, ControlService, ControlSettings};
use crate::driver::{Media, Receivers};
use crate::edge::events;
use crate::edge::tokens::SignedTokens;
use crate::edge::whip::{self, WhipSettings, WhipState};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::net::tls::{TlsReload, TlsSetup};
use crate::registry::{Caps, Registry};
use crate::topology::{self, SharedTopology};
use whipgate_proto::pb::ingest_control_server::IngestControlServer;

/// Addresses actually bound (ports resolved when the config asked for port 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// WHIP / HTTP.
    pub http: SocketAddr,
    /// gRPC control plane.
    pub grpc: SocketAddr,
    /// WebRTC media (UDP).
    pub udp: SocketAddr,
    /// ICE-TCP, if enabled.
    pub tcp: Option<SocketAddr>,
    /// Separate metrics listener, if configured.
    pub metrics: Option<SocketAddr>,
}

/// Re-reads what can change without a restart (the binary calls it on SIGHUP): the TLS
/// certificates and the signed-token keys. A file that does not load keeps what was loaded
/// before; live sessions are untouched.
#[derive(Clone)]
pub struct Reloader {
    tls: TlsReload,
    tokens: Option<Arc<SignedTokens>>,
}

impl Reloader {
    /// Reloads everything; the failures, joined (each also logged).
    pub fn reload(&self) -> Result<(), Error> {
        let mut failures = Vec::new();
        if let Err(err) = self.tls.reload() {
            failures.push(err.to_string());
        }
        if let Some(tokens) = &self.tokens
            && let Err(err) = tokens.reload()
        {
            tracing::error!(%err, "signed-token keys reload failed: keeping the current keys");
            failures.push(err.to_string());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(failures.join("; ")))
        }
    }
}

/// A bound, not yet running gateway.
pub struct Gateway {
    config: Config,
    /// The WHIP edge's and the control plane's settings, converted from `config` once.
    whip: WhipSettings,
    control: ControlSettings,
    metrics: Arc<Metrics>,
    registry: Registry,
    media: Media,
    /// The media ports' receive loops, started by `run`.
    receivers: Receivers,
    http: TcpListener,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    bound: Bound,
    tracker: TaskTracker,
    cancel: CancellationToken,
    topology: SharedTopology,
    tls: TlsSetup,
    limits: Arc<whip::EdgeLimits>,
    /// Keys of signed publish tokens (`--token-keys-file`).
    tokens: Option<Arc<SignedTokens>>,
}

impl Gateway {
    /// Binds all listeners.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let tls = TlsSetup::from_config(&config)?;
        let tokens = match &config.token_keys_file {
            Some(file) => Some(Arc::new(SignedTokens::load(
                file,
                config.token_audience.clone(),
            )?)),
            None => None,
        };
        let metrics = Arc::new(Metrics::new(config.metrics_ingest_label).map_err(Error::internal)?);
        // The store is read back before any listener opens; the topology picks it (cluster
        // mode keeps the same records in Redis instead of the data dir).
        let plan = topology::Plan::from_config(&config, &metrics)?;
        let store = plan.store(&config)?;
        let registry = Registry::restore(
            store,
            Caps {
                max_publishers: config.max_publishers,
            },
            config.event_history,
            Arc::clone(&metrics),
        )
        .await?;
        let tracker = TaskTracker::new();
        metrics
            .register_tasks(tracker.clone())
            .map_err(Error::internal)?;
        let (media, receivers) = Media::bind(
            &config.media_settings(),
            Arc::clone(&metrics),
            tracker.clone(),
        )
        .await?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(|e| Error::bind("--http-listen", config.http_listen, &e))?;
        let grpc = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|e| Error::bind("--grpc-listen", config.grpc_listen, &e))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::bind("--metrics-listen", addr, &e))?,
            ),
            None => None,
        };
        let bound = Bound {
            http: http.local_addr().map_err(Error::internal)?,
            grpc: grpc.local_addr().map_err(Error::internal)?,
            udp: media.local_addr().map_err(Error::internal)?,
            tcp: media.tcp_local_addr(),
            metrics: match &metrics_listener {
                Some(l) => Some(l.local_addr().map_err(Error::internal)?),
                None => None,
            },
        };
        let cancel = CancellationToken::new();
        let topology = plan
            .start(
                &config,
                bound.http,
                tls.http.is_some(),
                &registry,
                &tracker,
                &cancel,
            )
            .await?;
        let whip = config.whip_settings();
        Ok(Gateway {
            topology,
            limits: Arc::new(whip::EdgeLimits::new(&whip)),
            tokens,
            control: config.control_settings(),
            whip,
            config,
            metrics,
            registry,
            media,
            receivers,
            http,
            grpc,
            metrics_listener,
            bound,
            tracker,
            cancel,
            tls,
        })
    }

    /// The handle that re-reads the TLS certificates (the binary calls it on SIGHUP); with
    /// no TLS configured, reloading does nothing.
    pub fn tls_reload(&self) -> TlsReload {
        self.tls.reload.clone()
    }

    /// What SIGHUP re-reads: the TLS certificates and the signed-token keys.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: self.tls.reload.clone(),
            tokens: self.tokens.clone(),
        }
    }

    /// The bound addresses.
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// The shared registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How this gateway relates to others: alone, or a member of a Redis cluster.
    pub fn topology(&self) -> &SharedTopology {
        &self.topology
    }

    /// The WHIP edge's limits: rate limits, requests in flight, negotiation slots.
    pub fn edge_limits(&self) -> Arc<whip::EdgeLimits> {
        Arc::clone(&self.limits)
    }

    /// The media path (for diagnostics).
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// Serves until `shutdown` completes, then drains: `/healthz` answers 503 and gRPC health
    /// NOT_SERVING, new publishes get 503, while live sessions keep forwarding for the drain
    /// window (so load balancers can stop sending new publishers); then every session ends
    /// (reason: shutdown), listeners stop, and the gateway waits for its tasks up to the
    /// shutdown grace.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Gateway {
            config,
            whip: whip_settings,
            control: control_settings,
            metrics,
            registry,
            media,
            receivers,
            http,
            grpc,
            metrics_listener,
            tracker,
            cancel,
            topology,
            tls,
            limits,
            tokens,
            ..
        } = self;
        let (http_tls, grpc_tls) = tls.listeners(&metrics);
        receivers.spawn(&media, cancel.clone());
        tracker.spawn(registry.clone().run_checkpoints(cancel.clone()));

        let events = events::EventsHub::new(
            registry.clone(),
            whip::access::ReadAccess::new(
                whip_settings.api_key.as_deref(),
                whip_settings.public_dashboard,
            ),
            cancel.clone(),
            topology.node().clone(),
        )
        .with_topology(topology.clone())
        .with_tracker(tracker.clone());
        let state = WhipState::new(
            registry.clone(),
            media.clone(),
            events,
            limits,
            tokens,
            &whip_settings,
        )?;
        topology.spawn(whip::proxy::answerer(state.clone()), &tracker, &cancel);
        let app = whip::router(state.clone(), &whip_settings, metrics_listener.is_none());
        let limits = serve::ConnLimits {
            header_timeout: config.http_header_timeout,
            max_connections: config.http_max_connections,
            max_per_client: config.http_max_connections_per_client,
        };
        tracker.spawn(serve::serve(
            http,
            app,
            limits,
            http_tls.clone(),
            Arc::clone(&metrics),
            cancel.clone(),
            tracker.clone(),
        ));
        if let Some(listener) = metrics_listener {
            tracker.spawn(serve::serve(
                listener,
                whip::metrics_router(state),
                limits,
                http_tls,
                Arc::clone(&metrics),
                cancel.clone(),
                tracker.clone(),
            ));
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, true).await;
        let grpc = GrpcIncoming {
            listener: grpc,
            tls: grpc_tls,
            limits: grpc_conns::GrpcLimits {
                max_connections: config.grpc_max_connections,
                max_per_client: config.grpc_max_connections_per_client,
                first_byte: config.http_header_timeout,
            },
            metrics: Arc::clone(&metrics),
            tracker: tracker.clone(),
        };
        tracker.spawn(serve_grpc(
            grpc,
            &control_settings,
            registry.clone(),
            topology,
            health_service,
            cancel.clone(),
        )?);
        warn_if_control_is_open(&config);
        say_who_reads_the_dashboard(&config);
        tracing::info!(?config.http_listen, ?config.grpc_listen, ?config.udp_listen, "whipgate running");

        shutdown.await;
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;
        tracing::info!(window = ?config.drain, "shutting down: draining (health 503, new publishes refused)");
        set_serving(&health, false).await;
        registry.stop_admitting();
        tokio::time::sleep(config.drain).await;
        registry.start_draining();
        tracing::info!(
            live = registry.live_count(),
            "drain window over: ending sessions"
        );
        // tonic-health's Watch streams never end on their own and would hold the gRPC server's
        // graceful shutdown for the whole grace: clearing the statuses ends them (watchers have
        // already seen NOT_SERVING).
        let mut health = health;
        health.clear_service_status("").await;
        health
            .clear_service_status(
                <IngestControlServer<ControlService> as tonic::server::NamedService>::NAME,
            )
            .await;
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "tasks still running after the shutdown grace");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The gRPC server: the control service and reflection (v1 and v1alpha) behind the API key,
/// health open; bounded streams per connection, message sizes, watchers; HTTP/2 keepalive.
fn serve_grpc(
    incoming: GrpcIncoming,
    settings: &ControlSettings,
    registry: Registry,
    topology: SharedTopology,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health + 'static,
    >,
    cancel: CancellationToken,
) -> Result<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>, Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(whipgate_proto::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(Error::internal)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(Error::internal)?;
    let service =
        ControlService::new(registry.clone(), cancel.clone(), settings).with_topology(topology);
    let interceptor = control::api_key_interceptor(settings.api_key.as_deref(), registry);
    let control = IngestControlServer::new(service)
        .max_decoding_message_size(control::limits::MAX_MESSAGE_BYTES);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, interceptor.clone()))
        .add_service(InterceptedService::new(
            reflection_v1alpha,
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(control, interceptor));
    Ok(Box::pin(async move {
        if let Err(err) = incoming.serve(router, cancel).await {
            tracing::error!(%err, "gRPC server failed");
        }
    }))
}

/// Says loudly, once, that anyone reaching the control port controls routing.
fn warn_if_control_is_open(config: &Config) {
    if config.api_key.is_some() {
        return;
    }
    if config.grpc_listen.ip().is_loopback() {
        tracing::info!(addr = %config.grpc_listen, "control plane on loopback without an API key");
    } else {
        tracing::warn!(
            addr = %config.grpc_listen,
            "INSECURE CONTROL PLANE: --insecure-control with no API key on a non-loopback \
             address; anyone who reaches this port can register, reroute and tear down streams"
        );
    }
}

/// Says at start who can read the dashboard's data, loudly when anyone can.
fn say_who_reads_the_dashboard(config: &Config) {
    match (config.api_key.is_some(), config.public_dashboard) {
        (_, true) => tracing::warn!(
            "PUBLIC DASHBOARD: --public-dashboard serves every ingest id, label, state and \
             bitrate (redacted: no targets, consumer SDPs, publisher addresses) to anyone who \
             reaches the HTTP port"
        ),
        (true, false) => tracing::info!("dashboard and /events need the API key"),
        (false, false) => tracing::info!(
            "dashboard data off (/api/ingests, /events): set --api-key-file to enable it, or \
             --public-dashboard for a redacted public view"
        ),
    }
}

async fn set_serving(health: &HealthReporter, serving: bool) {
    type Svc = IngestControlServer<ControlService>;
    if serving {
        health.set_serving::<Svc>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
    } else {
        health.set_not_serving::<Svc>().await;
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    }
}
