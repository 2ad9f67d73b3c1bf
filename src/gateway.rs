//! Binds every listener, wires the registry, the WHIP edge, the media path and the control
//! plane together, and drains cleanly on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::control::pb::ingest_control_server::IngestControlServer;
use crate::control::{self, ControlService};
use crate::error::Error;
use crate::media::Media;
use crate::metrics::Metrics;
use crate::registry::{Caps, Registry};
use crate::whip::{self, WhipState};

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

/// A bound, not yet running gateway.
pub struct Gateway {
    config: Config,
    registry: Registry,
    media: Media,
    http: TcpListener,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    bound: Bound,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Gateway {
    /// Binds all listeners.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        config.validate().map_err(Error::BadRequest)?;
        let metrics = Arc::new(Metrics::new(config.metrics_ingest_label).map_err(Error::internal)?);
        // The store is read back before any listener opens.
        let store = crate::store::open(config.data_dir.as_deref()).map_err(Error::internal)?;
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
        let media = Media::bind(&config, metrics, tracker.clone()).await?;
        let http = TcpListener::bind(config.http_listen)
            .await
            .map_err(Error::internal)?;
        let grpc = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(Error::internal)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(Error::internal)?),
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
        Ok(Gateway {
            config,
            registry,
            media,
            http,
            grpc,
            metrics_listener,
            bound,
            tracker,
            cancel: CancellationToken::new(),
        })
    }

    /// The bound addresses.
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// The shared registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The media path (for diagnostics).
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// Serves until `shutdown` completes, then drains: gRPC health goes NOT_SERVING, new
    /// publishes get 503, every session ends (reason: shutdown), listeners stop, and the
    /// gateway waits for its tasks up to the configured grace.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Gateway {
            config,
            registry,
            media,
            http,
            grpc,
            metrics_listener,
            tracker,
            cancel,
            bound,
        } = self;
        let node = control::NodeInfo::local(bound.http);
        media.spawn_receiver(cancel.clone());
        tracker.spawn(registry.clone().run_checkpoints(cancel.clone()));

        let events = whip::events::EventsHub::new(
            registry.clone(),
            config.api_key.as_deref(),
            cancel.clone(),
            node.clone(),
        );
        let state = WhipState::new(registry.clone(), media.clone(), &config.ice_servers)?
            .with_events(events);
        let app = whip::router(
            state.clone(),
            &config.cors_origins,
            config.max_sdp_bytes,
            metrics_listener.is_none(),
        );
        let http_cancel = cancel.clone();
        tracker.spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(err) = axum::serve(http, service)
                .with_graceful_shutdown(http_cancel.cancelled_owned())
                .await
            {
                tracing::error!(%err, "HTTP server failed");
            }
        });
        if let Some(listener) = metrics_listener {
            let app = whip::metrics_router(state);
            let metrics_cancel = cancel.clone();
            tracker.spawn(async move {
                if let Err(err) = axum::serve(listener, app)
                    .with_graceful_shutdown(metrics_cancel.cancelled_owned())
                    .await
                {
                    tracing::error!(%err, "metrics server failed");
                }
            });
        }

        let (health, health_service) = tonic_health::server::health_reporter();
        set_serving(&health, true).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(control::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(Error::internal)?;
        let service = ControlService::new(registry.clone(), cancel.clone()).with_node(node);
        let interceptor = control::api_key_interceptor(config.api_key.clone(), registry.clone());
        let grpc_cancel = cancel.clone();
        tracker.spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection)
                .add_service(IngestControlServer::with_interceptor(service, interceptor))
                .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), grpc_cancel.cancelled())
                .await;
            if let Err(err) = result {
                tracing::error!(%err, "gRPC server failed");
            }
        });
        tracing::info!(?config.http_listen, ?config.grpc_listen, ?config.udp_listen, "whipgate running");

        shutdown.await;
        tracing::info!("shutting down: draining sessions");
        set_serving(&health, false).await;
        registry.start_draining();
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
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "tasks still running after the shutdown grace");
        }
        tracing::info!("shutdown complete");
        Ok(())
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
