//! Sessions still setting up (ICE checks, the DTLS handshake) are driven off the media workers.
//!
//! A DTLS handshake costs the server about a millisecond of public-key crypto; a burst of new
//! publishers driven inline would stall every established session of that worker while its
//! socket fills. The workers hand a setting-up session's datagrams to these threads, which run
//! at a lower CPU priority (nice 10), so media of live sessions always comes first; once the
//! session is connected its datagrams are driven inline. The queue is bounded: a datagram that
//! does not fit is dropped (counted), and ICE and DTLS retransmit it.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::task::TaskTracker;

use super::batch::ForwardBatch;
use super::cell::Cell;
use super::forward::ForwardSockets;
use super::mux::Datagram;
use crate::metrics::Metrics;

/// Datagrams of setting-up sessions waiting for a thread, at most.
const QUEUE: usize = 4096;
/// The threads' niceness: below the workers, so that a burst of handshakes yields to media.
const NICE: i32 = 10;

/// Work for a setup thread.
enum Job {
    /// A datagram of a session that is not connected yet.
    Input(Arc<Cell>, Datagram),
    /// That session's timer entry at this instant fell due.
    Timer(Arc<Cell>, Instant),
}

/// Hands setting-up sessions' datagrams to the setup threads.
#[derive(Clone)]
pub(crate) struct Setup {
    tx: SyncSender<Job>,
}

impl Setup {
    /// Starts `threads` setup threads on the tracker's blocking pool; they end once every
    /// `Setup` handle is dropped (the workers' and the media's, at shutdown).
    pub(crate) fn start(
        threads: usize,
        sockets: &ForwardSockets,
        metrics: &Arc<Metrics>,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let batch = ForwardBatch::new(sockets.clone(), metrics);
            tracker.spawn_blocking(move || run(&rx, batch));
        }
        Setup { tx }
    }

    /// Queues a datagram of a session that is not connected yet; `false` if the queue is full.
    pub(crate) fn submit(&self, cell: Arc<Cell>, datagram: Datagram) -> bool {
        self.send(Job::Input(cell, datagram))
    }

    /// Queues the due timer entry `at` of a session that is not connected yet; `false` if the
    /// queue is full.
    pub(crate) fn submit_timer(&self, cell: Arc<Cell>, at: Instant) -> bool {
        self.send(Job::Timer(cell, at))
    }

    fn send(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// One setup thread: drives sessions on the datagrams it is handed until the queue closes.
fn run(rx: &Mutex<Receiver<Job>>, mut batch: ForwardBatch) {
    set_nice(NICE);
    loop {
        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            Ok(Job::Input(cell, datagram)) => {
                cell.outside(&mut batch, |live, _| live.input(datagram));
            }
            Ok(Job::Timer(cell, at)) => cell.timer_outside(at, &mut batch),
            Err(_) => break,
        }
    }
    // The blocking pool reuses the thread: give it back at normal priority.
    set_nice(0);
}

/// Sets the calling thread's niceness (Linux: per thread), best effort.
fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(None, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
