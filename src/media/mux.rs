//! The one UDP socket every WebRTC session shares.
//!
//! A datagram goes to the session that owns its source address. A STUN binding request is
//! routed by the local ufrag in its USERNAME (`<our ufrag>:<their ufrag>`), and its source
//! address is bound to that session, so the first connectivity check teaches the mux where
//! later DTLS/SRTP from that address belongs (the pattern of str0m's chat example and
//! webrtc-rs's sfu example).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, Message, is_stun_message};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Largest datagram read from the media port.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams queued per session before the mux drops (a stuck session must not stall others).
const SESSION_QUEUE: usize = 1024;

/// One datagram (or one RFC 4571 frame of an ICE-TCP connection) for a session.
pub(crate) struct Datagram {
    pub(crate) data: BytesMut,
    pub(crate) from: SocketAddr,
    pub(crate) at: Instant,
    /// Arrived over ICE-TCP rather than the UDP port.
    pub(crate) tcp: bool,
}

#[derive(Clone)]
pub(crate) struct Sink {
    session: Uuid,
    pub(crate) tx: mpsc::Sender<Datagram>,
}

/// Where a session's output for an ICE-TCP peer goes (the connection's writer).
struct TcpWriter {
    session: Uuid,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct Table {
    by_ufrag: HashMap<String, Sink>,
    by_addr: HashMap<SocketAddr, Sink>,
    tcp_writers: HashMap<SocketAddr, TcpWriter>,
}

/// The shared media socket and its routing table.
#[derive(Clone)]
pub(crate) struct UdpMux {
    socket: Arc<UdpSocket>,
    table: Arc<Mutex<Table>>,
}

/// Removes a session's routes when dropped.
pub(crate) struct Route {
    mux: UdpMux,
    session: Uuid,
}

impl Drop for Route {
    fn drop(&mut self) {
        let mut table = self.mux.lock();
        table
            .by_ufrag
            .retain(|_, sink| sink.session != self.session);
        table.by_addr.retain(|_, sink| sink.session != self.session);
        // Dropping a writer's sender closes its ICE-TCP connection.
        table.tcp_writers.retain(|_, w| w.session != self.session);
    }
}

impl UdpMux {
    pub(crate) fn new(socket: UdpSocket) -> Self {
        UdpMux {
            socket: Arc::new(socket),
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket, for sending.
    pub(crate) fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// Routes STUN for `ufrag` (and then its addresses) to a new session queue.
    pub(crate) fn route(&self, ufrag: String, session: Uuid) -> (Route, mpsc::Receiver<Datagram>) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        self.lock().by_ufrag.insert(ufrag, Sink { session, tx });
        (
            Route {
                mux: self.clone(),
                session,
            },
            rx,
        )
    }

    /// Routes one more ufrag (after an ICE restart) to an already routed session.
    pub(crate) fn add_ufrag(&self, ufrag: String, session: Uuid) {
        let mut table = self.lock();
        let sink = table
            .by_ufrag
            .values()
            .find(|s| s.session == session)
            .cloned();
        if let Some(sink) = sink {
            table.by_ufrag.insert(ufrag, sink);
        }
    }

    /// Routing entries (ufrags, addresses, ICE-TCP connections): zero when no session lives.
    pub(crate) fn routes(&self) -> usize {
        let table = self.lock();
        table.by_ufrag.len() + table.by_addr.len() + table.tcp_writers.len()
    }

    /// Receives until cancelled, dispatching each datagram.
    pub(crate) async fn run(self, metrics: Arc<Metrics>, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(err) => {
                        // ICMP errors surface here on some platforms; they concern one peer.
                        tracing::debug!(%err, "media socket receive error");
                        continue;
                    }
                },
            };
            let packet = &buf[..n];
            let Some(sink) = self.sink_for(packet, from) else {
                metrics.udp_unmatched.inc();
                continue;
            };
            let datagram = Datagram {
                data: BytesMut::from(packet),
                from,
                at: Instant::now(),
                tcp: false,
            };
            if sink.tx.try_send(datagram).is_err() {
                metrics.udp_queue_drops.inc();
            }
        }
    }

    fn sink_for(&self, packet: &[u8], from: SocketAddr) -> Option<Sink> {
        let ufrag = is_stun_message(packet)
            .then(|| binding_request_ufrag(packet))
            .flatten();
        let mut table = self.lock();
        match ufrag {
            Some(ufrag) => {
                let sink = table.by_ufrag.get(&ufrag)?.clone();
                table.by_addr.insert(from, sink.clone());
                Some(sink)
            }
            None => table.by_addr.get(&from).cloned(),
        }
    }
}

impl UdpMux {
    /// The session an ICE-TCP connection belongs to, from its first frame (a binding
    /// request); registers the connection's writer for the session's replies.
    pub(crate) fn claim_tcp(
        &self,
        first: &[u8],
        peer: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    ) -> Option<Sink> {
        let ufrag = binding_request_ufrag(first)?;
        let mut table = self.lock();
        let sink = table.by_ufrag.get(&ufrag)?.clone();
        table.tcp_writers.insert(
            peer,
            TcpWriter {
                session: sink.session,
                tx: writer,
            },
        );
        Some(sink)
    }

    /// Sends one packet to an ICE-TCP peer, framed (RFC 4571). Drops it if the connection is
    /// gone or backed up, like UDP would.
    pub(crate) fn send_tcp(&self, peer: SocketAddr, packet: &[u8]) {
        let framed = Bytes::from(rtc::shared::tcp_framing::frame_packet(packet));
        let table = self.lock();
        if let Some(writer) = table.tcp_writers.get(&peer) {
            let _ = writer.tx.try_send(framed);
        }
    }
}

/// The local (our) ufrag of a STUN binding request, from `USERNAME = ours:theirs`.
fn binding_request_ufrag(packet: &[u8]) -> Option<String> {
    let mut message = Message::new();
    message.unmarshal_binary(packet).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    username.split(':').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::Setter;
    use rtc::stun::textattrs::TextAttribute;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        let user = TextAttribute::new(ATTR_USERNAME, username.to_owned());
        m.build(&[Box::new(BINDING_REQUEST), Box::new(user) as Box<dyn Setter>])
            .unwrap();
        m.raw.clone()
    }

    #[test]
    fn arbitrary_datagrams_never_panic_the_router() {
        let mut x: u64 = 1;
        let valid = binding_request("abcd:wxyz");
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut packet = valid.clone();
            let at = (x >> 33) as usize % packet.len();
            packet[at] ^= (x >> 13) as u8;
            packet.truncate(((x >> 40) as usize % (packet.len() + 1)).max(1));
            let _ = is_stun_message(&packet).then(|| binding_request_ufrag(&packet));
        }
    }

    #[test]
    fn binding_requests_are_routed_by_our_ufrag() {
        assert_eq!(
            binding_request_ufrag(&binding_request("abcd:wxyz")).as_deref(),
            Some("abcd")
        );
        assert_eq!(binding_request_ufrag(b"\x80\x60not stun"), None);
    }
}
