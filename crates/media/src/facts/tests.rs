//! Facts from real encoder output (x264, x265, libvpx, libaom headers) packetized as RTP.

use std::time::Duration;

use super::h264::tests::{SPS_HIGH_360P, hex};
use super::headers::{Size, av1_size, h265_sps, vp8_keyframe_size, vp9_size};
use super::*;

/// x265 (Main, 1920x1080 coded as 1088 with a conformance window, level 4).
const SPS_H265_1080P: &str =
    "420101016000000300900000030000030078a003c08010e596566924caf0168080000003008000000f04";
/// libaom: the sequence header OBU payload of a 352x288 stream.
const AV1_SEQUENCE_HEADER: [u8; 11] = [0, 0, 0, 4, 0x45, 0x7e, 0x3e, 0x6d, 0x7c, 0x80, 0x20];
/// libvpx: the first bytes of a 320x240 keyframe (frame tag, start code, sizes).
const VP8_KEYFRAME: [u8; 10] = [0xb0, 0x5a, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];

fn video(ssrc: u32, seq: u16, timestamp: u32, keyframe: bool, payload: &[u8]) -> VideoPacket<'_> {
    VideoPacket {
        ssrc,
        seq,
        timestamp,
        keyframe,
        payload,
    }
}

#[test]
fn h264_stream_gives_resolution_rates_and_keyframe_interval() {
    let mut tracker = VideoTracker::new(VideoCodec::H264, 90_000);
    let sps = hex(SPS_HIGH_360P);
    let (p_slice, idr) = ([0x41, 0x9a, 0x23], [0x65, 0x88, 0x84]);
    let mut seq = 65_000u16; // wraps during the test
    // 6 s at 25 fps, a keyframe every 2 s, two packets per frame; timestamps near the wrap.
    for frame in 0u32..150 {
        if frame == 51 {
            assert_eq!(
                tracker.facts().keyframe_interval,
                None,
                "one interval is not a cadence yet (a PLI may have cut it short)"
            );
        }
        let ts = (u32::MAX - 100_000).wrapping_add(frame * 3600);
        let keyframe = frame % 50 == 0;
        if keyframe {
            assert_eq!(tracker.observe(video(1, seq, ts, true, &sps)), None);
            seq = seq.wrapping_add(1);
        }
        let first: &[u8] = if keyframe { &idr } else { &p_slice };
        assert_eq!(tracker.observe(video(1, seq, ts, keyframe, first)), None);
        assert_eq!(
            tracker.observe(video(1, seq.wrapping_add(1), ts, false, &[0x41])),
            None
        );
        seq = seq.wrapping_add(2);
    }
    let facts = tracker.facts();
    assert_eq!(facts.resolution, Some((640, 360)));
    assert_eq!(facts.fps, Some(25.0), "measured, not the SPS's 30");
    assert_eq!(facts.declared_fps, Some(30.0));
    assert_eq!(facts.keyframe_interval, Some(Duration::from_secs(2)));
    assert_eq!((facts.profile_idc, facts.level_idc), (Some(100), Some(30)));
    assert!(!facts.b_frames);
}

#[test]
fn retransmissions_do_not_count_as_frames() {
    let mut tracker = VideoTracker::new(VideoCodec::Vp8, 90_000);
    for frame in 0u16..30 {
        let ts = u32::from(frame) * 3000;
        tracker.observe(video(7, frame * 2, ts, false, &[0x10, 1]));
        tracker.observe(video(7, frame * 2 + 1, ts, false, &[0x00, 1]));
        if frame > 3 {
            // A NACKed packet of an older frame arrives again.
            let old = frame - 3;
            tracker.observe(video(7, old * 2, u32::from(old) * 3000, false, &[0x10, 1]));
        }
    }
    assert_eq!(tracker.facts().fps, Some(30.0));
}

/// x264 with `-bf 2` in decode order: I P B B P B B..., timestamps are presentation times.
fn b_frame_stream(tracker: &mut VideoTracker, slices: bool) -> Vec<StreamWarning> {
    let sps = hex(SPS_HIGH_360P);
    let mut warnings = Vec::new();
    let order = [0u32, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11];
    for (i, &pts) in order.iter().enumerate() {
        let payload: &[u8] = match (i, pts % 3) {
            (0, _) => &sps,
            (_, 0) => &[0x41, 0x9a, 0x23],
            // B slices, or a codec this module cannot read slices of.
            _ if slices => &[0x01, 0x9e, 0x62],
            _ => &[0x02, 0x01, 0xaa],
        };
        let ts = 1_000 + pts * 3000;
        warnings.extend(tracker.observe(video(9, i as u16, ts, i == 0, payload)));
    }
    warnings
}

