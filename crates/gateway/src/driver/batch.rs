//! Forwarded RTP leaves in batches: the packets that one batch of received datagrams produces
//! are marshalled into one reused buffer and handed to the kernel together, instead of one
//! `sendto` per packet. A run of equal-sized packets to one target (a video frame's packets)
//! goes as one UDP GSO send (the kernel or the NIC cuts it into datagrams); the rest go with
//! one `sendmmsg`. Order per target is kept.

use std::net::SocketAddr;

use rtc::shared::marshal::{Marshal, MarshalSize};
use whipgate_media::codec::MediaKind;
use whipgate_media::session::{Forward, Forwarded};

use super::forward::ForwardSockets;
use crate::metrics::{KindCounters, Metrics};

/// Packets queued before the batch sends on its own (the kernel takes up to 1024 per call).
const MAX_PACKETS: usize = 64;
/// Bytes of one GSO send at most (one UDP datagram's worth, before segmentation).
const MAX_GSO_BYTES: usize = 60_000;

/// One queued packet: a range of the batch's buffer and where it goes.
struct Queued {
    to: SocketAddr,
    start: usize,
    len: usize,
    video: bool,
}

/// Packets to forward, sent together on `flush`.
pub(crate) struct ForwardBatch {
    sockets: ForwardSockets,
    buf: Vec<u8>,
    queued: Vec<Queued>,
    /// Counters per kind: video, audio.
    counters: [KindCounters; 2],
}

impl ForwardBatch {
    pub(crate) fn new(sockets: ForwardSockets, metrics: &Metrics) -> Self {
        ForwardBatch {
            sockets,
            buf: Vec::new(),
            queued: Vec::new(),
            counters: [
                metrics.kind(MediaKind::Video),
                metrics.kind(MediaKind::Audio),
            ],
        }
    }

    /// Queues a session's forwarded RTP (marshalled straight into the batch's buffer) and
    /// counts it; sends its RTCP at once (a few per second).
    pub(crate) fn forward(&mut self, forward: Forward) {
        let Forward { kind, to, packet } = forward;
        match packet {
            Forwarded::Rtp(packet) => {
                let queued = self.push(to, kind, packet.marshal_size(), |buf| {
                    packet
                        .marshal_to(buf)
                        .map_err(|err| tracing::debug!(%err, "marshalling RTP"))
                        .ok()
                });
                let counters = &self.counters[usize::from(kind == MediaKind::Audio)];
                match queued {
                    Some(n) => {
                        counters.packets_forwarded.inc();
                        counters.bytes_forwarded.inc_by(n as u64);
                    }
                    None => counters.forward_errors.inc(),
                }
            }
            Forwarded::Rtcp(bytes) => {
                if let Some(socket) = self.sockets.for_addr(to) {
                    let _ = socket.try_send_to(&bytes, to);
                }
            }
        }
    }

    /// Queues one packet of at most `size` bytes, written by `write` (which returns the bytes
    /// it wrote, or `None` to queue nothing). Sends what is queued first when the batch is
    /// full. Returns the bytes queued.
    pub(crate) fn push(
        &mut self,
        to: SocketAddr,
        kind: MediaKind,
        size: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        if self.queued.len() >= MAX_PACKETS {
            self.flush();
        }
        let start = self.buf.len();
        self.buf.resize(start + size, 0);
        let Some(len) = write(&mut self.buf[start..]).filter(|n| *n <= size) else {
            self.buf.truncate(start);
            return None;
        };
        self.buf.truncate(start + len);
        self.queued.push(Queued {
            to,
            start,
            len,
            video: kind == MediaKind::Video,
        });
        Some(len)
    }

