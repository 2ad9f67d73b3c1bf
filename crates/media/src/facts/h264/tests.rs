use super::*;

/// x264 (High, 640x360 so cropped from 368 lines, 30 fps, `-bf 2`): note the
/// emulation-prevention bytes (00 00 03).
pub(crate) const SPS_HIGH_360P: &str = "6764001eacd940a02ff970110000030001000003003c0f162d96";
/// x264 (Constrained Baseline, 1280x720, 25 fps).
const SPS_BASELINE_720P: &str = "6742c01fd9005005bb011000000300100000030320f1832480";
/// x264 slice headers: P (`9a`), B referenced (`41 9e`) and B non-referenced (`01 9e`).
const SLICE_P: [u8; 4] = [0x41, 0x9a, 0x23, 0x6c];
const SLICE_B: [u8; 4] = [0x01, 0x9e, 0x62, 0x6a];

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sps_gives_cropped_size_profile_level_and_vui_rate() {
    let high = parse_sps(&hex(SPS_HIGH_360P)).unwrap();
    assert_eq!((high.width, high.height), (640, 360));
    assert_eq!((high.profile_idc, high.level_idc), (100, 30));
    assert_eq!(high.declared_fps, Some(30.0));
    assert_eq!(high.max_num_reorder_frames, Some(2), "x264 -bf 2");
    let base = parse_sps(&hex(SPS_BASELINE_720P)).unwrap();
    assert_eq!((base.width, base.height), (1280, 720));
    assert_eq!((base.profile_idc, base.level_idc), (66, 31));
    assert_eq!(base.declared_fps, Some(25.0));
    assert_eq!(base.max_num_reorder_frames, Some(0));
}

#[test]
fn garbage_is_no_sps() {
    assert_eq!(parse_sps(&[0x67]), None);
    assert_eq!(parse_sps(&[0x67, 0xff, 0xff, 0xff, 0xff]), None);
    let sps = hex(SPS_HIGH_360P);
    assert_eq!(parse_sps(&sps[..6]), None, "truncated");
}

#[test]
fn sps_is_found_alone_and_in_stap_a_once_per_change() {
    let sps = hex(SPS_HIGH_360P);
    let mut scanner = H264Scanner::default();
    assert_eq!(scanner.scan(&sps, 1).sps.unwrap().width, 640);
    assert_eq!(
        scanner.scan(&sps, 2).sps,
        None,
        "unchanged SPS is not re-parsed"
    );
    let base = hex(SPS_BASELINE_720P);
    let mut stap = vec![0x78, 0, base.len() as u8];
    stap.extend_from_slice(&base);
    stap.extend_from_slice(&[0, 4, 0x68, 0xcb, 0x83, 0xcb]);
    assert_eq!(scanner.scan(&stap, 3).sps.unwrap().height, 720);
    // A truncated STAP-A is ignored, not a panic.
    assert_eq!(scanner.scan(&stap[..10], 4), Scan::default());
}

#[test]
fn sps_is_reassembled_from_fu_a_in_sequence_only() {
    let sps = hex(SPS_HIGH_360P);
    let fu = |start: bool, end: bool, part: &[u8]| {
        let header = u8::from(start) << 7 | u8::from(end) << 6 | NAL_SPS;
        [&[0x7c, header][..], part].concat()
    };
    let (a, b) = sps[1..].split_at(10);
    let mut scanner = H264Scanner::default();
    assert_eq!(scanner.scan(&fu(true, false, a), 65535).sps, None);
    let found = scanner.scan(&fu(false, true, b), 0).sps.unwrap();
    assert_eq!((found.width, found.height), (640, 360));
    // A gap in the sequence numbers drops the fragment.
    let mut scanner = H264Scanner::default();
    scanner.scan(&fu(true, false, a), 10);
    assert_eq!(scanner.scan(&fu(false, true, b), 12).sps, None);
}

#[test]
fn b_slices_are_found_alone_in_stap_a_and_in_fu_a_starts() {
    let mut scanner = H264Scanner::default();
    assert!(!scanner.scan(&SLICE_P, 1).b_slice);
    assert!(scanner.scan(&SLICE_B, 2).b_slice);
    assert!(scanner.scan(&[0x41, 0x9e, 0x41, 0x78], 3).b_slice);
    let stap = [&[0x78, 0, 4][..], &SLICE_B].concat();
    assert!(scanner.scan(&stap, 4).b_slice);
    // FU-A start of a B slice: indicator, FU header (S, type 1), then the slice header.
    assert!(scanner.scan(&[0x5c, 0x81, 0x9e, 0x62], 5).b_slice);
    assert!(!scanner.scan(&[0x5c, 0x81, 0x9a, 0x23], 6).b_slice);
    // A middle fragment says nothing.
    assert!(!scanner.scan(&[0x5c, 0x01, 0x9e, 0x62], 7).b_slice);
    // Slice type 6 (all slices B) and an I slice (7).
    assert!(scanner.scan(&[0x01, 0b1001_1100], 8).b_slice);
    assert!(!scanner.scan(&[0x01, 0b1000_1000], 9).b_slice);
}
