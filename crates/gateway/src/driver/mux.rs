//! The one UDP socket every WebRTC session shares, with its routing table
//! (`whipgate_media::route`: sessions by ufrag and by authenticated source address) and the
//! writers of the ICE-TCP connections.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use rtc::crypto::RTCCryptoProvider;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use whipgate_media::route::Router;

use super::cell::Cell;

/// One datagram (or one RFC 4571 frame of an ICE-TCP connection) for a session.
pub(crate) use whipgate_media::session::Datagram;

/// An ICE-TCP connection's writer: framed packets for its peer.
pub(crate) type TcpWriter = mpsc::Sender<Bytes>;

/// Removes a session's routes when dropped.
pub(crate) type Route = whipgate_media::route::Route<Arc<Cell>, TcpWriter>;

/// The shared media socket and its routing table (clones share both).
#[derive(Clone)]
pub(crate) struct UdpMux {
    socket: Arc<UdpSocket>,
    router: Router<Arc<Cell>, TcpWriter>,
}

impl UdpMux {
    pub(crate) fn new(socket: Arc<UdpSocket>, crypto: Arc<dyn RTCCryptoProvider>) -> Self {
        UdpMux {
            socket,
            router: Router::new(crypto),
        }
    }

    /// The socket, for sending.
    pub(crate) fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The routing table.
    pub(crate) fn router(&self) -> &Router<Arc<Cell>, TcpWriter> {
        &self.router
    }

    /// Sends one packet to an ICE-TCP peer, framed (RFC 4571). Drops it if the connection is
    /// gone or backed up, like UDP would.
    pub(crate) fn send_tcp(&self, peer: SocketAddr, packet: &[u8]) {
        if let Some(writer) = self.router.tcp_writer(peer) {
            let framed = Bytes::from(rtc::shared::tcp_framing::frame_packet(packet));
            let _ = writer.try_send(framed);
        }
    }
}
