//! The H.264 RTP payload format (RFC 6184), walked once for everyone: the NAL units a packet
//! carries (a single NAL unit, each unit of a STAP-A aggregate) or the FU-A fragment it is.
//! Keyframe detection ([`crate::keyframe`]) and the stream facts' SPS and slice scanner
//! ([`crate::facts`]) read packets through [`units`].

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a single-time aggregation packet.
pub const STAP_A: u8 = 24;
/// NAL unit type of a fragmentation unit.
pub const FU_A: u8 = 28;

/// One unit of an RTP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit<'a> {
    /// A whole NAL unit, header byte first.
    Nal(&'a [u8]),
    /// The last unit of a STAP-A whose size runs past the packet: what is there, header first.
    Truncated(&'a [u8]),
    /// An FU-A fragment: the indicator byte, the FU header (S, E, type) and the fragment's bytes.
    Fragment {
        indicator: u8,
        header: u8,
        data: &'a [u8],
    },
}

impl Unit<'_> {
    /// The NAL unit type (of the fragmented unit for an FU-A), if the unit has a header byte.
    pub fn nal_type(&self) -> Option<u8> {
        match self {
            Unit::Nal(nal) | Unit::Truncated(nal) => nal.first().map(|h| h & 0x1f),
            Unit::Fragment { header, .. } => Some(header & 0x1f),
        }
    }

    /// Whether this unit starts a NAL unit (always, except FU-A fragments after the first).
    pub fn starts_nal(&self) -> bool {
        match self {
            Unit::Fragment { header, .. } => header & 0x80 != 0,
            _ => true,
        }
    }
}

/// The units of one RTP payload, in order. Never panics: a malformed aggregate ends the walk.
pub fn units(payload: &[u8]) -> Units<'_> {
    let state = match payload.first().map(|b| b & 0x1f) {
        None => State::Done,
        Some(STAP_A) => State::Aggregate(&payload[1..]),
        Some(FU_A) => match payload {
            [indicator, header, data @ ..] => State::Fragment(*indicator, *header, data),
            _ => State::Done,
        },
        Some(_) => State::Single(payload),
    };
    Units { state }
}

/// Iterator over [`Unit`]s (see [`units`]).
pub struct Units<'a> {
    state: State<'a>,
}

enum State<'a> {
    Single(&'a [u8]),
    Aggregate(&'a [u8]),
    Fragment(u8, u8, &'a [u8]),
    Done,
}

impl<'a> Iterator for Units<'a> {
    type Item = Unit<'a>;

    fn next(&mut self) -> Option<Unit<'a>> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => None,
            State::Single(nal) => Some(Unit::Nal(nal)),
            State::Fragment(indicator, header, data) => Some(Unit::Fragment {
                indicator,
                header,
                data,
            }),
            State::Aggregate(rest) => {
                // 2-byte size, then that many bytes of NAL unit; fewer than 3 bytes left is
                // padding or garbage, not a unit.
                let [hi, lo, body @ ..] = rest else {
                    return None;
                };
                if body.is_empty() {
                    return None;
                }
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                match (body.get(..size), body.get(size..)) {
                    (Some(nal), Some(next)) if size > 0 => {
                        self.state = State::Aggregate(next);
                        Some(Unit::Nal(nal))
                    }
                    _ => Some(Unit::Truncated(body)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
