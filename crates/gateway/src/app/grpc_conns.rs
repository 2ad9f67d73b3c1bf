//! The gRPC listener's connections, bounded like HTTP's: a global cap (a permit taken before
//! `accept`, held until the connection closes, TLS or not), a cap per client (IPv4 address,
//! IPv6 /64; excess connections are closed at once), TLS handshakes in their own tracked
//! tasks with a timeout, and a first-byte deadline: a connection that sends nothing (no
//! HTTP/2 preface) within the header-read timeout after it opened (or after its TLS
//! handshake) is closed, so silent sockets cannot sit on descriptors.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;
use crate::net::accept::accept_bounded;
use crate::net::client::{Slot, Slots};
use crate::net::tls::incoming::TlsOn;

/// The gRPC listener's caps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GrpcLimits {
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Open connections per client at most.
    pub(crate) max_per_client: usize,
    /// Time a new connection has to send its first bytes.
    pub(crate) first_byte: Duration,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted gRPC connection and the places it holds; they are freed when tonic drops it.
pub(crate) struct GrpcConn {
    io: Box<dyn Io>,
    info: TcpConnectInfo,
    /// Armed until the first byte arrives.
    first_byte: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
    _permit: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl Drop for GrpcConn {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.first_byte.is_some() {
            match &polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_byte = None,
                Poll::Pending => {
                    if let Some(deadline) = self.first_byte.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no HTTP/2 preface in time",
                        )));
                    }
                }
                _ => {}
            }
        }
        polled
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts on `listener` until `cancel` and yields the connections within the caps (over
/// TLS when `tls`), for tonic's `serve_with_incoming_shutdown`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<TlsOn>,
    limits: GrpcLimits,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> ReceiverStream<io::Result<GrpcConn>> {
    let (tx, rx) = mpsc::channel(16);
    tracker.clone().spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let clients = Slots::new(limits.max_connections, limits.max_per_client);
        while let Some((permit, stream, peer)) =
            accept_bounded(&listener, &permits, &cancel, "gRPC").await
        {
            let slot = match clients.take(peer.ip()) {
                Ok(slot) => slot,
                Err(refused) => {
                    metrics
                        .connections_refused
                        .with_label_values(&["grpc", refused.as_str()])
                        .inc();
                    continue;
                }
            };
            let held = Held {
                slot,
                permit,
                peer,
                local: stream.local_addr().ok(),
                first_byte: limits.first_byte,
                gauge: metrics.grpc_connections.clone(),
            };
            match &tls {
                None => {
                    let conn = held.into_conn(Box::new(stream));
                    tokio::select! {
                        _ = tx.send(Ok(conn)) => {}
                        () = cancel.cancelled() => return,
                    }
                }
                Some(tls) => {
                    let (tls, tx, cancel) = (tls.clone(), tx.clone(), cancel.clone());
                    tracker.spawn(async move {
                        let handshake = tokio::select! {
                            stream = tls.handshake(stream, peer) => stream,
                            () = cancel.cancelled() => None,
                        };
                        if let Some(stream) = handshake {
                            let conn = held.into_conn(Box::new(stream));
                            tokio::select! {
                                _ = tx.send(Ok(conn)) => {}
                                () = cancel.cancelled() => {}
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The places an accepted connection holds before it is handed to tonic.
struct Held {
    slot: Slot,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    first_byte: Duration,
    gauge: IntGauge,
}

impl Held {
    fn into_conn(self, io: Box<dyn Io>) -> GrpcConn {
        self.gauge.inc();
        GrpcConn {
            io,
            info: TcpConnectInfo {
                local_addr: self.local,
                remote_addr: Some(self.peer),
            },
            first_byte: Some(Box::pin(tokio::time::sleep(self.first_byte))),
            _slot: self.slot,
            _permit: self.permit,
            gauge: self.gauge,
        }
    }
}
