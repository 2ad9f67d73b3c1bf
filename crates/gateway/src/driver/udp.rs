//! The media port's sockets: one per worker in a `SO_REUSEPORT` group on the one port, bound
//! with kernel buffers sized for bursts.
//!
//! Every publisher's frame packets tend to arrive together; with the kernel's default receive
//! buffer (about 200 KiB) a few hundred publishers overflow it before the receive task runs
//! again, and the kernel drops datagrams while the CPU is idle. The buffers are sized like QUIC
//! and pion stacks do, the effective size is logged, and a cap by `net.core.rmem_max` is
//! reported (as root, `SO_RCVBUFFORCE` lifts it).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Binds `count` sockets on one port (the port of `addr`, or the one the first bind got),
/// each with `buffer` bytes of kernel receive and send buffer (0 keeps the kernel's default).
/// The kernel spreads publishers over them by address, and keeps each address on one socket.
pub(crate) fn bind_group(
    addr: SocketAddr,
    buffer: usize,
    count: usize,
) -> std::io::Result<Vec<UdpSocket>> {
    let first = bind(addr, buffer, count > 1)?;
    let bound = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(bind(bound, buffer, true)?);
    }
    Ok(group)
}

/// Binds one media socket.
fn bind(addr: SocketAddr, buffer: usize, reuse_port: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Only sockets of the same user may join the group (Linux checks the effective uid).
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
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
