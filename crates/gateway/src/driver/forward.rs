//! The sockets forwarded media leaves by (one per address family, with UDP GSO where the
//! kernel offers it). The session rewrites each packet into the ingest's output stream
//! (`whipgate_media::session`, `Output::Forward`); the driver marshals it into the worker's
//! send batch (`batch`): no re-encoding and no per-packet allocation.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

/// Sockets used to send forwarded media (one per address family), with their UDP GSO state
/// where the kernel offers segmentation offload.
#[derive(Clone)]
pub(crate) struct ForwardSockets {
    pub(crate) v4: Arc<UdpSocket>,
    pub(crate) v6: Option<Arc<UdpSocket>>,
    pub(crate) gso4: Option<Arc<quinn_udp::UdpSocketState>>,
    pub(crate) gso6: Option<Arc<quinn_udp::UdpSocketState>>,
}

impl ForwardSockets {
    pub(crate) async fn bind() -> std::io::Result<Self> {
        let v4 = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
        let v6 = UdpSocket::bind(SocketAddr::from(([0u16; 8], 0))).await.ok();
        Ok(Self::new(v4, v6))
    }

    /// Wraps bound sockets.
    pub(crate) fn new(v4: UdpSocket, v6: Option<UdpSocket>) -> Self {
        let gso = |socket: &UdpSocket| {
            quinn_udp::UdpSocketState::new(socket.into())
                .ok()
                .filter(|state| state.max_gso_segments() > 1)
                .map(Arc::new)
        };
        ForwardSockets {
            gso4: gso(&v4),
            gso6: v6.as_ref().and_then(gso),
            v4: Arc::new(v4),
            v6: v6.map(Arc::new),
        }
    }

    pub(crate) fn for_addr(&self, addr: SocketAddr) -> Option<&Arc<UdpSocket>> {
        if addr.is_ipv4() {
            Some(&self.v4)
        } else {
            self.v6.as_ref()
        }
    }
}
