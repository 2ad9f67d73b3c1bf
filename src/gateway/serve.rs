//! The HTTP accept loop: hyper's HTTP/1 server with a timer, so a client that does not send
//! its request headers within the header-read timeout is disconnected (slowloris), a cap on
//! open connections (a semaphore permit per connection, taken before `accept`, so excess
//! clients wait in the kernel backlog instead of costing memory), backoff on accept errors
//! (EMFILE), and graceful shutdown of every connection on cancel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Connection-level limits of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Time a client has to send a request's headers (from connect, or from the end of the
    /// previous response on a kept-alive connection).
    pub(crate) header_timeout: Duration,
    /// Open connections at most.
    pub(crate) max_connections: usize,
}

/// Serves `app` on `listener` until `cancel`; connection tasks are tracked by `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = cancel.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(%err, ?backoff, "HTTP accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = cancel.cancelled() => return,
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let cancel = cancel.clone();
        let metrics = Arc::clone(&metrics);
        tracker.spawn(async move {
            let _permit = permit;
            metrics.http_connections.inc();
            serve_connection(stream, peer, app, limits, &metrics, cancel).await;
            metrics.http_connections.dec();
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    metrics: &Metrics,
    cancel: CancellationToken,
) {
    let service = TowerToHyperService::new(app.map_request(
        move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        metrics.http_connection_errors.inc();
        tracing::debug!(%peer, %err, "HTTP connection ended with an error");
    }
}
