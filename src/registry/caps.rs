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
        let mut state = self.lock();
        let entry = state
            .ingests
            .get_mut(ingest_id)
            .ok_or_else(|| RegistryError::IngestNotFound(ingest_id.to_owned()))?;
        entry.limits_override = Some(limits);
        Self::touch(&mut state, ingest_id, false);
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
        Ok(())
    }

    /// An ingest's current limits (sessions re-read them, so changes apply live).
    pub fn limits(&self, ingest_id: &str) -> Option<Limits> {
        self.lock().ingests.get(ingest_id).map(IngestEntry::limits)
    }
}
