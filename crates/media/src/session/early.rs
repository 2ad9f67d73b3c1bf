//! DTLS records that arrive before ICE selected a pair.
//!
//! A full agent (the publisher) may start DTLS as soon as its own check succeeded, before its
//! nominating check reached us: libdatachannel (OBS) sends its ClientHello right after the
//! first answered check, often in the same burst as USE-CANDIDATE. The peer connection drops
//! every non-STUN datagram until a pair is selected, which would cost the publisher its DTLS
//! retransmission timeout (1 s). Such a record comes from an address that passed an
//! authenticated check (the mux routes nothing else here), so it is held, a few per source,
//! and handed to the peer connection in arrival order once the pair is selected.

use std::collections::VecDeque;

use super::Datagram;

/// Records held per source address: a ClientHello flight and a retransmission of it.
pub(crate) const MAX_PER_SOURCE: usize = 4;
/// Records held per session (a publisher checks from a few candidates at most).
pub(crate) const MAX_HELD: usize = 8;

/// Whether a datagram is a DTLS record (RFC 7983's demultiplexing: first byte 20 to 63).
pub(crate) fn is_dtls(data: &[u8]) -> bool {
    matches!(data.first(), Some(20..=63))
}

/// The records held for one session, oldest first.
#[derive(Default)]
pub(crate) struct EarlyRecords {
    held: VecDeque<Datagram>,
}

impl EarlyRecords {
    /// Holds `d` until the pair is selected; gives it back when its source (or the session)
    /// already holds as many as it may.
    pub(crate) fn hold(&mut self, d: Datagram) -> Result<(), Datagram> {
        let from_source = self.held.iter().filter(|h| h.from == d.from).count();
        if from_source >= MAX_PER_SOURCE || self.held.len() >= MAX_HELD {
            return Err(d);
        }
        self.held.push_back(d);
        Ok(())
    }

    /// Everything held, oldest first; leaves nothing behind.
    pub(crate) fn take(&mut self) -> VecDeque<Datagram> {
        std::mem::take(&mut self.held)
    }

    /// How many records are held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests;
