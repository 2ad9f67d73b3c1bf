//! H.264 over RTP (RFC 6184): finds the sequence parameter set (resolution, profile, level,
//! declared frame rate) and the type of each coded slice (B slices) in single NAL unit,
//! STAP-A and FU-A packets, walked by [`crate::h264::units`]. The SPS itself is parsed by `h264-reader`, which handles the
//! emulation-prevention bytes, cropping and the VUI.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitRead, BitReader, ByteReader};

use super::SpsFacts;

use crate::h264::{self, Unit};

const NAL_SLICE: u8 = 1;
const NAL_SPS: u8 = 7;

/// Largest SPS kept for reassembly and comparison (real ones are 10 to 40 bytes; the
/// largest legal one with scaling lists is a few hundred).
const SPS_MAX: usize = 512;

/// What one packet said.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Scan {
    /// A sequence parameter set different from the last one seen.
    pub sps: Option<SpsFacts>,
    /// The packet starts a B slice.
    pub b_slice: bool,
}

/// Per-stream state: the last SPS (parsed again only when it changes) and an SPS being
/// reassembled from FU-A fragments. Fixed size: nothing is allocated per packet.
pub(super) struct H264Scanner {
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
    pub(super) fn scan(&mut self, payload: &[u8], seq: u16) -> Scan {
        let mut scan = Scan::default();
        for unit in h264::units(payload) {
            match unit {
                Unit::Nal(nal) => self.nal_unit(nal, &mut scan),
                // A unit cut short by its packet is not parsed (the SPS comes again).
                Unit::Truncated(_) => {}
                Unit::Fragment {
                    indicator,
                    header,
                    data,
                } => self.fragment(indicator, header, data, seq, &mut scan),
            }
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

    fn fragment(&mut self, indicator: u8, fu: u8, data: &[u8], seq: u16, scan: &mut Scan) {
        let (start, end, nal_type) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x1f);
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
pub(super) fn parse_sps(nal: &[u8]) -> Option<SpsFacts> {
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
pub(super) mod tests;
