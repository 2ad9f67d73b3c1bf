//! A publisher's outgoing datagrams. What one service of a publisher produces (a frame's
//! packets, an audio packet, DTLS or STUN) is collected and leaves in as few system calls as
//! the kernel allows: one `sendmmsg` per destination (each datagram still its own UDP packet,
//! as browsers send), or, with `--gso`, segmented sends. Once the publisher is connected its
//! socket is `connect`ed to the gateway, so the kernel reuses the route (no lookup and no
//! shared IP-ID state per packet).

use std::net::{SocketAddr, UdpSocket};

use bytes::Bytes;

use super::gso::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS, send_batch};
use super::publisher::Tally;

/// Datagrams per `sendmmsg` at most (a keyframe is about a dozen).
const MAX_BATCH: usize = 32;

/// Datagrams waiting to be sent, all to one destination.
#[derive(Default)]
pub(super) struct Outbox {
    pending: Vec<Bytes>,
    to: Option<SocketAddr>,
    /// The address the socket is connected to, if any.
    connected: Option<SocketAddr>,
    /// Whether connecting was tried (once is enough).
    connect_tried: bool,
    /// Segmented sends (UDP GSO) through `quinn-udp`, where the kernel has them.
    gso: Option<quinn_udp::UdpSocketState>,
    /// The datagrams of one segmented send, packed.
    gso_buf: Vec<u8>,
}

impl Outbox {
    /// An outbox sending one datagram per packet, or (`gso`) segmented sends.
    pub(super) fn new(gso: Option<quinn_udp::UdpSocketState>) -> Outbox {
        Outbox {
            gso,
            ..Default::default()
        }
    }

    /// Connects the socket to `to` (once): later sends there skip the route lookup.
    pub(super) fn connect(&mut self, socket: &UdpSocket, to: SocketAddr) {
        if self.connect_tried {
            return;
        }
        self.connect_tried = true;
        #[cfg(target_os = "linux")]
        if rustix::net::connect(socket, &to).is_ok() {
            self.connected = Some(to);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (socket, to);
    }

    /// Whether [`Outbox::connect`] has been called.
    pub(super) fn connect_tried(&self) -> bool {
        self.connect_tried
    }

    /// Queues one datagram; sends what is queued first if it goes elsewhere.
    pub(super) fn push(
        &mut self,
        socket: &UdpSocket,
        to: SocketAddr,
        datagram: Bytes,
        tally: &mut Tally,
    ) {
        if self.to != Some(to) || self.pending.len() >= MAX_BATCH {
            self.flush(socket, tally);
        }
        self.to = Some(to);
        self.pending.push(datagram);
    }

    /// Sends everything queued; a datagram the kernel does not take counts as a send error.
    pub(super) fn flush(&mut self, socket: &UdpSocket, tally: &mut Tally) {
        let Some(to) = self.to else {
            self.pending.clear();
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        if self.gso.is_some() {
            self.flush_gso(socket, to, tally);
        } else {
            let mut sent = 0;
            while sent < self.pending.len() {
                match send_many(
                    socket,
                    self.connected == Some(to),
                    to,
                    &self.pending[sent..],
                ) {
                    Some(n) if n > 0 => sent += n,
                    _ => break,
                }
            }
            tally.send_errors += (self.pending.len() - sent) as u64;
        }
        self.pending.clear();
    }

    /// Packs the queue into segmented sends: equal sizes, only the last of a send shorter.
    fn flush_gso(&mut self, socket: &UdpSocket, to: SocketAddr, tally: &mut Tally) {
        let max_segments = self
            .gso
            .as_ref()
            .map_or(1, |s| s.max_gso_segments().min(MAX_GSO_SEGMENTS));
        let mut batch = std::mem::take(&mut self.gso_buf);
        batch.clear();
        let (mut segment, mut count, mut closed) = (0, 0, false);
        for datagram in &self.pending {
            let len = datagram.len();
            let fits = count > 0
                && !closed
                && len <= segment
                && count < max_segments
                && batch.len() + len <= MAX_GSO_BYTES;
            if count > 0 && !fits {
                send_batch(
                    socket,
                    self.gso.as_ref(),
                    &batch,
                    segment,
                    count,
                    Some(to),
                    tally,
                );
                batch.clear();
                count = 0;
            }
            if count == 0 {
                (segment, closed) = (len, false);
            } else if len < segment {
                closed = true;
            }
            batch.extend_from_slice(datagram);
            count += 1;
        }
        if count > 0 {
            send_batch(
                socket,
                self.gso.as_ref(),
                &batch,
                segment,
                count,
                Some(to),
                tally,
            );
        }
        self.gso_buf = batch;
    }
}

/// One `sendmmsg` of `datagrams` (without an address when the socket is connected to `to`):
/// how many the kernel took, `None` on an error.
#[cfg(target_os = "linux")]
fn send_many(
    socket: &UdpSocket,
    connected: bool,
    to: SocketAddr,
    datagrams: &[Bytes],
) -> Option<usize> {
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
    use std::io::IoSlice;

    let n = datagrams.len().min(MAX_BATCH);
    let iovs: Vec<[IoSlice<'_>; 1]> = datagrams[..n].iter().map(|d| [IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        (0..n).map(|_| SendAncillaryBuffer::default()).collect();
    let addr = to.as_any();
    let mut headers: Vec<MMsgHdr<'_>> = iovs
        .iter()
        .zip(controls.iter_mut())
        .map(|(iov, control)| {
            if connected {
                MMsgHdr::new(iov, control)
            } else {
                MMsgHdr::new_with_addr(&addr, iov, control)
            }
        })
        .collect();
    sendmmsg(
        socket,
        &mut headers,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )
    .ok()
}

#[cfg(not(target_os = "linux"))]
fn send_many(
    socket: &UdpSocket,
    _connected: bool,
    to: SocketAddr,
    datagrams: &[Bytes],
) -> Option<usize> {
    let first = datagrams.first()?;
    socket.try_send_to(first, to).ok().map(|_| 1)
}
