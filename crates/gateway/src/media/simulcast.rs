//! Simulcast: which layer (RID) of a publisher's video is forwarded, and when to switch.
//!
//! One layer reaches the consumer. By default it is the layer with the highest bitrate (the
//! largest picture); an ingest may name a RID instead, at registration or live. A switch waits
//! for a keyframe of the new layer (asked for with a PLI), so the consumer never sees a frame
//! that depends on a picture it did not get; until then the old layer keeps flowing.

use std::collections::HashMap;

use super::session::Session;

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

impl Session {
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
mod tests {
    use super::*;

    fn feed(s: &mut LayerSelector, rid: &str, keyframe: bool) -> bool {
        let (ssrc, size) = match rid {
            "q" => (1, 100),
            "h" => (2, 400),
            _ => (3, 1000),
        };
        s.on_packet(rid, ssrc, size, keyframe)
    }

    #[test]
    fn the_highest_layer_is_chosen_and_switched_to_on_its_keyframe() {
        let mut s = LayerSelector::new(None);
        assert!(feed(&mut s, "q", false), "first layer seen flows at once");
        assert!(!feed(&mut s, "f", false));
        s.evaluate();
        assert_eq!(s.target(), Some("f"));
        assert_eq!(s.pending_switch(), Some(3), "ask f for a keyframe");
        assert!(!feed(&mut s, "f", false), "no switch before a keyframe");
        assert!(
            feed(&mut s, "q", false),
            "the old layer keeps flowing meanwhile"
        );
        assert!(feed(&mut s, "f", true), "switch on f's keyframe");
        assert!(!feed(&mut s, "q", true), "q is now dropped");
        assert_eq!(s.pending_switch(), None);
    }

    #[test]
    fn a_preferred_layer_wins_once_it_is_seen() {
        let mut s = LayerSelector::new(Some("h".into()));
        feed(&mut s, "f", true);
        s.evaluate();
        assert_eq!(s.target(), Some("f"), "h not seen yet");
        feed(&mut s, "h", false);
        assert_eq!(s.target(), Some("h"));
        assert!(feed(&mut s, "h", true));
        s.set_preferred(None);
        s.evaluate();
        assert_eq!(
            s.target(),
            Some("h"),
            "h carried the most in the last window"
        );
    }

    #[test]
    fn small_fluctuations_do_not_flip_the_highest_layer() {
        let mut s = LayerSelector::new(None);
        s.on_packet("a", 1, 1000, true);
        s.on_packet("b", 2, 900, true);
        s.evaluate();
        assert_eq!(s.target(), Some("a"));
        s.on_packet("a", 1, 1000, false);
        s.on_packet("b", 2, 1100, false);
        s.evaluate();
        assert_eq!(s.target(), Some("a"), "10% more is within the margin");
    }
}
