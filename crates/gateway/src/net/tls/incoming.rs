//! TLS handshakes, one per connection task with a timeout (a slow client never holds an
//! accept loop). whipgate terminates gRPC's TLS itself too (`gateway::grpc_conns`), because
//! tonic's own TLS cannot swap certificates.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

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
