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
    assert!(!starts_keyframe(VideoCodec::H264, &packets[0]), "the SPS");
    assert!(
        starts_keyframe(VideoCodec::H264, &fus[0]),
        "the IDR's first fragment"
    );
    assert!(!starts_keyframe(VideoCodec::H264, &fus[1]));
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
