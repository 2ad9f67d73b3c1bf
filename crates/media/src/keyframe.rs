//! Keyframe detection on RTP payloads, one function per video codec: where the forwarder may
//! start (or switch) a consumer's stream, and what the load tool's sink counts.

use crate::codec::VideoCodec;
use crate::h264;

/// Whether a video RTP payload starts a keyframe.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => h264_starts_idr(payload),
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::Av1 => av1_starts_sequence(payload),
        VideoCodec::H265 => h265_starts_irap(payload),
    }
}

/// VP9 (RFC 9628): beginning of a frame (B) that is not inter-predicted (P clear).
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|d| d & 0x08 != 0 && d & 0x40 == 0)
}

/// AV1 (RTP payload format for AV1, section 4.4): N marks the first packet of a coded video
/// sequence, which starts with a keyframe.
fn av1_starts_sequence(payload: &[u8]) -> bool {
    payload
        .first()
        .is_some_and(|aggregation| aggregation & 0x08 != 0)
}

/// H.265 (RFC 7798): an IRAP NAL unit (types 16 to 21) alone, in an aggregation packet, or the
/// start fragment of one.
fn h265_starts_irap(payload: &[u8]) -> bool {
    let irap = |nal_type: u8| (16..=21).contains(&nal_type);
    let Some(&first) = payload.first() else {
        return false;
    };
    match (first >> 1) & 0x3f {
        48 => {
            let mut rest = payload.get(2..).unwrap_or(&[]);
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|nal| irap((nal >> 1) & 0x3f)) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        49 => payload
            .get(2)
            .is_some_and(|fu| fu & 0x80 != 0 && irap(fu & 0x3f)),
        t => irap(t),
    }
}

/// H.264 (RFC 6184): an IDR slice alone, in a STAP-A, or the start fragment of one.
fn h264_starts_idr(payload: &[u8]) -> bool {
    h264::units(payload).any(|unit| unit.starts_nal() && unit.nal_type() == Some(h264::NAL_IDR))
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&desc) = payload.first() else {
        return false;
    };
    let start_of_partition = desc & 0x10 != 0 && desc & 0x07 == 0;
    if !start_of_partition {
        return false;
    }
    let mut offset = 1;
    if desc & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else {
            return false;
        };
        offset += 1;
        if ext & 0x80 != 0 {
            // Picture ID: 7 or 15 bits.
            let long = payload.get(offset).is_some_and(|b| b & 0x80 != 0);
            offset += if long { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1;
        }
        if ext & 0x30 != 0 {
            offset += 1;
        }
    }
    // VP8 payload header: P bit 0 means keyframe.
    payload.get(offset).is_some_and(|b| b & 0x01 == 0)
}

#[cfg(test)]
mod tests;
