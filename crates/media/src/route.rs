//! The routing table of the one media port every session shares (and of the ICE-TCP port):
//! which session a datagram goes to. No I/O: the gateway's media driver owns the sockets and
//! hands each datagram here; a session is whatever handle `T` its driver routes to (an
//! `Arc<Cell>` in the gateway, its id in tests), an ICE-TCP connection whatever writer `W`.
//!
//! A datagram goes to the session that owns its source address. Addresses are learnt only from
//! authenticated connectivity checks (`ice_auth`): a binding request names its session by our
//! ufrag in USERNAME and must carry a MESSAGE-INTEGRITY made with that session's `ice-pwd`
//! before its source address is bound (RFC 8445 section 7.3). An unauthenticated request is
//! dropped before it reaches the ICE agent and never moves an address. The table is bounded:
//! at most two ufrags (current and previous, across ICE restarts) and `MAX_ADDRS` addresses
//! per session.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rtc::crypto::RTCCryptoProvider;
use rtc::stun::message::is_stun_message;
use uuid::Uuid;

use crate::ice_auth::{self, DropReason};

/// Source addresses a session may have bound at once (host, srflx, relay, a NAT rebinding...).
pub const MAX_ADDRS: usize = 8;
/// ufrags routed per session: the current one and the one before the last ICE restart.
const MAX_UFRAGS: usize = 2;
/// How long an address stays with the session that last authenticated it, against a verified
/// check of another session (the consent lifetime, RFC 7675 section 5.1).
const ADDRESS_HOLD: Duration = Duration::from_secs(30);

/// Where a routed session's datagrams go: its id and its handle.
#[derive(Clone)]
struct Sink<T> {
    session: Uuid,
    handle: T,
}

/// The per-datagram view of the address table: replaced as a whole when an address is bound
/// or released (rare), read without a lock by every worker for every datagram.
type AddrSnapshot<T> = HashMap<SocketAddr, T>;

/// An address bound to a session, and when a check from it last verified.
struct Bound<T> {
    sink: Sink<T>,
    checked: Instant,
}

/// What the table holds per session.
struct Routed<T> {
    sink: Sink<T>,
    /// Oldest first; the last is the current ufrag.
    ufrags: VecDeque<String>,
    /// Oldest first.
    addrs: VecDeque<SocketAddr>,
}

/// Where a session's output for an ICE-TCP peer goes (the connection's writer).
struct TcpWriter<W> {
    session: Uuid,
    tx: W,
}

struct Table<T, W> {
    /// Our ufrag -> (session, our ice-pwd).
    by_ufrag: HashMap<String, (Uuid, Arc<str>)>,
    by_addr: HashMap<SocketAddr, Bound<T>>,
    sessions: HashMap<Uuid, Routed<T>>,
    tcp_writers: HashMap<SocketAddr, TcpWriter<W>>,
}

impl<T, W> Default for Table<T, W> {
    fn default() -> Self {
        Table {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            sessions: HashMap::new(),
            tcp_writers: HashMap::new(),
        }
    }
}

/// The routing table, shared by every receiver (clones share it).
pub struct Router<T, W> {
    table: Arc<RwLock<Table<T, W>>>,
    addrs: Arc<ArcSwap<AddrSnapshot<T>>>,
    crypto: Arc<dyn RTCCryptoProvider>,
}

impl<T, W> Clone for Router<T, W> {
    fn clone(&self) -> Self {
        Router {
            table: Arc::clone(&self.table),
            addrs: Arc::clone(&self.addrs),
            crypto: Arc::clone(&self.crypto),
        }
    }
}

/// Removes a session's routes when dropped (and closes its ICE-TCP connections, by dropping
/// their writers).
pub struct Route<T: Clone, W: Clone> {
    router: Router<T, W>,
    session: Uuid,
}

