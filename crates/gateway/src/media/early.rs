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

use super::mux::Datagram;

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
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;

    fn record(from: &str, first: u8) -> Datagram {
        Datagram {
            from: from.parse::<SocketAddr>().expect("address"),
            data: bytes::BytesMut::from(&[first, 0xfe, 0xfd][..]),
            at: Instant::now(),
            tcp: false,
        }
    }

    #[test]
    fn only_dtls_content_types_are_dtls() {
        assert!(is_dtls(&[22, 0xfe, 0xfd]), "handshake");
        assert!(is_dtls(&[20]) && is_dtls(&[63]));
        assert!(!is_dtls(&[0, 1]), "STUN");
        assert!(!is_dtls(&[0x80, 96]), "RTP");
        assert!(!is_dtls(&[]));
    }

    #[test]
    fn records_are_held_in_order_and_bounded_per_source_and_in_total() {
        let mut early = EarlyRecords::default();
        for _ in 0..MAX_PER_SOURCE {
            assert!(early.hold(record("127.0.0.1:5000", 22)).is_ok());
        }
        assert!(
            early.hold(record("127.0.0.1:5000", 22)).is_err(),
            "one source holds at most MAX_PER_SOURCE"
        );
        let mut port = 5001;
        while early.len() < MAX_HELD {
            assert!(early.hold(record(&format!("127.0.0.1:{port}"), 22)).is_ok());
            port += 1;
        }
        assert!(
            early.hold(record("127.0.0.2:6000", 22)).is_err(),
            "total bound"
        );
        let taken = early.take();
        assert_eq!(taken.len(), MAX_HELD);
        assert!(
            taken
                .iter()
                .take(MAX_PER_SOURCE)
                .all(|d| d.from.port() == 5000)
        );
        assert_eq!(early.len(), 0);
    }
}
