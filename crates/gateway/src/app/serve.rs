//! The HTTP accept loop: hyper's HTTP/1 server with a timer, so a client that does not send
//! its request headers within the header-read timeout is disconnected (slowloris), a cap on
//! open connections (a semaphore permit per connection, taken before `accept`, so excess
//! clients wait in the kernel backlog instead of costing memory), a cap per client (one
//! address, or IPv6 /64, cannot hold every slot: its excess connections are closed at once,
//! plaintext ones after a 503), backoff on accept errors (EMFILE; both in
//! [`crate::net::accept`]), and graceful shutdown of every connection on cancel. With TLS, each connection
//! task runs the handshake (bounded by a timeout, inside the connection cap) and speaks
//! HTTP/2 or HTTP/1.1 as ALPN chose; an HTTP/2 connection with no open request for the
//! header-read timeout is closed too ([`super::idle`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::net::accept::accept_bounded;
use crate::net::client::{CloseConnection, Slots};
use crate::net::tls::incoming::TlsOn;

/// Connection-level limits of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Time a client has to send a request's headers (from connect, or from the end of the
    /// previous response on a kept-alive connection).
    pub(crate) header_timeout: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Open connections per client at most.
    pub(crate) max_per_client: usize,
}

/// What a plaintext HTTP client gets when it holds its share of connections already.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 44\r\n\r\ntoo many open connections from your address\n";

/// The gRPC listener, TLS on it, and its caps.
pub(crate) struct GrpcIncoming {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<TlsOn>,
    pub(crate) limits: super::grpc_conns::GrpcLimits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracker: TaskTracker,
}

impl GrpcIncoming {
    /// Serves `router` on the listener, over TLS if configured, until `cancel`.
    pub(crate) async fn serve(
        self,
        router: tonic::transport::server::Router,
        cancel: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = super::grpc_conns::incoming(
            self.listener,
            self.tls,
            self.limits,
            self.metrics,
            cancel.clone(),
            self.tracker,
        );
        router
            .serve_with_incoming_shutdown(incoming, cancel.cancelled())
            .await
    }
}

/// Serves `app` on `listener` (over TLS when `tls`) until `cancel`; connection tasks are
/// tracked by `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<TlsOn>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Slots::new(limits.max_connections, limits.max_per_client);
    while let Some((permit, stream, peer)) =
        accept_bounded(&listener, &slots, &cancel, "HTTP").await
    {
        let client = match clients.take(peer.ip()) {
            Ok(client) => client,
            Err(refused) => {
                metrics
                    .connections_refused
                    .with_label_values(&["http", refused.as_str()])
                    .inc();
                if tls.is_none() {
                    // A fresh socket's send buffer is empty: this never blocks.
                    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                }
                continue;
            }
        };
        let app = app.clone();
        let cancel = cancel.clone();
        let metrics = Arc::clone(&metrics);
        let tls = tls.clone();
        tracker.spawn(async move {
            let _held = (permit, client);
            metrics.http_connections.inc();
            match tls {
                None => serve_connection(stream, false, peer, app, limits, &metrics, cancel).await,
                Some(tls) => {
                    let handshake = tokio::select! {
                        stream = tls.handshake(stream, peer) => stream,
                        () = cancel.cancelled() => None,
                    };
                    if let Some(stream) = handshake {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_connection(stream, h2, peer, app, limits, &metrics, cancel).await;
                    }
                }
            }
            metrics.http_connections.dec();
        });
    }
}

async fn serve_connection<IO>(
    stream: IO,
    h2: bool,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    metrics: &Metrics,
    cancel: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = super::idle::Activity::new();
    let app = if h2 {
        app.layer(axum::middleware::from_fn_with_state(
            Arc::clone(&activity),
            super::idle::track,
        ))
    } else {
        app
    };
    let close = CloseConnection::default();
    let closing = close.0.clone();
    let service = TowerToHyperService::new(app.map_request(
        move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(close.clone());
            request
        },
    ));
    let io = TokioIo::new(stream);
    // Not hyper-util's auto builder: it waits for the first bytes without a timer, so a
    // client that sends nothing would escape the header-read timeout.
    let result = if h2 {
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        let idle = async {
            activity.idle(limits.header_timeout).await;
            tracing::debug!(%peer, "closing an idle HTTP/2 connection");
        };
        drive(
            connection,
            |c| c.graceful_shutdown(),
            idle,
            &cancel,
            &closing,
        )
        .await
    } else {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service)
            .with_upgrades();
        let never = std::future::pending::<()>();
        drive(
            connection,
            |c| c.graceful_shutdown(),
            never,
            &cancel,
            &closing,
        )
        .await
    };
    if let Err(err) = result {
        metrics.http_connection_errors.inc();
        tracing::debug!(%peer, %err, "HTTP connection ended with an error");
    }
}

/// Runs `connection` to its end; on `cancel` or once `idle` completes, shuts it down
/// gracefully (in-flight requests finish) and waits for that (after `idle`, for a second at
/// most); once `close` fires, drops it at once.
async fn drive<C>(
    connection: C,
    graceful_shutdown: impl Fn(std::pin::Pin<&mut C>),
    idle: impl std::future::Future<Output = ()>,
    cancel: &CancellationToken,
    close: &CancellationToken,
) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    tokio::pin!(idle);
    tokio::select! {
        result = connection.as_mut() => result,
        // A handler asked (an event stream whose reader stopped reading): drop, no goodbye.
        () = close.cancelled() => Ok(()),
        () = cancel.cancelled() => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
        () = &mut idle => {
            graceful_shutdown(connection.as_mut());
            // hyper's HTTP/2 server waits for the client's preface even when shut down, so a
            // client that never sent it would stay: give the GOAWAY a moment, then drop.
            tokio::time::timeout(Duration::from_secs(1), connection)
                .await
                .unwrap_or(Ok(()))
        }
    }
}
