//! The media port's socket: bound with kernel buffers sized for bursts, and its receive loop.
//!
//! Every publisher's frame packets tend to arrive together; with the kernel's default receive
//! buffer (about 200 KiB) a few hundred publishers overflow it before the receive task runs
//! again, and the kernel drops datagrams while the CPU is idle. The buffers are sized like QUIC
//! and pion stacks do, the effective size is logged, and a cap by `net.core.rmem_max` is
//! reported (as root, `SO_RCVBUFFORCE` lifts it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::mux::UdpMux;
use crate::metrics::Metrics;

/// Largest datagram read from the media port (larger ones are truncated and fail to parse).
const MAX_DATAGRAM: usize = 2048;
/// Bytes of received datagrams packed into one allocation: the per-datagram buffers are
/// slices of it (reference counted), so the receive path allocates about once per
/// `POOL_CHUNK / size` datagrams instead of once per datagram.
const POOL_CHUNK: usize = 64 * 1024;

/// Binds the media socket with `buffer` bytes of kernel receive and send buffer (0 keeps the
/// kernel's default).
pub(crate) fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack when bound to [::], as the standard library would not do by default.
        let _ = socket.set_only_v6(false);
    }
    if buffer > 0 {
        size_buffers(&socket, buffer);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Asks for `wanted` bytes of receive and send buffer; logs what the kernel granted.
fn size_buffers(socket: &Socket, wanted: usize) {
    let _ = socket.set_recv_buffer_size(wanted);
    let _ = socket.set_send_buffer_size(wanted);
    // Linux reports twice the size asked for (its bookkeeping overhead); halve to compare.
    let granted = |size: std::io::Result<usize>| size.map(|s| s / 2).unwrap_or(0);
    let mut recv = granted(socket.recv_buffer_size());
    let mut send = granted(socket.send_buffer_size());
    #[cfg(target_os = "linux")]
    if recv < wanted || send < wanted {
        // Allowed with CAP_NET_ADMIN (root): exceeds net.core.rmem_max / wmem_max.
        use std::os::fd::AsFd;
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(socket.as_fd(), wanted);
        let _ = rustix::net::sockopt::set_socket_send_buffer_size_force(socket.as_fd(), wanted);
        recv = granted(socket.recv_buffer_size());
        send = granted(socket.send_buffer_size());
    }
    if recv < wanted || send < wanted {
        tracing::warn!(
            wanted,
            recv,
            send,
            "the kernel capped the media socket buffers: raise net.core.rmem_max and \
             net.core.wmem_max (sysctl) or bursts from many publishers may be dropped"
        );
    } else {
        tracing::info!(recv, send, "media socket buffers");
    }
}

/// Receives until cancelled, routing each datagram to its session.
pub(crate) async fn receive(mux: UdpMux, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let socket = Arc::clone(mux.socket());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut pool = bytes::BytesMut::with_capacity(POOL_CHUNK);
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    // ICMP errors surface here on some platforms; they concern one peer.
                    tracing::debug!(%err, "media socket receive error");
                    continue;
                }
            },
        };
        let packet = &buf[..n];
        if pool.capacity() - pool.len() < n {
            pool = bytes::BytesMut::with_capacity(POOL_CHUNK);
        }
        if let Err(reason) = mux.dispatch(packet, from, Instant::now(), &mut pool) {
            metrics.media_drop("udp", reason.as_str());
        }
    }
}