#[test]
fn b_slices_warn_once() {
    let mut tracker = VideoTracker::new(VideoCodec::H264, 90_000);
    let warnings = b_frame_stream(&mut tracker, true);
    assert_eq!(
        warnings,
        [StreamWarning::BFrames {
            signal: BFrameSignal::SliceType
        }]
    );
    let facts = tracker.facts();
    assert!(facts.b_frames);
    assert_eq!(
        facts.fps,
        Some(30.0),
        "reordered frames still measure 30 fps"
    );
}

#[test]
fn b_looking_slices_without_an_sps_that_allows_them_do_not_warn() {
    let mut tracker = VideoTracker::new(VideoCodec::H264, 90_000);
    // No SPS yet: bytes that parse as a B slice header (0x41 0xab: slice_type 1).
    for seq in 0..10u16 {
        let ts = u32::from(seq) * 3000;
        assert_eq!(
            tracker.observe(video(1, seq, ts, false, &[0x41, 0xab, 0xab])),
            None
        );
    }
    // A Baseline SPS (no B slices possible): still no warning.
    let baseline = hex("6742c01fd9005005bb011000000300100000030320f1832480");
    tracker.observe(video(1, 10, 30_000, true, &baseline));
    assert_eq!(
        tracker.observe(video(1, 11, 33_000, false, &[0x41, 0xab])),
        None
    );
    assert!(!tracker.facts().b_frames);
}

#[test]
fn reordered_timestamps_warn_without_slice_headers() {
    let mut tracker = VideoTracker::new(VideoCodec::H265, 90_000);
    let warnings = b_frame_stream(&mut tracker, false);
    assert_eq!(
        warnings,
        [StreamWarning::BFrames {
            signal: BFrameSignal::Reordering
        }]
    );
    assert!(warnings[0].detail().contains("B-frames"));
}

#[test]
fn network_reordering_is_not_b_frames() {
    let mut tracker = VideoTracker::new(VideoCodec::Vp8, 90_000);
    // Packets 2 and 3 swap in the network, again and again: not consecutive sequence
    // numbers with a backward timestamp, so no warning.
    for round in 0u16..20 {
        let base = round * 4;
        for seq in [base, base + 2, base + 1, base + 3] {
            let ts = u32::from(seq) * 3000;
            assert_eq!(tracker.observe(video(3, seq, ts, false, &[0x10, 1])), None);
        }
    }
    assert!(!tracker.facts().b_frames);
}

#[test]
fn a_new_ssrc_restarts_the_measurements() {
    let mut tracker = VideoTracker::new(VideoCodec::Vp8, 90_000);
    for frame in 0u16..10 {
        tracker.observe(video(
            1,
            frame,
            u32::from(frame) * 3000,
            frame == 0,
            &[0x10, 1],
        ));
    }
    assert_eq!(tracker.facts().fps, Some(30.0));
    // Another layer, another timestamp origin: no rate until enough of its own frames.
    tracker.observe(video(2, 500, 77_777, false, &[0x10, 1]));
    assert_eq!(tracker.facts().fps, None);
}

#[test]
fn vp8_keyframe_header_gives_the_size() {
    let mut tracker = VideoTracker::new(VideoCodec::Vp8, 90_000);
    // Descriptor with X, I (15-bit picture id), L and T/K: then the VP8 payload header.
    let payload = [&[0x90, 0xf0, 0x81, 0x23, 0x05, 0x20][..], &VP8_KEYFRAME].concat();
    tracker.observe(video(1, 1, 0, true, &payload));
    assert_eq!(tracker.facts().resolution, Some((320, 240)));
    assert_eq!(
        vp8_keyframe_size(&[&[0x10][..], &VP8_KEYFRAME].concat()),
        Some(Size {
            width: 320,
            height: 240
        })
    );
    // An inter frame, a wrong start code, a continuation packet, truncation.
    let mut inter = VP8_KEYFRAME;
    inter[0] |= 1;
    assert_eq!(vp8_keyframe_size(&[&[0x10][..], &inter].concat()), None);
    let mut bad = VP8_KEYFRAME;
    bad[4] = 0;
    assert_eq!(vp8_keyframe_size(&[&[0x10][..], &bad].concat()), None);
    assert_eq!(
        vp8_keyframe_size(&[&[0x00][..], &VP8_KEYFRAME].concat()),
        None
    );
    assert_eq!(vp8_keyframe_size(&[0x10, 0xb0, 0x5a]), None);
    assert_eq!(vp8_keyframe_size(&[0x90]), None);
}

