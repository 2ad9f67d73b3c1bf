//! Offer/answer negotiations run on a few long-lived threads, first come first served.
//!
//! A negotiation is a fraction of a millisecond of CPU (webrtc-rs parsing and matching the
//! offer, building the answer), too long to run on the async runtime between requests. On
//! tokio's blocking pool a burst of 50 POSTs started up to 50 new threads, each paying for its
//! creation and most for a fresh malloc arena (glibc makes up to 8 per core; their first
//! allocations page-fault), and the cores were shared among all of them, so every answer of the
//! burst came at about the end of it. One thread per core fed in
//! arrival order answers the first POSTs of a burst first, on threads whose memory is already
//! warm.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

type Job = Box<dyn FnOnce() + Send>;

/// Why a negotiation was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// As many negotiations as the queue holds are waiting.
    Busy,
    /// The gateway is shutting down.
    Closed,
}

/// Hands negotiations to the negotiation threads.
#[derive(Clone)]
pub(crate) struct Negotiators {
    /// `None` once closed: the threads end when the last sender is gone.
    tx: Arc<Mutex<Option<SyncSender<Job>>>>,
}

impl Negotiators {
    /// Starts `threads` threads on the tracker's blocking pool, with room for `queue` waiting
    /// negotiations; they run until [`Negotiators::close`].
    pub(crate) fn start(threads: usize, queue: usize, tracker: &TaskTracker) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            tracker.spawn_blocking(move || run(&rx));
        }
        Negotiators {
            tx: Arc::new(Mutex::new(Some(tx))),
        }
    }

    /// Queues `work`; its result arrives on the returned receiver (dropped unanswered only if
    /// `work` panicked).
    pub(crate) fn submit<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<R>, Refused> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The requester may have given up (answer timeout, client gone): nothing to do.
            let _ = done.send(work());
        });
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let tx = tx.as_ref().ok_or(Refused::Closed)?;
        match tx.try_send(job) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) => Err(Refused::Busy),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }

    /// Refuses new work; the threads finish what is queued and end.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// One negotiation thread: runs jobs in arrival order until the queue closes.
fn run(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            // A panic in one negotiation must not take the thread (and the queue) with it.
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a negotiation panicked");
                }
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests;
