//! The session's driver: the one owner of a session's I/O and timers, as the media workers,
//! setup threads and ICE-TCP connections reach it through its `Cell`, and the control task that
//! owns its life. The session itself (`whipgate_media::session`) is sans-IO.
//!
//! The `Driver` (the session, its registry admission, its way out `Net`, its timer entry) sits
//! behind the cell's lock. After each input it applies the session's output in order: events
//! to the registry, forwarded packets into the send batch, datagrams to the publisher, and the
//! timeout as its timer entry. The worker whose socket receives the
//! publisher's datagrams (the kernel keeps a 4-tuple on one socket of the port's group) takes
//! it per batch of datagrams and drives the session's `rtc` state machine to completion: no
//! channel hop and no task wake-up per packet, and the lock is uncontended. Timers live on the
//! worker that last handled the session's input (`worker`). The control task wakes only for
//! what is rare: commands, caps and statistics a few times a second, and the end.
//!
//! Lock order. A session's lock (`Cell::state`) is the outermost lock of the media path. Held
//! under it, one at a time and never while taking another of them or a second session's lock:
//! the registry's state lock (the driver applying the session's reports: connected, track
//! started, first keyframe, stats), the ingest's `Continuity` (`forward::Forwarder`, per forwarded
//! packet) and the mux's routing table (ICE-TCP sends, an ICE restart's new ufrag). The
//! registry never holds its state lock while it locks a `Continuity` (the checkpointer copies
//! the `Arc`s out first), and the mux never holds its table while it locks a session: it hands
//! the worker the session's `Arc<Cell>` and lets go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::shared::{TaggedBytesMut, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use whipgate_media::session::{Datagram, Input, Output, Session};

use super::batch::ForwardBatch;
use super::forward::ForwardSockets;
use super::mux::{Route, UdpMux};
use super::report;
use super::worker::WorkerHandle;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Admission, IceRestarted, SessionCommand};

/// How often caps, timeouts, simulcast layers and synthesized Sender Reports are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A session shared between the workers, its control task and ICE-TCP connections.
pub(crate) struct Cell {
    state: Mutex<Driver>,
    /// Set when input ended the session (ICE failure, BYE, a cap): the control task closes it.
    ended: Notify,
    /// The worker that takes the session's timer when input arrives outside a worker.
    home: WorkerHandle,
    /// Connected (ICE and DTLS done): read by the workers without the lock, so that a worker
    /// never waits for a setup thread holding it (those run at a lower priority).
    connected: AtomicBool,
}

/// The session and what it is driven with.
pub(crate) struct Driver {
    pub(crate) session: Session,
    /// The registry's side of the session: its id, ingest, and the guard that ends it in the
    /// registry if the driver goes away without ending it.
    admission: Admission,
    /// Where the session's datagrams for the publisher go.
    net: Net,
    /// Deadline of the session's one live timer entry; entries at other instants are stale.
    timer: Option<Instant>,
    /// Closed: workers and timers leave it alone.
    closed: bool,
}

/// The media socket and the mux (for ICE-TCP connections and ICE restarts' routes): the only
/// way out of a session towards its publisher.
pub(crate) struct Net {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) mux: UdpMux,
}

impl Net {
    /// Sends one datagram to the publisher, over UDP or its ICE-TCP connection.
    fn send(&self, out: &TaggedBytesMut) {
        let to = out.transport.peer_addr;
        if out.transport.transport_protocol == TransportProtocol::TCP {
            self.mux.send_tcp(to, &out.message);
        } else if let Err(err) = self.socket.try_send_to(&out.message, to) {
            tracing::debug!(%err, %to, "media socket send");
        }
    }
}

