use super::*;

#[test]
fn h264_idr_is_found_alone_in_stap_a_and_in_fu_a_start() {
    assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
    assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
    // STAP-A with SPS (2 bytes) then IDR.
    assert!(starts_keyframe(
        VideoCodec::H264,
        &[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x65, 0x88]
    ));
    assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x88]));
    assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x88]));
}

#[test]
fn vp9_av1_and_h265_keyframes_are_recognised() {
    assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
    assert!(
        !starts_keyframe(VideoCodec::Vp9, &[0x48]),
        "inter-predicted"
    );
    assert!(starts_keyframe(VideoCodec::Av1, &[0x18]));
    assert!(!starts_keyframe(VideoCodec::Av1, &[0x10]));
    // IDR_W_RADL (19) alone, a TRAIL_R (1), an FU start of CRA (21).
    assert!(starts_keyframe(VideoCodec::H265, &[19 << 1, 1, 0xaa]));
    assert!(!starts_keyframe(VideoCodec::H265, &[1 << 1, 1, 0xaa]));
    assert!(starts_keyframe(
        VideoCodec::H265,
        &[49 << 1, 1, 0x80 | 21, 0xaa]
    ));
    // Aggregation packet: VPS (32, 2 bytes) then IDR_N_LP (20).
    assert!(starts_keyframe(
        VideoCodec::H265,
        &[48 << 1, 1, 0, 2, 32 << 1, 1, 0, 2, 20 << 1, 1]
    ));
}

#[test]
fn vp8_keyframe_bit_is_read_after_the_descriptor() {
    // S=1, PID=0, no extension, P=0.
    assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
    assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
    // X=1 with a 15-bit picture id.
    assert!(starts_keyframe(
        VideoCodec::Vp8,
        &[0x90, 0x80, 0x81, 0x23, 0x00]
    ));
    // Not a partition start.
    assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
}
