//! Simulcast: which layer (RID) of a publisher's video is forwarded, and when to switch.
//!
//! One layer reaches the consumer. By default it is the layer with the highest bitrate (the
//! largest picture); an ingest may name a RID instead, at registration or live. A switch waits
//! for a keyframe of the new layer (asked for with a PLI), so the consumer never sees a frame
//! that depends on a picture it did not get; until then the old layer keeps flowing.

use std::collections::HashMap;

use super::Core;

/// A new "highest" layer must carry this much more than the current one (hysteresis).
const SWITCH_MARGIN: f64 = 1.2;

/// Per-session layer choice.
#[derive(Debug, Default)]
pub(crate) struct LayerSelector {
    preferred: Option<String>,
    current: Option<String>,
    highest: Option<String>,
    window: HashMap<String, u64>,
    ssrcs: HashMap<String, u32>,
}

impl LayerSelector {
    pub(crate) fn new(preferred: Option<String>) -> Self {
        LayerSelector {
            preferred,
            ..Default::default()
        }
    }

    /// Names the layer to forward (`None`: the highest bitrate).
    pub(crate) fn set_preferred(&mut self, preferred: Option<String>) {
        self.preferred = preferred;
    }

    /// The layer being forwarded.
    pub(crate) fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The layer that should be forwarded.
    pub(crate) fn target(&self) -> Option<&str> {
        match &self.preferred {
            Some(rid) if self.ssrcs.contains_key(rid) => Some(rid),
            _ => self.highest.as_deref().or(self.current.as_deref()),
        }
    }

    /// SSRC of the layer to switch to, while a switch waits for its keyframe.
    pub(crate) fn pending_switch(&self) -> Option<u32> {
        let target = self.target()?;
        (Some(target) != self.current())
            .then(|| self.ssrcs.get(target).copied())
            .flatten()
    }

    /// Accounts a packet of layer `rid`; returns whether to forward it.
    pub(crate) fn on_packet(&mut self, rid: &str, ssrc: u32, size: usize, keyframe: bool) -> bool {
        *self.window.entry(rid.to_owned()).or_default() += size as u64;
        self.ssrcs.insert(rid.to_owned(), ssrc);
        let Some(current) = self.current.as_deref() else {
            self.current = Some(rid.to_owned());
            return true;
        };
        if current == rid {
            return true;
        }
        if keyframe && self.target() == Some(rid) {
            self.current = Some(rid.to_owned());
            return true;
        }
        false
    }

    /// Re-ranks the layers by what they carried since the last call.
    pub(crate) fn evaluate(&mut self) {
        let best = self
            .window
            .iter()
            .max_by_key(|(_, bytes)| **bytes)
            .map(|(rid, bytes)| (rid.clone(), *bytes));
        if let Some((rid, bytes)) = best {
            let incumbent = self
                .highest
                .as_ref()
                .and_then(|h| self.window.get(h))
                .copied()
                .unwrap_or(0);
            if self.highest.is_none() || bytes as f64 > incumbent as f64 * SWITCH_MARGIN {
                self.highest = Some(rid);
            }
        }
        self.window.clear();
    }
}

impl Core {
    /// The simulcast layer (RID) of a video SSRC; `None` without simulcast.
    pub(super) fn rid_of(&mut self, ssrc: u32) -> Option<String> {
        if self.plan.simulcast_rids.is_empty() {
            return None;
        }
        if let Some(rid) = self.rids.get(&ssrc) {
            return Some(rid.clone());
        }
        let receivers: Vec<_> = self.peer.get_receivers().collect();
        let rid = receivers.into_iter().find_map(|id| {
            let receiver = self.peer.rtp_receiver(id)?;
            receiver.track().rid(ssrc).map(|r| r.to_string())
        })?;
        self.rids.insert(ssrc, rid.clone());
        Some(rid)
    }
}

#[cfg(test)]
mod tests;
