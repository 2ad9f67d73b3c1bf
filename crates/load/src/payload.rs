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

/// Whether a forwarded video payload starts a generated keyframe (how the sink counts them).
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        // Each generated keyframe starts with its SPS.
        VideoCodec::H264 => payload.first().is_some_and(|b| b & 0x1f == 7),
        VideoCodec::Vp8 => {
            payload
                .first()
                .is_some_and(|d| d & 0x10 != 0 && d & 0x80 == 0)
                && payload.get(1).is_some_and(|tag| tag & 0x01 == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: Stamp = Stamp {
        sent_us: 0x0102_0304_0506_0708,
        publisher: 42,
    };

    #[test]
    fn stamp_round_trips_and_rejects_foreign_payloads() {
        let p = audio_packet(80, STAMP);
        assert_eq!(p.len(), 80);
        assert_eq!(read_stamp(&p), Some(STAMP));
        assert_eq!(read_stamp(&[0u8; 40]), None);
        assert_eq!(read_stamp(&[1, 2, 3]), None);
    }

    #[test]
    fn h264_keyframe_is_sps_pps_then_fu_a_fragments_of_the_payload_size() {
        let packets = video_frame(VideoCodec::H264, true, 4000, 1200, STAMP);
        assert_eq!(packets[0][0] & 0x1f, 7);
        assert_eq!(packets[1][0] & 0x1f, 8);
        let fus = &packets[2..];
        assert_eq!(fus.len(), 4);
        assert!(fus.iter().all(|p| p.len() <= 1200 && p[0] & 0x1f == FU_A));
        assert_eq!(fus[0][1], 0x80 | 5);
        assert_eq!(fus[3][1], 0x40 | 5);
        let coded: usize = fus.iter().map(|p| p.len() - 2 - STAMP_LEN).sum();
        assert_eq!(coded, 4000);
        assert!(starts_keyframe(VideoCodec::H264, &packets[0]));
        assert!(fus.iter().all(|p| read_stamp(p) == Some(STAMP)));
        let delta = video_frame(VideoCodec::H264, false, 500, 1200, STAMP);
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0][0], H264_NON_IDR);
        assert!(!starts_keyframe(VideoCodec::H264, &delta[0]));
    }

    #[test]
    fn vp8_marks_keyframes_in_the_first_packet_only() {
        let key = video_frame(VideoCodec::Vp8, true, 3000, 1200, STAMP);
        assert_eq!(key.len(), 3);
        assert!(starts_keyframe(VideoCodec::Vp8, &key[0]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &key[1]));
        let inter = video_frame(VideoCodec::Vp8, false, 3000, 1200, STAMP);
        assert!(!starts_keyframe(VideoCodec::Vp8, &inter[0]));
        assert!(key.iter().chain(&inter).all(|p| p.len() <= 1200));
    }
}
