//! Frame sizes from the cheap places of the other video codecs: the VP8 keyframe header
//! (RFC 6386 §9.1 behind the RFC 7741 descriptor), the VP9 scalability structure of the
//! RTP descriptor (RFC 9628), the H.265 SPS (RFC 7798 packets) and the AV1 sequence header
//! (AV1 RTP aggregation header). Each reads a single RTP payload and allocates nothing.

use std::num::NonZeroUsize;

use h264_reader::rbsp::{BitRead, BitReader, BitReaderError, ByteReader};

use super::SpsFacts;

/// A frame size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Size {
    pub width: u32,
    pub height: u32,
}

/// VP8: the coded size in a keyframe's first packet. The two upscaling bits (RFC 6386 §9.1)
/// are a display hint that decoders (libvpx, FFmpeg) do not apply: they are masked off.
pub(super) fn vp8_keyframe_size(payload: &[u8]) -> Option<Size> {
    let desc = *payload.first()?;
    // S set and partition index 0: the frame starts here.
    if desc & 0x10 == 0 || desc & 0x07 != 0 {
        return None;
    }
    let mut offset = 1;
    if desc & 0x80 != 0 {
        let ext = *payload.get(1)?;
        offset += 1;
        if ext & 0x80 != 0 {
            let long = *payload.get(offset)? & 0x80 != 0;
            offset += if long { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            offset += 1;
        }
        if ext & 0x30 != 0 {
            offset += 1;
        }
    }
    let frame = payload.get(offset..offset + 10)?;
    // Frame tag bit 0 clear: keyframe; then the start code 9d 01 2a.
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]);
    let height = u16::from_le_bytes([frame[8], frame[9]]);
    Some(Size {
        width: u32::from(width & 0x3fff),
        height: u32::from(height & 0x3fff),
    })
}

/// VP9: the size of the highest spatial layer in the descriptor's scalability structure,
/// which encoders send with every keyframe.
pub(super) fn vp9_size(payload: &[u8]) -> Option<Size> {
    let desc = *payload.first()?;
    let (picture_id, inter, layers, flexible, ss) = (
        desc & 0x80 != 0,
        desc & 0x40 != 0,
        desc & 0x20 != 0,
        desc & 0x10 != 0,
        desc & 0x02 != 0,
    );
    if !ss {
        return None;
    }
    let mut offset = 1;
    if picture_id {
        offset += if *payload.get(offset)? & 0x80 != 0 {
            2
        } else {
            1
        };
    }
    if layers {
        offset += if flexible { 1 } else { 2 };
    }
    if inter && flexible {
        // Up to three reference indices, each with a "another follows" bit.
        for _ in 0..3 {
            let more = *payload.get(offset)? & 0x01 != 0;
            offset += 1;
            if !more {
                break;
            }
        }
    }
    let ss_header = *payload.get(offset)?;
    if ss_header & 0x10 == 0 {
        return None; // Y clear: no resolutions.
    }
    let spatial_layers = usize::from(ss_header >> 5) + 1;
    let last = offset + 1 + (spatial_layers - 1) * 4;
    let size = payload.get(last..last + 4)?;
    Some(Size {
        width: u32::from(u16::from_be_bytes([size[0], size[1]])),
        height: u32::from(u16::from_be_bytes([size[2], size[3]])),
    })
}

/// H.265: the SPS (NAL type 33) alone or in an aggregation packet.
pub(super) fn h265_sps(payload: &[u8]) -> Option<SpsFacts> {
    const SPS: u8 = 33;
    const AGGREGATION: u8 = 48;
    let nal_type = |nal: &[u8]| nal.first().map(|b| (b >> 1) & 0x3f);
    match nal_type(payload)? {
        SPS => parse_h265_sps(payload),
        AGGREGATION => {
            let mut rest = payload.get(2..)?;
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + size)?;
                if nal_type(nal) == Some(SPS) {
                    return parse_h265_sps(nal);
                }
                rest = &rest[2 + size..];
            }
            None
        }
        _ => None,
    }
}

