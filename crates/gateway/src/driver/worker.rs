//! Media workers: one per core, each with its own socket on the media port (`SO_REUSEPORT`).
//!
//! The kernel keeps each publisher address on one socket of the group, so a session's
//! datagrams reach one worker, which drives the session directly: batches of datagrams per
//! system call (`recvmmsg`, and GRO where the kernel coalesces), each run of a session's
//! datagrams fed under one uncontended lock, then the timers that fell due, then the forwarded
//! packets in one `sendmmsg`. Timers never wait behind a flood: they run after every batch.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::IoSliceMut;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prometheus::IntCounter;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::ForwardBatch;
use super::cell::{self, Cell};
use super::forward::ForwardSockets;
use super::mux::{Datagram, UdpMux};
use super::setup::Setup;
use crate::metrics::Metrics;
use whipgate_media::ice_auth::DropReason;

/// Largest datagram read from the media port (larger ones are truncated and fail to parse).
const MAX_DATAGRAM: usize = 2048;
/// Bytes of received datagrams packed into one allocation: the per-datagram buffers are
/// slices of it (reference counted), so the receive path allocates about once per
/// `POOL_CHUNK / size` datagrams instead of once per datagram.
const POOL_CHUNK: usize = 64 * 1024;
/// Datagrams (or GRO buffers) read per system call at most.
const BATCH: usize = 32;
/// Receive batches handled before the worker lets other tasks of its thread run.
const ROUNDS_BEFORE_YIELD: usize = 64;
/// Sessions handed to a worker's timer queue from outside and not yet taken.
const SCHEDULE_QUEUE: usize = 4096;

/// Hands sessions' timers to a worker.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    tx: mpsc::Sender<Arc<Cell>>,
}

impl WorkerHandle {
    /// Asks the worker to queue the session's timer entry. A full queue drops the request:
    /// the session's housekeeping runs overdue timers (`Session::check_limits`).
    pub(crate) fn schedule(&self, cell: Arc<Cell>) {
        let _ = self.tx.try_send(cell);
    }
}

/// A timer entry: a session's deadline. Weak, so that a closed session is freed at once.
struct Due {
    at: Instant,
    cell: Weak<Cell>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// One worker: its socket, its timers, its send batch.
pub(crate) struct Worker {
    socket: Arc<UdpSocket>,
    mux: UdpMux,
    metrics: Arc<Metrics>,
    timers: BinaryHeap<Due>,
    schedule: mpsc::Receiver<Arc<Cell>>,
    batch: ForwardBatch,
    /// Datagrams this worker received.
    received: IntCounter,
}

impl Worker {
    /// A worker on `socket` and the handle that gives it timers.
    pub(crate) fn new(
        index: usize,
        socket: Arc<UdpSocket>,
        mux: UdpMux,
        sockets: ForwardSockets,
        metrics: Arc<Metrics>,
    ) -> (Self, WorkerHandle) {
        let (tx, schedule) = mpsc::channel(SCHEDULE_QUEUE);
        let worker = Worker {
            socket,
            mux,
            batch: ForwardBatch::new(sockets, &metrics),
            received: metrics
                .media_worker_datagrams
                .with_label_values(&[index.to_string().as_str()]),
            metrics,
            timers: BinaryHeap::new(),
            schedule,
        };
        (worker, WorkerHandle { tx })
    }

