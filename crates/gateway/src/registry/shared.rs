//! Cluster mode: the registry as a cache of the shared registrations in the store, and the
//! hook through which its events leave for the cluster's event stream.
//!
//! Another node's RegisterIngest, UnregisterIngest, SetCaps (per ingest) and layer choice land
//! in the store; this node reads them back with [`Registry::refresh`] (one ingest: before a
//! WHIP POST and GetIngest, and when the event stream says another node changed it) and
//! [`Registry::refresh_all`] (ListIngests). Applying them emits no event: the node that made
//! the change already did.
//!
//! A local change is in memory before its durable write completes; a refresh in between would
//! read the older stored record and undo it. So local changes mark their ingest *dirty* until
//! [`super::Persist::ingest`] has written them, refreshes skip dirty ingests, and refreshes
//! and durable writes are serialised by the registry's write lock. A mark that is never
//! cleared (a change nobody persisted) stops protecting after [`DIRTY_GUARD`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::durable::{entry_from, record_of};
use super::{EndReason, Event, EventPayload, IngestEntry, Registry, RegistryError, State};
use crate::store::IngestRecord;

/// How long an unpersisted local change keeps refreshes away from its ingest at most: longer
/// than a store write may take (the cluster's command deadline is 1 s), short enough that a
/// change nobody persists here (a routed call run on the owner) does not hide a newer one for
/// long.
pub const DIRTY_GUARD: Duration = Duration::from_secs(2);

/// Where a cluster node's registry hands its events (see [`Registry::set_event_sink`]).
pub(super) struct EventSink {
    tx: mpsc::Sender<Arc<Event>>,
    dropped: AtomicU64,
}

impl EventSink {
    /// Queues an event without waiting; a full queue drops it (counted, logged sparsely).
    /// Returns whether it was dropped.
    pub(super) fn offer(&self, event: Arc<Event>) -> bool {
        if self.tx.try_send(event).is_ok() {
            return false;
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                dropped = n,
                "cluster event queue full or closed (Redis unreachable?): events dropped"
            );
        }
        true
    }
}

/// A local change not yet written to the store.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dirty {
    rev: u64,
    since: Instant,
}

impl Dirty {
    fn protects(self) -> bool {
        self.since.elapsed() < DIRTY_GUARD
    }
}

impl Registry {
    /// Cluster mode: every event from now on is also queued on `tx` (without waiting: a full
    /// queue drops the event and counts it). Set once; later calls are ignored.
    pub fn set_event_sink(&self, tx: mpsc::Sender<Arc<Event>>) {
        let _ = self.inner.sink.set(EventSink {
            tx,
            dropped: AtomicU64::new(0),
        });
    }

    /// Events the sink dropped because its queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.inner
            .sink
            .get()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    /// Marks a local change of `ingest_id` (`removed`: it was unregistered here).
    pub(super) fn touch(state: &mut State, ingest_id: &str, removed: bool) {
        state.local_rev += 1;
        let dirty = Dirty {
            rev: state.local_rev,
            since: Instant::now(),
        };
        if removed {
            // Bounded: pruned of expired marks whenever one is added.
            state.removed.retain(|_, d| d.protects());
            state.removed.insert(ingest_id.to_owned(), dirty);
        } else {
            state.removed.remove(ingest_id);
            if let Some(entry) = state.ingests.get_mut(ingest_id) {
                entry.dirty = Some(dirty);
            }
        }
    }

    /// The revision of `ingest_id`'s unpersisted local change, if any.
    pub(super) fn dirty_rev(state: &State, ingest_id: &str) -> Option<u64> {
        match state.ingests.get(ingest_id) {
            Some(entry) => entry.dirty.map(|d| d.rev),
            None => state.removed.get(ingest_id).map(|d| d.rev),
        }
    }

    /// Clears the dirty mark of `ingest_id` if no newer change came since revision `rev`.
    pub(super) fn persisted(&self, ingest_id: &str, rev: Option<u64>) {
        let Some(rev) = rev else { return };
        let mut state = self.lock();
        if let Some(entry) = state.ingests.get_mut(ingest_id)
            && entry.dirty.is_some_and(|d| d.rev == rev)
        {
            entry.dirty = None;
        }
        if state.removed.get(ingest_id).is_some_and(|d| d.rev == rev) {
            state.removed.remove(ingest_id);
        }
    }

    /// [`Registry::unregister`] without its `ingest_unregistered` event: cluster mode, when
    /// the node with the live session unregisters it too and emits it there (one change, one
    /// event); [`Registry::announce_unregistered`] emits it here if that node did not.
    pub fn unregister_quietly(&self, ingest_id: &str) -> Result<bool, RegistryError> {
        self.unregister_as(ingest_id, false)
    }