/// H.265 §7.3.2.2 up to the conformance window (NAL header included).
pub(super) fn parse_h265_sps(nal: &[u8]) -> Option<SpsFacts> {
    let two = NonZeroUsize::new(2)?;
    let mut r = BitReader::new(ByteReader::skipping_bytes(nal, two));
    let mut read = || -> Result<SpsFacts, BitReaderError> {
        r.skip(4, "sps_video_parameter_set_id")?;
        let sub_layers: u8 = r.read::<3, u8>("sps_max_sub_layers_minus1")?;
        r.skip(1, "sps_temporal_id_nesting_flag")?;
        // profile_tier_level: general profile (space, tier, idc) then 80 bits of flags.
        r.skip(3, "general_profile_space, general_tier_flag")?;
        let profile_idc = r.read::<5, u8>("general_profile_idc")?;
        r.skip(32, "general_profile_compatibility_flags")?;
        r.skip(48, "general constraint flags")?;
        let level_idc = r.read::<8, u8>("general_level_idc")?;
        let mut present = [(false, false); 8];
        for p in present.iter_mut().take(usize::from(sub_layers)) {
            *p = (r.read_bit("profile_present")?, r.read_bit("level_present")?);
        }
        if sub_layers > 0 {
            r.skip(2 * (8 - u32::from(sub_layers)), "reserved_zero_2bits")?;
        }
        for &(profile, level) in present.iter().take(usize::from(sub_layers)) {
            if profile {
                r.skip(88, "sub_layer profile")?;
            }
            if level {
                r.skip(8, "sub_layer_level_idc")?;
            }
        }
        r.read_ue("sps_seq_parameter_set_id")?;
        let chroma = r.read_ue("chroma_format_idc")?;
        let separate = chroma == 3 && r.read_bit("separate_colour_plane_flag")?;
        let width = r.read_ue("pic_width_in_luma_samples")?;
        let height = r.read_ue("pic_height_in_luma_samples")?;
        let (mut crop_w, mut crop_h) = (0u32, 0u32);
        if r.read_bit("conformance_window_flag")? {
            let (sub_w, sub_h) = match (chroma, separate) {
                (1, false) => (2, 2),
                (2, false) => (2, 1),
                _ => (1, 1),
            };
            let (left, right) = (r.read_ue("left")?, r.read_ue("right")?);
            let (top, bottom) = (r.read_ue("top")?, r.read_ue("bottom")?);
            crop_w = sub_w * left.saturating_add(right);
            crop_h = sub_h * top.saturating_add(bottom);
        }
        Ok(SpsFacts {
            width: width.saturating_sub(crop_w),
            height: height.saturating_sub(crop_h),
            profile_idc,
            level_idc,
            declared_fps: None,
            max_num_reorder_frames: None,
        })
    };
    read().ok().filter(|f| f.width > 0 && f.height > 0)
}

/// AV1: the maximum frame size of a sequence header OBU starting in this packet.
pub(super) fn av1_size(payload: &[u8]) -> Option<Size> {
    const SEQUENCE_HEADER: u8 = 1;
    let aggregation = *payload.first()?;
    if aggregation & 0x80 != 0 {
        return None; // Z: the first element continues an OBU from the previous packet.
    }
    let count = (aggregation >> 4) & 0x03;
    let mut rest = &payload[1..];
    let mut index = 1;
    while !rest.is_empty() {
        // Every element has a length, except the last one when W counts the elements.
        let element = if count != 0 && index == count {
            std::mem::take(&mut rest)
        } else {
            let (len, used) = leb128(rest)?;
            let element = rest.get(used..used.checked_add(len)?)?;
            rest = &rest[used + len..];
            element
        };
        let header = *element.first()?;
        if (header >> 3) & 0x0f == SEQUENCE_HEADER {
            let skip = 1 + usize::from(header & 0x04 != 0);
            let mut body = element.get(skip..)?;
            if header & 0x02 != 0 {
                let (_, used) = leb128(body)?;
                body = &body[used..];
            }
            return av1_sequence_size(body);
        }
        index += 1;
    }
    None
}

fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().take(8).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// AV1 §5.5.1 `sequence_header_obu` up to `max_frame_height_minus_1`.
fn av1_sequence_size(body: &[u8]) -> Option<Size> {
    let mut r = BitReader::new(body);
    let mut read = || -> Result<Size, BitReaderError> {
        r.skip(4, "seq_profile, still_picture")?;
        if r.read_bit("reduced_still_picture_header")? {
            r.skip(5, "seq_level_idx")?;
        } else {
            let mut buffer_delay_bits = 0;
            let timing = r.read_bit("timing_info_present_flag")?;
            let decoder_model = timing && {
                r.skip(64, "num_units_in_display_tick, time_scale")?;
                if r.read_bit("equal_picture_interval")? {
                    // uvlc() is coded like ue(v).
                    r.read_ue("num_ticks_per_picture_minus_1")?;
                }
                r.read_bit("decoder_model_info_present_flag")?
            };
            if decoder_model {
                buffer_delay_bits = r.read::<5, u32>("buffer_delay_length_minus_1")? + 1;
                r.skip(42, "decoding tick, removal and presentation time lengths")?;
            }
            let initial_display_delay = r.read_bit("initial_display_delay_present_flag")?;
            let operating_points = r.read::<5, u8>("operating_points_cnt_minus_1")? + 1;
            for _ in 0..operating_points {
                r.skip(12, "operating_point_idc")?;
                if r.read::<5, u8>("seq_level_idx")? > 7 {
                    r.skip(1, "seq_tier")?;
                }
                if decoder_model && r.read_bit("decoder_model_present_for_this_op")? {
                    r.skip(2 * buffer_delay_bits + 1, "operating_parameters_info")?;
                }
                if initial_display_delay && r.read_bit("initial_display_delay_present")? {
                    r.skip(4, "initial_display_delay_minus_1")?;
                }
            }
        }
        let width_bits = r.read::<4, u32>("frame_width_bits_minus_1")? + 1;
        let height_bits = r.read::<4, u32>("frame_height_bits_minus_1")? + 1;
        let width = r.read_var::<u32>(width_bits, "max_frame_width_minus_1")? + 1;
        let height = r.read_var::<u32>(height_bits, "max_frame_height_minus_1")? + 1;
        Ok(Size { width, height })
    };
    read().ok()
}
