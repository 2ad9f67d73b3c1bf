//! H.264 over RTP (RFC 6184): finds the sequence parameter set (resolution, profile, level,
//! declared frame rate) and the type of each coded slice (B slices) in single NAL unit,
//! STAP-A and FU-A packets. The SPS itself is parsed by `h264-reader`, which handles the
//! emulation-prevention bytes, cropping and the VUI.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitRead, BitReader, ByteReader};

use super::SpsFacts;

const NAL_SLICE: u8 = 1;
const NAL_SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Largest SPS kept for reassembly and comparison (real ones are 10 to 40 bytes; the
/// largest legal one with scaling lists is a few hundred).
const SPS_MAX: usize = 512;

/// What one packet said.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Scan {
    /// A sequence parameter set different from the last one seen.
    pub(crate) sps: Option<SpsFacts>,
    /// The packet starts a B slice.
    pub(crate) b_slice: bool,
}

/// Per-stream state: the last SPS (parsed again only when it changes) and an SPS being
/// reassembled from FU-A fragments. Fixed size: nothing is allocated per packet.
pub(crate) struct H264Scanner {
    last_sps: [u8; SPS_MAX],
    last_sps_len: usize,
    fragment: [u8; SPS_MAX],
    fragment_len: usize,
    /// Sequence number the next SPS fragment must have; `None` when not reassembling.
    fragment_next: Option<u16>,
}

impl Default for H264Scanner {
    fn default() -> Self {
        H264Scanner {
            last_sps: [0; SPS_MAX],
            last_sps_len: 0,
            fragment: [0; SPS_MAX],
            fragment_len: 0,
            fragment_next: None,
        }
    }
}

impl H264Scanner {
    /// Looks at one RTP payload (`seq` orders FU-A fragments).
    pub(crate) fn scan(&mut self, payload: &[u8], seq: u16) -> Scan {
        let mut scan = Scan::default();
        let Some(&first) = payload.first() else {
            return scan;
        };
        match first & 0x1f {
            STAP_A => {
                let mut rest = &payload[1..];
                while rest.len() > 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(nal) = rest.get(2..2 + size) else {
                        break;
                    };
                    self.nal_unit(nal, &mut scan);
                    rest = &rest[2 + size..];
                }
            }
            FU_A => self.fragment(payload, seq, &mut scan),
            _ => self.nal_unit(payload, &mut scan),
        }
        scan
    }

    /// A complete NAL unit (header byte included).
    fn nal_unit(&mut self, nal: &[u8], scan: &mut Scan) {
        let Some(&header) = nal.first() else { return };
        match header & 0x1f {
            NAL_SPS => {
                if let Some(sps) = self.sps_if_new(nal) {
                    scan.sps = Some(sps);
                }
            }
            NAL_SLICE => scan.b_slice |= is_b_slice(ByteReader::skipping_h264_header(nal)),
            _ => {}
        }
    }

    fn fragment(&mut self, payload: &[u8], seq: u16, scan: &mut Scan) {
        let (Some(&indicator), Some(&fu)) = (payload.first(), payload.get(1)) else {
            return;
        };
        let (start, end, nal_type) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x1f);
        let data = &payload[2..];
        if start {
            self.fragment_next = None;
            match nal_type {
                NAL_SLICE => scan.b_slice |= is_b_slice(ByteReader::without_skip(data)),
                NAL_SPS if data.len() < SPS_MAX => {
                    self.fragment[0] = (indicator & 0xe0) | nal_type;
                    self.fragment[1..=data.len()].copy_from_slice(data);
                    self.fragment_len = 1 + data.len();
                    self.fragment_next = Some(seq.wrapping_add(1));
                }
                _ => {}
            }
        } else if self.fragment_next == Some(seq) {
            let len = self.fragment_len;
            match self.fragment.get_mut(len..len + data.len()) {
                Some(room) => {
                    room.copy_from_slice(data);
                    self.fragment_len += data.len();
                    self.fragment_next = Some(seq.wrapping_add(1));
                }
                None => self.fragment_next = None,
            }
        } else {
            // A lost or foreign fragment: the SPS comes again with the next keyframe.
            self.fragment_next = None;
        }
        if end && self.fragment_next.is_some() {
            self.fragment_next = None;
            let fragment = self.fragment;
            if let Some(sps) = self.sps_if_new(&fragment[..self.fragment_len]) {
                scan.sps = Some(sps);
            }
        }
    }

    /// Parses an SPS unless it is byte for byte the last one (encoders repeat it before
    /// every keyframe).
    fn sps_if_new(&mut self, nal: &[u8]) -> Option<SpsFacts> {
        if nal.len() > SPS_MAX || nal == &self.last_sps[..self.last_sps_len] {
            return None;
        }
        let facts = parse_sps(nal)?;
        self.last_sps[..nal.len()].copy_from_slice(nal);
        self.last_sps_len = nal.len();
        Some(facts)
    }
}

/// Parses an SPS NAL unit (header byte included, emulation prevention still in).
pub(crate) fn parse_sps(nal: &[u8]) -> Option<SpsFacts> {
    let sps =
        SeqParameterSet::from_bits(BitReader::new(ByteReader::skipping_h264_header(nal))).ok()?;
    let (width, height) = sps.pixel_dimensions().ok()?;
    let restrictions = sps
        .vui_parameters
        .as_ref()
        .and_then(|vui| vui.bitstream_restrictions.as_ref());
    Some(SpsFacts {
        width,
        height,
        profile_idc: sps.profile_idc.into(),
        level_idc: sps.level_idc,
        declared_fps: sps.fps().filter(|fps| fps.is_finite() && *fps > 0.0),
        max_num_reorder_frames: restrictions.map(|r| r.max_num_reorder_frames),
    })
}

/// Whether a slice header (RBSP after the NAL header) says B: `first_mb_in_slice`, then
/// `slice_type`, both ue(v); types 1 and 6 are B.
fn is_b_slice<R: std::io::BufRead + Clone>(rbsp: ByteReader<R>) -> bool {
    let mut r = BitReader::new(rbsp);
    let _first_mb = r.read_ue("first_mb_in_slice");
    r.read_ue("slice_type").is_ok_and(|t| t % 5 == 1)
}

#[cfg(test)]
pub(super) mod tests {
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
}