    /// Emits the `ingest_unregistered` event of [`Registry::unregister_quietly`].
    pub fn announce_unregistered(&self, ingest_id: &str) {
        let mut state = self.lock();
        self.emit(
            &mut state,
            ingest_id,
            None,
            EventPayload::IngestUnregistered,
        );
    }

    /// Forgets that `ingest_id` has a local change being written: a change made here on
    /// behalf of another node (a routed call), which that node wrote to the store.
    pub fn settle(&self, ingest_id: &str) {
        let mut state = self.lock();
        if let Some(entry) = state.ingests.get_mut(ingest_id) {
            entry.dirty = None;
        }
        state.removed.remove(ingest_id);
    }

    /// Cluster mode: reloads `ingest_id` from the store (another node may have registered,
    /// replaced, unregistered it or changed its limits or layer). No event is emitted.
    pub async fn refresh(&self, ingest_id: &str) -> Result<(), RegistryError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let _writer = self.inner.write_lock.lock().await;
        let record = store.get_ingest(ingest_id).await?;
        let cancel = {
            let mut state = self.lock();
            self.apply_locked(&mut state, ingest_id, record.as_ref())
        };
        if let Some(token) = cancel {
            token.cancel();
        }
        Ok(())
    }

    /// Cluster mode: an ingest this node holds no copy of (registered on another node a
    /// moment ago, its invalidation still on the way). Reads the record, checks `bearer`
    /// against its token hash, and only then takes it in ([`Registry::refresh`], the write
    /// lock): a stranger's POST costs one store read and never the write lock. Returns
    /// whether the ingest exists.
    pub async fn learn(
        &self,
        ingest_id: &str,
        bearer: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let Some(store) = &self.inner.store else {
            return Ok(false);
        };
        let Some(mut record) = store.get_ingest(ingest_id).await? else {
            return Ok(false);
        };
        record.hash_clear_token();
        super::publish::check_token(record.bearer_token_hash.as_ref(), bearer)?;
        self.refresh(ingest_id).await?;
        Ok(true)
    }

    /// Cluster mode: reloads every registration from the store.
    pub async fn refresh_all(&self) -> Result<(), RegistryError> {
        let Some(store) = &self.inner.store else {
            return Ok(());
        };
        let _writer = self.inner.write_lock.lock().await;
        let records = store.ingests().await?;
        let cancels: Vec<CancellationToken> = {
            let mut state = self.lock();
            let stored: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let gone: Vec<String> = state
                .ingests
                .keys()
                .filter(|id| !stored.contains(id.as_str()))
                .cloned()
                .collect();
            let mut cancels: Vec<CancellationToken> = gone
                .iter()
                .filter_map(|id| self.apply_locked(&mut state, id, None))
                .collect();
            for record in &records {
                cancels.extend(self.apply_locked(&mut state, &record.id, Some(record)));
            }
            cancels
        };
        for token in cancels {
            token.cancel();
        }
        Ok(())
    }

    /// Makes the local entry of `ingest_id` what the store says (`None`: not registered),
    /// unless a local change is still being written. Returns a session to cancel: a live
    /// local session of an ingest replaced elsewhere with other media. An ingest unregistered
    /// elsewhere with a session live here stays until that session ends: the node that
    /// unregistered it routes the end here (`UnregisterIngest` from any node), which reports
    /// `session_closed`.
    fn apply_locked(
        &self,
        state: &mut State,
        ingest_id: &str,
        record: Option<&IngestRecord>,
    ) -> Option<CancellationToken> {
        let dirty = match state.ingests.get(ingest_id) {
            Some(entry) => entry.dirty,
            None => state.removed.get(ingest_id).copied(),
        };
        if dirty.is_some_and(Dirty::protects) {
            return None;
        }
        let Some(record) = record else {
            if state.ingests.get(ingest_id)?.session.is_none() {
                state.ingests.remove(ingest_id);
            }
            return None;
        };
        let fresh = match entry_from(record) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(ingest = %ingest_id, %err, "ignoring a shared registration");
                return None;
            }
        };
        let Some(entry) = state.ingests.get_mut(ingest_id) else {
            state.ingests.insert(ingest_id.to_owned(), fresh);
            return None;
        };
        if record_of(entry) == *record {
            return None;
        }
        // Hashes change with tokens only (see `Registry::register`): another hash is another
        // token.
        let must_close = entry.spec.media_differs(&fresh.spec) || entry.token != fresh.token;
        update(entry, fresh);
        if must_close {
            return self.end_locked(state, ingest_id, EndReason::Replaced, "ingest replaced");
        }
        None
    }
}

/// Takes the stored parts of `fresh`, keeping the live session and output stream state.
fn update(entry: &mut IngestEntry, fresh: IngestEntry) {
    entry.spec = fresh.spec;
    entry.token = fresh.token;
    entry.created_at = fresh.created_at;
    entry.limits_override = fresh.limits_override;
    entry.layer_override = fresh.layer_override;
    entry.dirty = None;
}
