//! ICE-TCP (RFC 6544, passive) on one TCP port, for publishers whose networks block UDP.
//!
//! Each connection carries RFC 4571 frames. Its first frame must be a STUN binding request,
//! whose ufrag names the session (as on the UDP port); from then on the connection belongs to
//! that session, and the session's replies go back through it. Connections that name no
//! session in time are closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::shared::tcp_framing::TcpFrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::mux::{Datagram, Sink, UdpMux};
use crate::metrics::Metrics;

/// A connection must name its session this soon.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest buffered, not yet framed input per connection.
const MAX_BUFFERED: usize = 256 * 1024;

/// Accepts ICE-TCP connections until cancelled.
pub(crate) async fn accept(
    listener: TcpListener,
    mux: UdpMux,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    tracing::debug!(%err, "ICE-TCP accept");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("ice_tcp", %peer);
        tracker.spawn(
            connection(
                stream,
                peer,
                mux.clone(),
                Arc::clone(&metrics),
                cancel.clone(),
            )
            .instrument(span),
        );
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mux: UdpMux,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut outbound) = mpsc::channel::<Bytes>(256);
    let mut tx = Some(tx);
    let mut sink: Option<Sink> = None;
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = vec![0u8; 4096];
    let claim_deadline = tokio::time::Instant::now() + CLAIM_TIMEOUT;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(claim_deadline), if sink.is_none() => break,
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                decoder.extend_from_slice(&buf[..n]);
                if decoder.buffered_len() > MAX_BUFFERED {
                    break;
                }
                while let Some(frame) = decoder.next_packet() {
                    if sink.is_none() {
                        let Some(writer_tx) = tx.take() else { break };
                        sink = mux.claim_tcp(&frame, peer, writer_tx);
                        if sink.is_none() {
                            metrics.udp_unmatched.inc();
                            return;
                        }
                    }
                    let Some(target) = &sink else { break };
                    let datagram = Datagram { data: BytesMut::from(&frame[..]), from: peer, at: Instant::now(), tcp: true };
                    if target.tx.try_send(datagram).is_err() {
                        metrics.udp_queue_drops.inc();
                    }
                }
            }
            // `None` once the session is gone (its route dropped our sender): close.
            out = outbound.recv(), if sink.is_some() => match out {
                Some(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = writer.shutdown().await;
}
