//! A live session as the media workers see it, and the control task that owns its life.
//!
//! The session's state sits behind its own lock. The worker whose socket receives the
//! publisher's datagrams (the kernel keeps a 4-tuple on one socket of the port's group) takes
//! it per batch of datagrams and drives the session's `rtc` state machine to completion: no
//! channel hop and no task wake-up per packet, and the lock is uncontended. Timers live on the
//! worker that last handled the session's input (`worker`). The control task wakes only for
//! what is rare: commands, caps and statistics a few times a second, and the end.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::batch::ForwardBatch;
use super::forward::ForwardSockets;
use super::mux::{Datagram, Route};
use super::session::{Progress, Session};
use super::worker::WorkerHandle;
use crate::metrics::Metrics;
use crate::registry::SessionCommand;

/// How often caps, timeouts, simulcast layers and synthesized Sender Reports are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

/// A session shared between the workers, its control task and ICE-TCP connections.
pub(crate) struct Cell {
    state: Mutex<Live>,
    /// Set when input ended the session (ICE failure, BYE, a cap): the control task closes it.
    ended: Notify,
    /// The worker that takes the session's timer when input arrives outside a worker.
    home: WorkerHandle,
}

/// The session and its bookkeeping.
pub(crate) struct Live {
    pub(crate) session: Session,
    pub(crate) progress: Progress,
    /// Deadline of the session's one live timer entry; entries at other instants are stale.
    timer: Option<Instant>,
    /// Closed: workers and timers leave it alone.
    closed: bool,
}

impl Cell {
    pub(crate) fn new(session: Session, progress: Progress, home: WorkerHandle) -> Arc<Self> {
        Arc::new(Cell {
            state: Mutex::new(Live {
                session,
                progress,
                timer: None,
                closed: false,
            }),
            ended: Notify::new(),
            home,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Live> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the control task that the session ended from within (after input or a timer).
    fn signal_end(&self, live: &Live) {
        if live.progress.end.is_some() {
            self.ended.notify_one();
        }
    }

    /// Runs `f` on the session outside a worker (ICE-TCP input, commands, housekeeping), then
    /// sends what it produced and hands a new timer to the home worker.
    pub(crate) fn outside(
        self: &Arc<Self>,
        batch: &mut ForwardBatch,
        f: impl FnOnce(&mut Live, &mut ForwardBatch),
    ) {
        let mut live = self.lock();
        if live.closed {
            return;
        }
        f(&mut live, batch);
        let reschedule = live.after_input(batch).is_some();
        self.signal_end(&live);
        drop(live);
        batch.flush();
        if reschedule {
            self.home.schedule(Arc::clone(self));
        }
    }
}

impl Live {
    /// Feeds one datagram to the session (`after_input` finishes the work).
    pub(crate) fn input(&mut self, datagram: Datagram) {
        if !self.closed {
            self.session.read(datagram, &mut self.progress);
        }
    }

    /// Handles what input produced: events, media to forward, output; returns the deadline
    /// of a timer entry to add when the session's next timer is earlier than its live entry.
    pub(crate) fn after_input(&mut self, batch: &mut ForwardBatch) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.session.drain(&mut self.progress, batch);
        self.reschedule()
    }

    /// The deadline to queue, if it is earlier than the live entry (or there is none).
    fn reschedule(&mut self) -> Option<Instant> {
        let next = self.session.next_timeout()?;
        if self.timer.is_some_and(|t| t <= next) {
            return None;
        }
        self.timer = Some(next);
        Some(next)
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
        self.session.handle_timeout(now);
        self.after_input(batch)
    }

    /// Not connected yet (ICE, DTLS): driven on a setup thread, off the media workers.
    pub(crate) fn setting_up(&self) -> bool {
        !self.closed && !self.progress.connected
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
pub(crate) fn finished_input(cell: &Cell, live: &Live) {
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
                _ = housekeeping.tick() => cell.outside(&mut batch, |live, _| {
                    let now = Instant::now();
                    let Live { session, progress, .. } = live;
                    session.run_overdue_timers(now);
                    session.check_limits(progress, now);
                    session.review_layers(progress, now);
                    session.send_reports(now);
                }),
                _ = stats.tick() => {
                    let now = Instant::now();
                    let elapsed = now.saturating_duration_since(last_stats);
                    last_stats = now;
                    cell.outside(&mut batch, |live, _| {
                        live.session.report_stats(&mut live.progress, elapsed, now);
                    });
                }
                Some(command) = self.commands.recv() => cell.outside(&mut batch, |live, _| {
                    let Live { session, progress, .. } = live;
                    let now = Instant::now();
                    match command {
                        SessionCommand::RequestKeyframe => session.request_keyframe(progress, now),
                        SessionCommand::SelectLayer(rid) => session.layers.set_preferred(rid),
                        SessionCommand::IceRestart { fragment, reply } => {
                            let _ = reply.send(session.ice_restart(&fragment, now));
                        }
                    }
                }),
            }
            if cell.lock().progress.end.is_some() {
                break;
            }
        }
        let mut live = cell.lock();
        live.closed = true;
        let end = live.progress.end.take();
        live.session.close();
        let session_id = live.session.admission.session_id;
        let registry = live.session.admission.guard.registry().clone();
        drop(live);
        match end {
            Some((reason, detail)) => {
                registry.end_session(session_id, reason, &detail);
                tracing::info!(%session_id, reason = reason.as_str(), %detail, "session closed");
            }
            // Ended from outside (DELETE, teardown, unregister, replace, shutdown): the
            // session-ended event already carries the reason.
            None => tracing::info!(%session_id, "session closed by the gateway"),
        }
        // Unroutes the session: the table's references to the cell go with it.
        drop(self.route);
    }
}
