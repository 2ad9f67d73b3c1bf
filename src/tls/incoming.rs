//! TLS handshakes, one per connection task with a timeout (a slow client never holds an
//! accept loop), and the stream of TLS connections the gRPC server is handed: whipgate
//! terminates gRPC's TLS itself because tonic's own TLS cannot swap certificates.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::accept_bounded;

/// Handshakes in progress at once on the gRPC listener; more connections wait in the kernel
/// backlog.
const MAX_GRPC_HANDSHAKES: usize = 256;

/// TLS on a listener: the acceptor, the handshake bound and the failure counter.
#[derive(Clone)]
pub(crate) struct TlsOn {
    /// Serves the current certificate (swapped by a reload).
    pub(crate) acceptor: TlsAcceptor,
    /// Time a client has to complete the handshake.
    pub(crate) timeout: Duration,
    /// `whipgate_tls_handshake_failures_total` for this listener.
    pub(crate) failures: IntCounter,
}

impl TlsOn {
    /// Runs the handshake on `stream`; `None` (counted and logged at debug) when it fails or
    /// does not finish within the timeout.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(err)) => {
                self.failures.inc();
                tracing::debug!(%peer, %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.failures.inc();
                tracing::debug!(%peer, timeout = ?self.timeout, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Accepts on `listener` until `cancel`, handshakes each connection in its own tracked task,
/// and yields the established TLS connections (for tonic's `serve_with_incoming_shutdown`;
/// tonic reads the peer address through its `Connected` impl for `TlsStream`).
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    tls: TlsOn,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    tracker.clone().spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_GRPC_HANDSHAKES));
        while let Some((permit, stream, peer)) =
            accept_bounded(&listener, &slots, &cancel, "gRPC").await
        {
            let tls = tls.clone();
            let tx = tx.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                let handshake = tokio::select! {
                    stream = tls.handshake(stream, peer) => stream,
                    () = cancel.cancelled() => None,
                };
                let Some(stream) = handshake else {
                    return;
                };
                drop(permit);
                tokio::select! {
                    _ = tx.send(Ok(stream)) => {}
                    () = cancel.cancelled() => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
