//! Caps: the global publisher cap and per-ingest limits, changed live over the control plane.

use super::{Caps, EventPayload, IngestEntry, Limits, Registry, RegistryError};

impl Registry {
    /// Global caps and the live publisher count.
    pub fn caps(&self) -> (Caps, usize) {
        let state = self.lock();
        (state.caps, state.sessions.len())
    }

    /// Changes the global cap. Live publishers above a lowered cap stay; new ones get 503.
    pub fn set_max_publishers(&self, max_publishers: usize) -> (Caps, usize) {
        let mut state = self.lock();
        state.caps.max_publishers = max_publishers;
        let caps = state.caps;
        self.emit(
            &mut state,
            "",
            None,
            EventPayload::CapsChanged { caps, limits: None },
        );
        (caps, state.sessions.len())
    }

    /// Changes one ingest's limits.
    pub fn set_limits(&self, ingest_id: &str, limits: Limits) -> Result<(), RegistryError> {
        self.set_limits_as(ingest_id, limits, true)
    }

    /// [`Registry::set_limits`] without its `caps_changed` event: cluster mode, when the node
    /// with the live session applies the change too and emits it there (one change, one
    /// event); [`Registry::announce_limits`] emits it here if that node did not.
    pub fn set_limits_quietly(&self, ingest_id: &str, limits: Limits) -> Result<(), RegistryError> {
        self.set_limits_as(ingest_id, limits, false)
    }

    /// Emits the `caps_changed` event of a change made with [`Registry::set_limits_quietly`].
    pub fn announce_limits(&self, ingest_id: &str, limits: Limits) {
        let mut state = self.lock();
        let caps = state.caps;
        self.emit(
            &mut state,
            ingest_id,
            None,
            EventPayload::CapsChanged {
                caps,
                limits: Some(limits),
            },
        );
    }

    fn set_limits_as(
        &self,
        ingest_id: &str,
        limits: Limits,
        announce: bool,
    ) -> Result<(), RegistryError> {
        let mut state = self.lock();
        let entry = state
            .ingests
            .get_mut(ingest_id)
            .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))?;
        entry.limits_override = Some(limits);
        Self::touch(&mut state, ingest_id, false);
        drop(state);
        if announce {
            self.announce_limits(ingest_id, limits);
        }
        Ok(())
    }

    /// An ingest's current limits (sessions re-read them, so changes apply live).
    pub fn limits(&self, ingest_id: &str) -> Option<Limits> {
        self.lock().ingests.get(ingest_id).map(IngestEntry::limits)
    }
}