    /// Receives, drives sessions and runs their timers until cancelled; sessions still
    /// setting up go to `setup`.
    pub(crate) async fn run(mut self, setup: Setup, cancel: CancellationToken) {
        let socket = Arc::clone(&self.socket);
        let state = match quinn_udp::UdpSocketState::new((&*socket).into()) {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(%err, "batched receive unavailable on the media socket");
                return;
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
            let next = self
                .timers
                .peek()
                .map(|d| d.at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                Some(cell) = self.schedule.recv() => self.adopt(&cell),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
                ready = socket.readable() => {
                    if let Err(err) = ready {
                        tracing::warn!(%err, "media socket");
                        return;
                    }
                    for _ in 0..ROUNDS_BEFORE_YIELD {
                        let received = {
                            let mut chunks = buf.chunks_mut(slot);
                            let mut slices: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                                IoSliceMut::new(chunks.next().unwrap_or_default())
                            });
                            socket.try_io(Interest::READABLE, || {
                                state.recv((&*socket).into(), &mut slices, &mut meta)
                            })
                        };
                        let n = match received {
                            Ok(n) => n,
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(err) => {
                                // ICMP errors surface here on some platforms; they concern
                                // one peer.
                                tracing::debug!(%err, "media socket receive error");
                                break;
                            }
                        };
                        let datagrams = meta.iter().take(n).enumerate().flat_map(|(i, m)| {
                            buf[i * slot..i * slot + m.len.min(slot)]
                                .chunks(m.stride.max(1))
                                .map(move |d| (d, m.addr))
                        });
                        self.handle(datagrams, &mut pool, &setup);
                        self.run_timers(&setup);
                        self.batch.flush();
                    }
                }
            }
            self.run_timers(&setup);
            self.batch.flush();
        }
    }

    /// Routes a batch of datagrams and drives each session on its run of them.
    fn handle<'a>(
        &mut self,
        datagrams: impl Iterator<Item = (&'a [u8], std::net::SocketAddr)>,
        pool: &mut BytesMut,
        setup: &Setup,
    ) {
        let now = Instant::now();
        let mut current: Option<Arc<Cell>> = None;
        let mut fed = Vec::with_capacity(BATCH);
        let mut count = 0;
        for (data, from) in datagrams {
            count += 1;
            let cell = match self.mux.router().dispatch(data, from, now) {
                Ok(cell) => cell,
                Err(reason) => {
                    self.metrics.media_drop("udp", reason.as_str());
                    continue;
                }
            };
            if pool.capacity() - pool.len() < data.len() {
                *pool = BytesMut::with_capacity(POOL_CHUNK);
            }
            pool.extend_from_slice(data);
            let datagram = Datagram {
                data: pool.split(),
                from,
                at: now,
                tcp: false,
            };
            // Consecutive datagrams of one session (a GRO buffer, a frame's packets) are fed
            // under one lock and handled together.
            if current.as_ref().is_some_and(|c| !Arc::ptr_eq(c, &cell)) {
                self.finish(current.take(), &mut fed, setup);
            }
            current = Some(cell);
            fed.push(datagram);
        }
        self.finish(current, &mut fed, setup);
        self.received.inc_by(count);
    }

    /// Feeds a session the datagrams routed to it and handles what they produced; a session
    /// that is not connected yet gets them on a setup thread instead.
    fn finish(&mut self, cell: Option<Arc<Cell>>, fed: &mut Vec<Datagram>, setup: &Setup) {
        let Some(cell) = cell else { return };
        if cell.setting_up() {
            for datagram in fed.drain(..) {
                if !setup.submit(Arc::clone(&cell), datagram) {
                    self.metrics
                        .media_drop("udp", DropReason::SetupBusy.as_str());
                }
            }
            return;
        }
        let mut live = cell.lock();
        for datagram in fed.drain(..) {
            live.input(datagram);
        }
        let next = live.after_input(&mut self.batch);
        cell::finished_input(&cell, &live);
        drop(live);
        if let Some(at) = next {
            self.timers.push(Due {
                at,
                cell: Arc::downgrade(&cell),
            });
        }
    }

    /// Queues the timer entry a session was handed from outside a worker.
    fn adopt(&mut self, cell: &Arc<Cell>) {
        if let Some(at) = cell.lock().timer() {
            self.timers.push(Due {
                at,
                cell: Arc::downgrade(cell),
            });
        }
    }

    /// Runs every timer that is due; those of sessions still setting up run on a setup thread
    /// (which may hold their lock for a while).
    fn run_timers(&mut self, setup: &Setup) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|d| d.at <= now) {
            let Some(due) = self.timers.pop() else { break };
            let Some(cell) = due.cell.upgrade() else {
                continue;
            };
            if cell.setting_up() && setup.submit_timer(Arc::clone(&cell), due.at) {
                continue;
            }
            let mut live = cell.lock();
            let next = live.on_timer(due.at, now, &mut self.batch);
            cell::finished_input(&cell, &live);
            let closed = live.is_closed();
            drop(live);
            if let Some(at) = next.filter(|_| !closed) {
                self.timers.push(Due {
                    at,
                    cell: Arc::downgrade(&cell),
                });
            }
        }
    }
}