#[test]
fn vp9_scalability_structure_gives_the_top_layer_size() {
    let size = |w: u16, h: u16| [w.to_be_bytes(), h.to_be_bytes()].concat();
    // I, B, V with a 7-bit picture id; one spatial layer 1280x720.
    let one = [&[0x8a, 0x05, 0x10][..], &size(1280, 720), &[0xaa]].concat();
    assert_eq!(
        vp9_size(&one),
        Some(Size {
            width: 1280,
            height: 720
        })
    );
    // 15-bit picture id, layer indices (non-flexible: two bytes), two spatial layers.
    let two = [
        &[0xaa, 0x80, 0x01, 0x00, 0x00, 0x30][..],
        &size(640, 360),
        &size(1280, 720),
    ]
    .concat();
    assert_eq!(vp9_size(&two).map(|s| s.width), Some(1280));
    // Flexible mode with two reference indices.
    let flexible = [&[0xda, 0x05, 0x03, 0x02, 0x10][..], &size(960, 540)].concat();
    assert_eq!(vp9_size(&flexible).map(|s| s.height), Some(540));
    // No V bit; V without Y; truncated.
    assert_eq!(vp9_size(&[0x88, 0x05]), None);
    assert_eq!(vp9_size(&[0x8a, 0x05, 0x00]), None);
    assert_eq!(vp9_size(&one[..5]), None);
    let mut tracker = VideoTracker::new(VideoCodec::Vp9, 90_000);
    tracker.observe(video(1, 1, 0, true, &one));
    assert_eq!(tracker.facts().resolution, Some((1280, 720)));
}

#[test]
fn h265_sps_gives_the_cropped_size_alone_and_aggregated() {
    let sps = hex(SPS_H265_1080P);
    let facts = h265_sps(&sps).unwrap();
    assert_eq!((facts.width, facts.height), (1920, 1080));
    assert_eq!((facts.profile_idc, facts.level_idc), (1, 120));
    // Aggregation packet (type 48): a VPS stub then the SPS.
    let mut ap = vec![48 << 1, 1, 0, 2, 32 << 1, 1, 0, sps.len() as u8];
    ap.extend_from_slice(&sps);
    assert_eq!(h265_sps(&ap).map(|f| f.height), Some(1080));
    assert_eq!(h265_sps(&sps[..12]), None, "truncated");
    assert_eq!(h265_sps(&ap[..10]), None, "truncated aggregate");
    let mut tracker = VideoTracker::new(VideoCodec::H265, 90_000);
    tracker.observe(video(1, 1, 0, true, &sps));
    assert_eq!(tracker.facts().resolution, Some((1920, 1080)));
}

#[test]
fn av1_sequence_header_gives_the_size() {
    let expected = Some(Size {
        width: 352,
        height: 288,
    });
    // W=1: one element without a length; OBU header type 1, no size field.
    let single = [&[0x18, 0x08][..], &AV1_SEQUENCE_HEADER].concat();
    assert_eq!(av1_size(&single), expected);
    // W=0: every element has a length; a temporal delimiter, then the sequence header
    // with its own size field (libaom's file form).
    let mut lengths = vec![0x08, 1, 0x10, 13, 0x0a, 11];
    lengths.extend_from_slice(&AV1_SEQUENCE_HEADER);
    assert_eq!(av1_size(&lengths), expected);
    // Z set (continuation), no sequence header, truncated.
    assert_eq!(
        av1_size(&[&[0x98, 0x08][..], &AV1_SEQUENCE_HEADER].concat()),
        None
    );
    assert_eq!(av1_size(&[0x10, 0x30, 0x00]), None);
    assert_eq!(av1_size(&single[..5]), None);
    let mut tracker = VideoTracker::new(VideoCodec::Av1, 90_000);
    tracker.observe(video(1, 1, 0, true, &single));
    assert_eq!(tracker.facts().resolution, Some((352, 288)));
}

#[test]
fn audio_facts_follow_the_sdp_then_the_opus_toc() {
    let mut mono = AudioTracker::new("opus", 48_000, 2, "minptime=10;useinbandfec=1");
    assert_eq!(
        mono.facts(),
        AudioFacts {
            sample_rate: 48_000,
            channels: 1
        }
    );
    let stereo = AudioTracker::new("OPUS", 48_000, 2, "minptime=10; stereo=1");
    assert_eq!(stereo.facts().channels, 2);
    // TOC: config 31 (CELT FB 20 ms), s=1.
    mono.observe(&[0xfc, 0x01]);
    assert_eq!(mono.facts().channels, 2);
    mono.observe(&[0xf8]);
    assert_eq!(mono.facts().channels, 1);
    mono.observe(&[]);
    assert_eq!(mono.facts().channels, 1);
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x1234_5678u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for codec in [
        VideoCodec::H264,
        VideoCodec::H265,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
    ] {
        let mut tracker = VideoTracker::new(codec, 90_000);
        for i in 0..2_000u16 {
            let len = (next() % 64) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            tracker.observe(video(1, i, next(), next() % 2 == 0, &payload));
        }
        let _ = tracker.facts();
    }
}
