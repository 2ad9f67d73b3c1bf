//! Negotiation slots: at most `--max-negotiations` offers are negotiated at once. A POST that
//! finds them all taken waits for one (a studio going live, an encoder farm restarting: OBS
//! and FFmpeg report a 503 as a failed start, they do not retry), for at most
//! `--negotiation-wait-secs`, in a bounded queue. A freed slot goes to the clients that wait in
//! turn (round-robin by client: an IPv4 address or an IPv6 /64), first come first served within
//! one client, so a busy address cannot starve another. Only a full queue or a wait over
//! answers 503 with Retry-After.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indexmap::IndexMap;
use tokio::sync::oneshot;

/// Why no slot was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// As many POSTs as the queue (or this client's share of it) holds are waiting.
    QueueFull,
    /// No slot was freed within the wait.
    WaitOver,
}

impl Refused {
    /// What the publisher is told (with a 503).
    pub fn message(self) -> &'static str {
        match self {
            Refused::QueueFull => "too many publishers are negotiating; the queue is full",
            Refused::WaitOver => "too many publishers are negotiating; no slot was freed in time",
        }
    }
}

/// The slots and the POSTs waiting for one.
#[derive(Clone)]
pub struct NegotiationQueue {
    shared: Arc<Mutex<Slots>>,
    wait: Duration,
    max_waiting: usize,
    max_waiting_per_client: usize,
}

struct Waiter {
    ticket: u64,
    grant: oneshot::Sender<()>,
}

struct Slots {
    free: usize,
    /// Waiters by client, in the order clients started waiting; each client's in arrival order.
    waiting: IndexMap<IpAddr, VecDeque<Waiter>>,
    /// The client served next (an index into `waiting`).
    turn: usize,
    count: usize,
    next_ticket: u64,
}

impl Slots {
    /// Gives a freed slot to the next waiter in turn, or keeps it.
    fn release(&mut self) {
        while !self.waiting.is_empty() {
            let index = self.turn % self.waiting.len();
            let Some(queue) = self.waiting.get_index_mut(index).map(|(_, q)| q) else {
                break;
            };
            let waiter = queue.pop_front();
            if queue.is_empty() {
                self.waiting.shift_remove_index(index);
                self.turn = index;
            } else {
                self.turn = index + 1;
            }
            let Some(waiter) = waiter else { continue };
            self.count -= 1;
            if waiter.grant.send(()).is_ok() {
                return;
            }
        }
        self.free += 1;
    }

    /// Takes `ticket` of `client` out of the queue; false if it is not there (granted).
    fn withdraw(&mut self, client: IpAddr, ticket: u64) -> bool {
        let Some(index) = self.waiting.get_index_of(&client) else {
            return false;
        };
        let Some((_, queue)) = self.waiting.get_index_mut(index) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.ticket == ticket) else {
            return false;
        };
        queue.remove(at);
        self.count -= 1;
        if queue.is_empty() {
            self.waiting.shift_remove_index(index);
            if self.turn > index {
                self.turn -= 1;
            }
        }
        true
    }
}

/// A negotiation slot, given back when dropped.
pub struct Slot {
    shared: Arc<Mutex<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared).release();
    }
}

fn lock(shared: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A place in the queue; leaving it early (the POST timed out or its client went away)
/// withdraws it, or passes on the slot it was given meanwhile.
struct Place {
    shared: Arc<Mutex<Slots>>,
    client: IpAddr,
    ticket: u64,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut slots = lock(&self.shared);
        if slots.withdraw(self.client, self.ticket) {
            return;
        }
        // Granted under the lock before we took it: the slot is ours to pass on.
        if let Some(mut granted) = self.granted.take()
            && granted.try_recv().is_ok()
        {
            slots.release();
        }
    }
}

impl NegotiationQueue {
    /// `slots` negotiations at once; at most `max_waiting` POSTs wait (`per_client` of one
    /// client), each at most `wait`.
    pub fn new(slots: usize, wait: Duration, max_waiting: usize, per_client: usize) -> Self {
        NegotiationQueue {
            shared: Arc::new(Mutex::new(Slots {
                free: slots,
                waiting: IndexMap::new(),
                turn: 0,
                count: 0,
                next_ticket: 0,
            })),
            wait,
            max_waiting,
            max_waiting_per_client: per_client,
        }
    }

    /// A slot for `client` (its [`crate::net::client::client_key`]), at once or after waiting.
    pub async fn acquire(&self, client: IpAddr) -> Result<Slot, Refused> {
        let (ticket, granted) = {
            let mut slots = lock(&self.shared);
            if slots.free > 0 && slots.count == 0 {
                slots.free -= 1;
                return Ok(self.slot());
            }
            let mine = slots.waiting.get(&client).map_or(0, VecDeque::len);
            if slots.count >= self.max_waiting || mine >= self.max_waiting_per_client {
                return Err(Refused::QueueFull);
            }
            let ticket = slots.next_ticket;
            slots.next_ticket += 1;
            let (grant, granted) = oneshot::channel();
            slots
                .waiting
                .entry(client)
                .or_default()
                .push_back(Waiter { ticket, grant });
            slots.count += 1;
            (ticket, granted)
        };
        let mut place = Place {
            shared: Arc::clone(&self.shared),
            client,
            ticket,
            granted: Some(granted),
        };
        let Some(granted) = place.granted.as_mut() else {
            unreachable!("just set");
        };
        match tokio::time::timeout(self.wait, granted).await {
            Ok(Ok(())) => {
                place.granted = None;
                Ok(self.slot())
            }
            // The wait is over (or the queue went away): `place` withdraws, or passes on a
            // slot granted at the last instant.
            _ => Err(Refused::WaitOver),
        }
    }

    fn slot(&self) -> Slot {
        Slot {
            shared: Arc::clone(&self.shared),
        }
    }

    /// POSTs waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.shared).count
    }
}

#[cfg(test)]
mod tests;
