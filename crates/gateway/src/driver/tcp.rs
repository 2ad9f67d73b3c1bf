//! ICE-TCP (RFC 6544, passive) on one TCP port, for publishers whose networks block UDP.
//!
//! Each connection carries RFC 4571 frames, none larger than a UDP datagram could be. Its first
//! frame must be a STUN binding request that verifies with a session's credential (as on the
//! UDP port); only then does the connection belong to that session, and the session's replies
//! go back through it. Everything an outsider can open is bounded: connections in total and per
//! client (IPv4 address, IPv6 /64), time to authenticate, idle time, time to write, and frame size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use super::batch::ForwardBatch;
use super::cell::Cell;
use super::forward::ForwardSockets;
use super::mux::{Datagram, UdpMux};
use super::setup::Setup;
use crate::metrics::Metrics;
use crate::net::client::Slots;
use whipgate_media::ice_auth::DropReason;

/// A connection must authenticate this soon.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with nothing received for this long is closed (consent checks come every
/// few seconds, media more often).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that does not complete this soon closes the connection (a peer that stops reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame accepted: what fits a UDP datagram on an Ethernet path.
pub(crate) const MAX_FRAME: usize = 1500;
/// Open ICE-TCP connections at most.
const MAX_CONNECTIONS: usize = 1024;
/// Open ICE-TCP connections per client (IPv4 address, IPv6 /64) at most.
const MAX_PER_CLIENT: usize = 16;
/// Frames queued for writing per connection before they are dropped (like UDP would).
const WRITE_QUEUE: usize = 256;

/// Accepts ICE-TCP connections until cancelled.
pub(crate) async fn accept(
    listener: TcpListener,
    mux: UdpMux,
    sockets: ForwardSockets,
    setup: Setup,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_CLIENT);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::ZERO;
                    a
                }
                Err(err) => {
                    // Out of file descriptors (EMFILE) and the like persist: back off instead
                    // of spinning on an accept that keeps failing.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    tracing::warn!(%err, ?backoff, "ICE-TCP accept");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.take(peer.ip()) else {
            metrics.media_drop("tcp", DropReason::ConnectionLimit.as_str());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("ice_tcp", %peer);
        let connection = Connection {
            peer,
            mux: mux.clone(),
            sockets: sockets.clone(),
            setup: setup.clone(),
            metrics: Arc::clone(&metrics),
        };
        let cancel = cancel.clone();
        tracker.spawn(
            async move {
                connection.run(stream, cancel).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

struct Connection {
    sockets: ForwardSockets,
    setup: Setup,
    peer: SocketAddr,
    mux: UdpMux,
    metrics: Arc<Metrics>,
}

impl Connection {
    async fn run(&self, stream: TcpStream, cancel: CancellationToken) {
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut outbound) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let mut tx = Some(tx);
        let mut owner: Option<(Uuid, Arc<Cell>)> = None;
        let mut input = BytesMut::with_capacity(4096);
        let mut batch = ForwardBatch::new(self.sockets.clone(), &self.metrics);
        let mut deadline = tokio::time::Instant::now() + CLAIM_TIMEOUT;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(deadline) => break,
                read = reader.read_buf(&mut input) => {
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if let Err(reason) = self.frames(&mut input, &mut owner, &mut tx, &mut batch) {
                        self.metrics.media_drop("tcp", reason.as_str());
                        break;
                    }
                    if owner.is_some() {
                        deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                    }
                }
                // `None` once the session is gone (its route dropped our sender): close.
                out = outbound.recv(), if owner.is_some() => match out {
                    Some(bytes) => {
                        let write = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&bytes));
                        if !matches!(write.await, Ok(Ok(()))) {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        if owner.is_some() {
            self.mux.router().release_tcp(self.peer);
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
    }

    /// Delivers every complete frame in `input`. The first must authenticate the connection;
    /// an error closes it.
    fn frames(
        &self,
        input: &mut BytesMut,
        owner: &mut Option<(Uuid, Arc<Cell>)>,
        writer: &mut Option<mpsc::Sender<Bytes>>,
        batch: &mut ForwardBatch,
    ) -> Result<(), DropReason> {
        while let Some(frame) = next_frame(input)? {
            match owner {
                None => {
                    let tx = writer.take().ok_or(DropReason::Unmatched)?;
                    *owner = Some(self.mux.router().claim_tcp(&frame, self.peer, tx)?);
                }
                Some((session, _)) => {
                    if let Err(reason) = self.mux.router().check_tcp(&frame, *session) {
                        // A bad check on an authenticated connection is dropped, not fatal.
                        self.metrics.media_drop("tcp", reason.as_str());
                        continue;
                    }
                }
            }
            let Some((_, cell)) = owner else { continue };
            let datagram = Datagram {
                data: frame,
                from: self.peer,
                at: Instant::now(),
                tcp: true,
            };
            // Handshakes run on the setup threads, as for UDP (this is a tokio thread).
            if !cell.setting_up() {
                cell.outside(batch, |live, _| live.input(datagram));
            } else if !self.setup.submit(Arc::clone(cell), datagram) {
                self.metrics
                    .media_drop("tcp", DropReason::SetupBusy.as_str());
            }
        }
        Ok(())
    }
}

/// The next complete RFC 4571 frame (2-byte length, then the packet), without copying; `None`
/// until one is complete; `Oversize` for a length no UDP datagram would have.
fn next_frame(input: &mut BytesMut) -> Result<Option<BytesMut>, DropReason> {
    let Some(header) = input.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
    if len > MAX_FRAME {
        return Err(DropReason::Oversize);
    }
    if input.len() < 2 + len {
        return Ok(None);
    }
    input.advance(2);
    Ok(Some(input.split_to(len)))
}

#[cfg(test)]
mod tests;
