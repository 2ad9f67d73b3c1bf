//! The media port's socket: bound with kernel buffers sized for bursts, and its receive loop.
//!
//! Every publisher's frame packets tend to arrive together; with the kernel's default receive
//! buffer (about 200 KiB) a few hundred publishers overflow it before the receive task runs
//! again, and the kernel drops datagrams while the CPU is idle. The buffers are sized like QUIC
//! and pion stacks do, the effective size is logged, and a cap by `net.core.rmem_max` is
//! reported (as root, `SO_RCVBUFFORCE` lifts it).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
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
/// Datagrams (or GRO buffers) read per system call at most.
const BATCH: usize = 16;

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

/// Receives until cancelled, routing each datagram to its session: batches of datagrams per
/// system call (`recvmmsg`, and UDP GRO where the kernel coalesces), through `quinn-udp`.
pub(crate) async fn receive(mux: UdpMux, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let socket = Arc::clone(mux.socket());
    let state = match quinn_udp::UdpSocketState::new((&*socket).into()) {
        Ok(state) => state,
        Err(err) => {
            tracing::warn!(%err, "batched receive unavailable; one datagram per call");
            return receive_one_by_one(mux, metrics, cancel).await;
        }
    };
    // A GRO buffer holds up to 64 datagrams of one flow: room for the largest UDP payload.
    let slot = if state.gro_segments() > 1 {
        usize::from(u16::MAX)
    } else {
        MAX_DATAGRAM
    };
    let mut buf = vec![0u8; slot * BATCH];
    let mut meta = [quinn_udp::RecvMeta::default(); BATCH];
    let mut pool = BytesMut::with_capacity(POOL_CHUNK);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            ready = socket.readable() => if let Err(err) = ready {
                tracing::warn!(%err, "media socket");
                return;
            },
        }
        // Drain what is queued, then wait for readiness again.
        loop {
            let received = {
                let mut chunks = buf.chunks_mut(slot);
                let mut slices: [IoSliceMut<'_>; BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
                socket.try_io(Interest::READABLE, || {
                    state.recv((&*socket).into(), &mut slices, &mut meta)
                })
            };
            let n = match received {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    // ICMP errors surface here on some platforms; they concern one peer.
                    tracing::debug!(%err, "media socket receive error");
                    break;
                }
            };
            let now = Instant::now();
            for (i, m) in meta.iter().take(n).enumerate() {
                let data = &buf[i * slot..i * slot + m.len.min(slot)];
                for datagram in data.chunks(m.stride.max(1)) {
                    route(&mux, &metrics, datagram, m.addr, now, &mut pool);
                }
            }
        }
    }
}

/// The receive loop without batching, where `quinn-udp` cannot set the socket up.
async fn receive_one_by_one(mux: UdpMux, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let socket = Arc::clone(mux.socket());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut pool = BytesMut::with_capacity(POOL_CHUNK);
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    tracing::debug!(%err, "media socket receive error");
                    continue;
                }
            },
        };
        route(&mux, &metrics, &buf[..n], from, Instant::now(), &mut pool);
    }
}

fn route(
    mux: &UdpMux,
    metrics: &Metrics,
    datagram: &[u8],
    from: SocketAddr,
    now: Instant,
    pool: &mut BytesMut,
) {
    if pool.capacity() - pool.len() < datagram.len() {
        *pool = BytesMut::with_capacity(POOL_CHUNK);
    }
    if let Err(reason) = mux.dispatch(datagram, from, now, pool) {
        metrics.media_drop("udp", reason.as_str());
    }
}
