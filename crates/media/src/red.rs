//! RED (RFC 2198) for Opus: a browser that negotiated `red/48000/2` sends each audio packet
//! with copies of the previous one or two packets. Consumers get plain Opus: the primary
//! block as the packet itself, and a redundant block as the packet it copies when that one
//! was lost (libwebrtc's convention, which NetEq relies on too: the blocks are the packets
//! just before, in order, so the i-th of n redundant blocks is sequence number `seq - n + i`,
//! at `timestamp - offset`).

use bytes::Bytes;

/// Redundant blocks per packet at most (browsers send one or two).
const MAX_BLOCKS: usize = 8;

/// One block of a RED payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's payload type (the primary codec's).
    pub payload_type: u8,
    /// How far before the RED packet's timestamp this block is (0 for the primary).
    pub timestamp_offset: u16,
    /// The encoded frame (a slice of the packet's payload, not a copy).
    pub payload: Bytes,
}

/// A RED payload split into its redundant blocks (oldest first) and its primary block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub redundant: Vec<Block>,
    pub primary: Block,
}

/// Splits a RED payload; `None` when it is malformed (headers or lengths past its end, more
/// than [`MAX_BLOCKS`] redundant blocks).
pub fn split(payload: &Bytes) -> Option<Split> {
    let mut headers = Vec::new();
    let mut at = 0usize;
    let primary_type = loop {
        let first = *payload.get(at)?;
        let payload_type = first & 0x7f;
        if first & 0x80 == 0 {
            at += 1;
            break payload_type;
        }
        let header = payload.get(at..at + 4)?;
        let timestamp_offset = (u16::from(header[1]) << 6) | u16::from(header[2] >> 2);
        let length = (usize::from(header[2] & 0x03) << 8) | usize::from(header[3]);
        headers.push((payload_type, timestamp_offset, length));
        if headers.len() > MAX_BLOCKS {
            return None;
        }
        at += 4;
    };
    let mut redundant = Vec::with_capacity(headers.len());
    for (payload_type, timestamp_offset, length) in headers {
        let end = at.checked_add(length)?;
        if end > payload.len() {
            return None;
        }
        redundant.push(Block {
            payload_type,
            timestamp_offset,
            payload: payload.slice(at..end),
        });
        at = end;
    }
    Some(Split {
        redundant,
        primary: Block {
            payload_type: primary_type,
            timestamp_offset: 0,
            payload: payload.slice(at..),
        },
    })
}

#[cfg(test)]
mod tests;