    /// Sends everything queued. A packet the kernel refuses (send buffer full, unreachable
    /// target) is dropped and counted, as UDP would.
    pub(crate) fn flush(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        for v4 in [true, false] {
            let packets: Vec<&Queued> = self
                .queued
                .iter()
                .filter(|q| q.to.is_ipv4() == v4)
                .collect();
            if packets.is_empty() {
                continue;
            }
            let (socket, gso) = if v4 {
                (Some(&self.sockets.v4), self.sockets.gso4.as_deref())
            } else {
                (self.sockets.v6.as_ref(), self.sockets.gso6.as_deref())
            };
            let counters = &self.counters;
            let mut failed = |q: &Queued| counters[usize::from(!q.video)].forward_errors.inc();
            let Some(socket) = socket else {
                packets.iter().for_each(|q| failed(q));
                continue;
            };
            let max_segments = gso.map_or(1, |g| g.max_gso_segments());
            let mut singles: Vec<&Queued> = Vec::new();
            let mut i = 0;
            while i < packets.len() {
                let end = gso_run(&packets[i..], max_segments) + i;
                match gso {
                    Some(gso) if end - i > 1 => {
                        // Earlier packets to this target must leave first.
                        send_all(socket, &self.buf, &singles, &mut failed);
                        singles.clear();
                        let (first, last) = (packets[i], packets[end - 1]);
                        let transmit = quinn_udp::Transmit {
                            destination: first.to,
                            ecn: None,
                            contents: &self.buf[first.start..last.start + last.len],
                            segment_size: Some(first.len),
                            src_ip: None,
                        };
                        if let Err(err) = gso.try_send(socket.as_ref().into(), &transmit) {
                            tracing::debug!(%err, to = %first.to, "forwarding (GSO)");
                            packets[i..end].iter().for_each(|q| failed(q));
                        }
                    }
                    _ => singles.extend(&packets[i..end]),
                }
                i = end;
            }
            send_all(socket, &self.buf, &singles, &mut failed);
        }
        self.queued.clear();
        self.buf.clear();
    }
}

/// How many of `packets` (at least one) form a run one GSO send can carry: same target,
/// adjacent in the buffer, every one but the last of the first one's size, the last no larger.
fn gso_run(packets: &[&Queued], max_segments: usize) -> usize {
    let Some(first) = packets.first() else {
        return 0;
    };
    let mut total = first.len;
    let mut n = 1;
    while let Some(next) = packets.get(n) {
        let previous = packets[n - 1];
        let fits = next.to == first.to
            && previous.len == first.len
            && next.len <= first.len
            && next.start == previous.start + previous.len
            && n < max_segments
            && total + next.len <= MAX_GSO_BYTES;
        if !fits {
            break;
        }
        total += next.len;
        n += 1;
    }
    n
}

/// Sends `packets` in as few system calls as the kernel allows; `failed` sees each one it
/// refused.
#[cfg(target_os = "linux")]
fn send_all(
    socket: &tokio::net::UdpSocket,
    buf: &[u8],
    packets: &[&Queued],
    failed: &mut impl FnMut(&Queued),
) {
    if packets.is_empty() {
        return;
    }
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    use std::io::IoSlice;

    let addrs: Vec<SocketAddrAny> = packets.iter().map(|q| q.to.as_any()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = packets
        .iter()
        .map(|q| [IoSlice::new(&buf[q.start..q.start + q.len])])
        .collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = packets
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    let mut next = 0;
    while next < msgs.len() {
        match rustix::net::sendmmsg(socket, &mut msgs[next..], SendFlags::DONTWAIT) {
            Ok(0) => break,
            Ok(n) => next += n,
            Err(rustix::io::Errno::INTR) => {}
            // The send buffer is full: the rest is dropped, as one `sendto` would.
            Err(rustix::io::Errno::AGAIN) => break,
            // The message at `next` was refused (its target's ICMP error, a bad address):
            // skip it, send the rest.
            Err(err) => {
                tracing::debug!(%err, to = %packets[next].to, "forwarding");
                failed(packets[next]);
                next += 1;
            }
        }
    }
    packets[next..].iter().for_each(|q| failed(q));
}

#[cfg(not(target_os = "linux"))]
fn send_all(
    socket: &tokio::net::UdpSocket,
    buf: &[u8],
    packets: &[&Queued],
    failed: &mut impl FnMut(&Queued),
) {
    for q in packets {
        if socket
            .try_send_to(&buf[q.start..q.start + q.len], q.to)
            .is_err()
        {
            failed(q);
        }
    }
}

#[cfg(test)]
mod tests;