impl<T: Clone, W: Clone> Drop for Route<T, W> {
    fn drop(&mut self) {
        let mut table = self.router.write();
        if let Some(routed) = table.sessions.remove(&self.session) {
            for ufrag in routed.ufrags {
                table.by_ufrag.remove(&ufrag);
            }
            for addr in routed.addrs {
                table.by_addr.remove(&addr);
            }
        }
        // Dropping a writer's sender closes its ICE-TCP connection.
        table.tcp_writers.retain(|_, w| w.session != self.session);
        self.router.publish(&table);
    }
}

impl<T: Clone, W: Clone> Router<T, W> {
    /// An empty table; ICE checks verify with `crypto`.
    pub fn new(crypto: Arc<dyn RTCCryptoProvider>) -> Self {
        Router {
            table: Arc::new(RwLock::new(Table::default())),
            addrs: Arc::new(ArcSwap::from_pointee(AddrSnapshot::new())),
            crypto,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table<T, W>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table<T, W>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the address table for the per-datagram path (after a change of `by_addr`).
    fn publish(&self, table: &Table<T, W>) {
        let snapshot = table
            .by_addr
            .iter()
            .map(|(addr, bound)| (*addr, bound.sink.handle.clone()))
            .collect();
        self.addrs.store(Arc::new(snapshot));
    }

    /// The crypto provider checks verify with.
    pub fn crypto(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.crypto
    }

    /// Routes checks for `ufrag` (authenticated with `pwd`, our ice-pwd) to a new session;
    /// addresses follow from verified checks.
    pub fn route(&self, ufrag: String, pwd: &str, session: Uuid, handle: T) -> Route<T, W> {
        let sink = Sink { session, handle };
        let mut table = self.write();
        table
            .by_ufrag
            .insert(ufrag.clone(), (session, Arc::from(pwd)));
        table.sessions.insert(
            session,
            Routed {
                sink,
                ufrags: VecDeque::from([ufrag]),
                addrs: VecDeque::new(),
            },
        );
        drop(table);
        Route {
            router: self.clone(),
            session,
        }
    }

    /// Routes the ufrag of an ICE restart to a routed session; the one before the previous
    /// stops being routed (only the current and the previous credentials stay valid).
    pub fn add_ufrag(&self, ufrag: String, pwd: &str, session: Uuid) {
        let mut table = self.write();
        let Some(routed) = table.sessions.get_mut(&session) else {
            return;
        };
        routed.ufrags.push_back(ufrag.clone());
        let expired = (routed.ufrags.len() > MAX_UFRAGS)
            .then(|| routed.ufrags.pop_front())
            .flatten();
        if let Some(old) = expired {
            table.by_ufrag.remove(&old);
        }
        table.by_ufrag.insert(ufrag, (session, Arc::from(pwd)));
    }

    /// Routing entries (ufrags, addresses, sessions, ICE-TCP connections): zero when no
    /// session lives.
    pub fn routes(&self) -> usize {
        let t = self.read();
        t.by_ufrag.len() + t.by_addr.len() + t.sessions.len() + t.tcp_writers.len()
    }

    /// The session an address is bound to (tests and diagnostics).
    pub fn session_of(&self, addr: SocketAddr) -> Option<Uuid> {
        self.read().by_addr.get(&addr).map(|b| b.sink.session)
    }

    /// The session a UDP datagram goes to. Media takes the lock-free path; a connectivity
    /// check must verify before it binds its source address.
    pub fn dispatch(&self, packet: &[u8], from: SocketAddr, at: Instant) -> Result<T, DropReason> {
        let bound = || {
            self.addrs
                .load()
                .get(&from)
                .cloned()
                .ok_or(DropReason::Unmatched)
        };
        if !is_stun_message(packet) {
            return bound();
        }
        match ice_auth::parse(packet)? {
            Some(request) => Ok(self.authenticate(request, from, at)?.handle),
            // Indications and responses only from an address a check authenticated.
            None => bound(),
        }
    }

    /// Verifies a binding request against its session's credential and binds its source
    /// address to that session.
    fn authenticate(
        &self,
        mut request: ice_auth::BindingRequest,
        from: SocketAddr,
        now: Instant,
    ) -> Result<Sink<T>, DropReason> {
        let session = self.verify(&mut request)?;
        let mut table = self.write();
        let table = &mut *table;
        match table.by_addr.get_mut(&from) {
            Some(bound) if bound.sink.session == session => {
                bound.checked = now;
                return Ok(bound.sink.clone());
            }
            // A verified check of another session: the publisher holding that address is
            // still proving consent, so this is a spoof or a stale NAT mapping reused.
            Some(bound) if now.saturating_duration_since(bound.checked) < ADDRESS_HOLD => {
                return Err(DropReason::AddressInUse);
            }
            Some(bound) => {
                let previous = bound.sink.session;
                if let Some(other) = table.sessions.get_mut(&previous) {
                    other.addrs.retain(|a| *a != from);
                }
            }
            None => {}
        }
        let routed = table
            .sessions
            .get_mut(&session)
            .ok_or(DropReason::UnknownUfrag)?;
        if routed.addrs.len() >= MAX_ADDRS
            && let Some(oldest) = routed.addrs.pop_front()
        {
            table.by_addr.remove(&oldest);
        }
        routed.addrs.push_back(from);
        let sink = routed.sink.clone();
        table.by_addr.insert(
            from,
            Bound {
                sink: sink.clone(),
                checked: now,
            },
        );
        self.publish(table);
        Ok(sink)
    }

    /// The session whose credential verifies `request`.
    fn verify(&self, request: &mut ice_auth::BindingRequest) -> Result<Uuid, DropReason> {
        let (session, pwd) = self
            .read()
            .by_ufrag
            .get(&request.ufrag)
            .cloned()
            .ok_or(DropReason::UnknownUfrag)?;
        // The HMAC runs without the table lock held.
        ice_auth::verify(request, pwd.as_bytes(), self.crypto.crypto())?;
        Ok(session)
    }
}

impl<T: Clone, W: Clone> Router<T, W> {
    /// The session an ICE-TCP connection belongs to, from its first frame: a binding request
    /// that verifies. Registers the connection's writer for the session's replies.
    pub fn claim_tcp(
        &self,
        first: &[u8],
        peer: SocketAddr,
        writer: W,
    ) -> Result<(Uuid, T), DropReason> {
        if !is_stun_message(first) {
            return Err(DropReason::Unmatched);
        }
        let mut request = ice_auth::parse(first)?.ok_or(DropReason::Unmatched)?;
        let session = self.verify(&mut request)?;
        let mut table = self.write();
        let sink = table
            .sessions
            .get(&session)
            .map(|r| r.sink.handle.clone())
            .ok_or(DropReason::UnknownUfrag)?;
        table.tcp_writers.insert(
            peer,
            TcpWriter {
                session,
                tx: writer,
            },
        );
        Ok((session, sink))
    }

    /// Checks a later frame of an ICE-TCP connection owned by `session`: a binding request in
    /// it must verify with that session's credential too.
    pub fn check_tcp(&self, frame: &[u8], session: Uuid) -> Result<(), DropReason> {
        if !is_stun_message(frame) {
            return Ok(());
        }
        let Some(mut request) = ice_auth::parse(frame)? else {
            return Ok(());
        };
        if self.verify(&mut request)? == session {
            Ok(())
        } else {
            Err(DropReason::AddressInUse)
        }
    }

    /// Forgets a closed ICE-TCP connection's writer.
    pub fn release_tcp(&self, peer: SocketAddr) {
        self.write().tcp_writers.remove(&peer);
    }

    /// The writer of an ICE-TCP peer's connection, if it is open.
    pub fn tcp_writer(&self, peer: SocketAddr) -> Option<W> {
        self.read().tcp_writers.get(&peer).map(|w| w.tx.clone())
    }
}

#[cfg(test)]
mod tests;