impl Cell {
    pub(crate) fn new(
        session: Session,
        admission: Admission,
        net: Net,
        home: WorkerHandle,
    ) -> Arc<Self> {
        Arc::new(Cell {
            state: Mutex::new(Driver {
                session,
                admission,
                net,
                timer: None,
                closed: false,
            }),
            ended: Notify::new(),
            home,
            connected: AtomicBool::new(false),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Driver> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes what the workers read without the lock, and tells the control task when the
    /// session ended from within (after input or a timer).
    fn signal_end(&self, live: &Driver) {
        if live.session.connected() && !self.connected.load(Ordering::Relaxed) {
            self.connected.store(true, Ordering::Release);
        }
        if live.session.end().is_some() {
            self.ended.notify_one();
        }
    }

    /// Not connected yet (ICE, DTLS): its datagrams go to a setup thread, off the workers.
    pub(crate) fn setting_up(&self) -> bool {
        !self.connected.load(Ordering::Acquire)
    }

    /// Runs `f` on the session outside a worker (ICE-TCP input, commands, housekeeping), then
    /// sends what it produced and hands a new timer to the home worker.
    pub(crate) fn outside(
        self: &Arc<Self>,
        batch: &mut ForwardBatch,
        f: impl FnOnce(&mut Driver, &mut ForwardBatch),
    ) {
        let mut live = self.lock();
        if live.closed {
            return;
        }
        f(&mut live, batch);
        let reschedule = live.after_input(batch).is_some();
        self.finish_outside(live, reschedule, batch);
    }

    /// `outside`, unless the session is busy (a setup thread holds it): then nothing, and
    /// `false`. For periodic work on a tokio thread, which must not wait for a setup thread.
    pub(crate) fn try_outside(
        self: &Arc<Self>,
        batch: &mut ForwardBatch,
        f: impl FnOnce(&mut Driver, &mut ForwardBatch),
    ) -> bool {
        let mut live = match self.state.try_lock() {
            Ok(live) => live,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        if live.closed {
            return true;
        }
        f(&mut live, batch);
        let reschedule = live.after_input(batch).is_some();
        self.finish_outside(live, reschedule, batch);
        true
    }

    /// Runs the session's due timer entry `at` outside a worker (a session still setting up).
    pub(crate) fn timer_outside(self: &Arc<Self>, at: Instant, batch: &mut ForwardBatch) {
        let mut live = self.lock();
        let reschedule = live.on_timer(at, Instant::now(), batch).is_some();
        self.finish_outside(live, reschedule, batch);
    }

    fn finish_outside(
        self: &Arc<Self>,
        live: MutexGuard<'_, Driver>,
        reschedule: bool,
        batch: &mut ForwardBatch,
    ) {
        self.signal_end(&live);
        drop(live);
        batch.flush();
        if reschedule {
            self.home.schedule(Arc::clone(self));
        }
    }
}

impl Driver {
    /// Feeds one datagram to the session, at its arrival (`after_input` applies the output).
    pub(crate) fn input(&mut self, datagram: Datagram) {
        if !self.closed {
            self.session
                .handle_input(datagram.at, Input::Datagram(datagram));
        }
    }

    /// Feeds one input to the session at `now` (`after_input` applies the output).
    pub(crate) fn input_at(&mut self, now: Instant, input: Input) {
        if !self.closed {
            self.session.handle_input(now, input);
        }
    }

    /// Applies what input produced, in order: events to the registry, media into `batch`,
    /// datagrams to the publisher; returns the deadline of a timer entry to add when the
    /// session's next timer is earlier than its live entry. Events come before the datagrams
    /// they came with: the registry records the session connected before the DTLS flight
    /// that completes the publisher's handshake leaves.
    pub(crate) fn after_input(&mut self, batch: &mut ForwardBatch) -> Option<Instant> {
        if self.closed {
            return None;
        }
        loop {
            match self.session.poll_output() {
                Output::Transmit(out) => self.net.send(&out),
                Output::Forward(forward) => batch.forward(forward),
                Output::Event(event) => {
                    let registry = self.admission.guard.registry();
                    report::record(registry, self.admission.session_id, event);
                }
                Output::Timeout(next) => return self.reschedule(next?),
            }
        }
    }

    /// The deadline to queue, if it is earlier than the live entry (or there is none).
    fn reschedule(&mut self, next: Instant) -> Option<Instant> {
        if self.timer.is_some_and(|t| t <= next) {
            return None;
        }
        self.timer = Some(next);
        Some(next)
    }

    /// Reads the ingest's caps from the registry into the session (SetCaps may have changed
    /// them), before its housekeeping and statistics.
    fn refresh_limits(&mut self, now: Instant) {
        let registry = self.admission.guard.registry();
        let limits = registry.limits(&self.admission.spec.id).unwrap_or_default();
        self.input_at(now, Input::Limits(limits));
    }

    /// Restarts ICE at `now` and routes the new ufrag to this session (the previous one keeps
    /// working until the publisher moves over).
    fn ice_restart(&mut self, fragment: &str, now: Instant) -> Result<IceRestarted, Error> {
        let restarted = self
            .session
            .ice_restart(fragment, now)
            .map_err(|err| Error::BadRequest(err.0))?;
        let etag = format!("\"{}\"", restarted.ufrag);
        self.net
            .mux
            .router()
            .add_ufrag(restarted.ufrag, &restarted.pwd, self.admission.session_id);
        Ok(IceRestarted {
            fragment: restarted.fragment,
            etag,
        })
    }

    /// The session's timer entry at `at` fired: runs the due timers if the entry is live;
    /// returns the deadline of the next entry.
    pub(crate) fn on_timer(
        &mut self,
        at: Instant,
        now: Instant,
        batch: &mut ForwardBatch,
    ) -> Option<Instant> {
        if self.closed || self.timer != Some(at) {
            return None;
        }
        self.timer = None;
        self.input_at(now, Input::Timeout);
        self.after_input(batch)
    }

    /// Whether a worker may drop the session from its heap.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The timer entry a worker was handed (`Cell::outside`).
    pub(crate) fn timer(&self) -> Option<Instant> {
        self.timer.filter(|_| !self.closed)
    }
}

/// Signals a worker gives after driving a session.
pub(crate) fn finished_input(cell: &Cell, live: &Driver) {
    cell.signal_end(live);
}

/// What the control task needs besides the cell.
pub(crate) struct Control {
    pub(crate) cell: Arc<Cell>,
    pub(crate) route: Route,
    pub(crate) commands: mpsc::Receiver<SessionCommand>,
    pub(crate) cancel: CancellationToken,
    pub(crate) stats_interval: Duration,
    pub(crate) sockets: ForwardSockets,
    pub(crate) metrics: Arc<Metrics>,
}

impl Control {
    /// Owns the session until it ends: commands, periodic work, then the close.
    pub(crate) async fn run(mut self) {
        let cell = Arc::clone(&self.cell);
        let mut batch = ForwardBatch::new(self.sockets.clone(), &self.metrics);
        // Arm the session's first timer (connect and DTLS timeouts) on its home worker.
        cell.outside(&mut batch, |_, _| {});
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut stats = tokio::time::interval(self.stats_interval);
        stats.reset();
        let mut last_stats = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = cell.ended.notified() => break,
                // Skipped while a setup thread works on the session: the next tick comes.
                _ = housekeeping.tick() => {
                    cell.try_outside(&mut batch, |live, _| {
                        let now = Instant::now();
                        live.refresh_limits(now);
                        live.input_at(now, Input::Housekeeping);
                    });
                }
                _ = stats.tick() => {
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(last_stats);
                    // The bitrate is over the time since the last report that ran.
                    if cell.try_outside(&mut batch, |live, _| {
                        live.refresh_limits(now);
                        live.input_at(now, Input::Stats { elapsed });
                    }) {
                        last_stats = now;
                    }
                }
                Some(command) = self.commands.recv() => cell.outside(&mut batch, |live, _| {
                    let now = Instant::now();
                    match command {
                        SessionCommand::RequestKeyframe => live.input_at(now, Input::RequestKeyframe),
                        SessionCommand::SelectLayer(rid) => live.input_at(now, Input::SelectLayer(rid)),
                        SessionCommand::IceRestart { fragment, reply } => {
                            let _ = reply.send(live.ice_restart(&fragment, now));
                        }
                    }
                }),
            }
            if cell.lock().session.end().is_some() {
                break;
            }
        }
        let mut live = cell.lock();
        live.closed = true;
        let end = live
            .session
            .end()
            .map(|(cause, detail)| (report::end_reason(cause), detail.to_owned()));
        live.session.close();
        // What closing produced: the DTLS close_notify for the publisher.
        loop {
            match live.session.poll_output() {
                Output::Transmit(out) => live.net.send(&out),
                Output::Event(_) | Output::Forward(_) => {}
                Output::Timeout(_) => break,
            }
        }
        let session_id = live.admission.session_id;
        let registry = live.admission.guard.registry().clone();
        drop(live);
        match end {
            // The registry logs the end with its reason.
            Some((reason, detail)) => {
                registry.end_session(session_id, reason, &detail);
            }
            // Ended from outside (DELETE, teardown, unregister, replace, shutdown): the
            // registry logged it with its reason when it ended it.
            None => tracing::debug!(%session_id, "session task stopped"),
        }
        // Unroutes the session: the table's references to the cell go with it.
        drop(self.route);
    }
}
