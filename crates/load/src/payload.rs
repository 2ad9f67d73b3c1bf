//! Pre-built media payloads for the load generator: no encoding, only the bytes a receiver
//! looks at (H264 NAL and FU-A headers, the VP8 payload descriptor and keyframe header, an Opus
//! TOC byte), each packet ending with a 16-byte stamp (send time, publisher number, magic) that
//! the gateway forwards unchanged, so the sink can measure latency and attribute packets.

use bytes::{BufMut, Bytes, BytesMut};

use super::VideoCodec;

/// The last four bytes of every stamped payload.
pub const STAMP_MAGIC: u32 = 0x574C_4431; // "WLD1"
/// Size of the stamp at the end of each payload.
pub const STAMP_LEN: usize = 16;

/// The stamp found at the end of a received payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, microseconds since the Unix epoch.
    pub sent_us: u64,
    /// Publisher number.
    pub publisher: u32,
}

/// Reads the stamp at the end of `payload`, if it carries one.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let tail = payload.get(payload.len().checked_sub(STAMP_LEN)?..)?;
    let word = |i: usize| u32::from_be_bytes([tail[i], tail[i + 1], tail[i + 2], tail[i + 3]]);
    (word(12) == STAMP_MAGIC).then(|| Stamp {
        sent_us: (u64::from(word(0)) << 32) | u64::from(word(4)),
        publisher: word(8),
    })
}

fn stamped(head: &[u8], body_len: usize, fill: u8, stamp: Stamp) -> Bytes {
    let mut b = BytesMut::with_capacity(head.len() + body_len + STAMP_LEN);
    b.put_slice(head);
    b.put_bytes(fill, body_len);
    b.put_u64(stamp.sent_us);
    b.put_u32(stamp.publisher);
    b.put_u32(STAMP_MAGIC);
    b.freeze()
}

// A Baseline 640x360 SPS/PPS pair (synthetic stream: nothing downstream decodes the slices).
const H264_SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
const H264_PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const H264_IDR: u8 = 0x65;
const H264_NON_IDR: u8 = 0x41;
const FU_A: u8 = 28;
// The VP8 keyframe header: frame tag (key frame, version 0, shown), start code, 640x360.
const VP8_KEY_HEADER: &[u8] = &[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
const VP8_INTER_HEADER: &[u8] = &[0x11, 0x02, 0x00];

/// Payloads of one video frame (`frame_bytes` of coded data) split to at most `max_payload`
/// bytes each; the last one carries the RTP marker.
pub fn video_frame(
    codec: VideoCodec,
    keyframe: bool,
    frame_bytes: usize,
    max_payload: usize,
    stamp: Stamp,
) -> Vec<Bytes> {
    match codec {
        VideoCodec::H264 => h264_frame(keyframe, frame_bytes, max_payload, stamp),
        VideoCodec::Vp8 => vp8_frame(keyframe, frame_bytes, max_payload, stamp),
    }
}

fn h264_frame(keyframe: bool, frame_bytes: usize, max_payload: usize, stamp: Stamp) -> Vec<Bytes> {
    let mut out = Vec::new();
    if keyframe {
        out.push(stamped(H264_SPS, 0, 0, stamp));
        out.push(stamped(H264_PPS, 0, 0, stamp));
    }
    let nal = if keyframe { H264_IDR } else { H264_NON_IDR };
    // Single NAL unit packet when the slice fits, FU-A fragments otherwise (RFC 6184).
    let body = frame_bytes.max(1);
    if body + 1 + STAMP_LEN <= max_payload {
        out.push(stamped(&[nal], body - 1, 0xAB, stamp));
        return out;
    }
    let per_packet = max_payload.saturating_sub(2 + STAMP_LEN).max(1);
    let fragments = body.div_ceil(per_packet);
    let indicator = (nal & 0x60) | FU_A;
    for i in 0..fragments {
        let mut header = nal & 0x1f;
        if i == 0 {
            header |= 0x80;
        }
        if i + 1 == fragments {
            header |= 0x40;
        }
        let len = if i + 1 == fragments {
            body - per_packet * i
        } else {
            per_packet
        };
        out.push(stamped(&[indicator, header], len, 0xAB, stamp));
    }
    out
}

fn vp8_frame(keyframe: bool, frame_bytes: usize, max_payload: usize, stamp: Stamp) -> Vec<Bytes> {
    let header = if keyframe {
        VP8_KEY_HEADER
    } else {
        VP8_INTER_HEADER
    };
    let per_packet = max_payload
        .saturating_sub(1 + STAMP_LEN)
        .max(header.len() + 1);
    let body = frame_bytes.max(header.len() + 1);
    let fragments = body.div_ceil(per_packet);
    (0..fragments)
        .map(|i| {
            let len = if i + 1 == fragments {
                body - per_packet * i
            } else {
                per_packet
            };
            if i == 0 {
                // Payload descriptor: S=1, partition 0; then the frame header.
                let head = [&[0x10][..], header].concat();
                stamped(&head, len - header.len(), 0xCD, stamp)
            } else {
                stamped(&[0x00], len, 0xCD, stamp)
            }
        })
        .collect()
}

/// One 20 ms Opus-like audio payload of `bytes` bytes (TOC: SILK-only wideband, 20 ms).
pub fn audio_packet(bytes: usize, stamp: Stamp) -> Bytes {
    stamped(&[0x48], bytes.saturating_sub(1 + STAMP_LEN), 0xFC, stamp)
}

/// Whether a forwarded video payload starts a keyframe (how the sink counts them): the
/// gateway's own detection (`whipgate_media::keyframe`), so the sink counts what the gateway
/// would start a consumer on.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    whipgate_media::keyframe::starts_keyframe(codec.into(), payload)
}

#[cfg(test)]
mod tests;
