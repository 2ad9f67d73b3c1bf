use std::time::Duration;

use super::*;
use whipgate_media::facts::BFrameSignal;

#[test]
fn unknown_facts_are_zero_and_known_ones_carry_over() {
    let facts = StreamFacts {
        video: Some(VideoFacts {
            resolution: Some((1280, 720)),
            fps: Some(29.97),
            keyframe_interval: Some(Duration::from_millis(2002)),
            profile_idc: Some(100),
            b_frames: true,
            ..VideoFacts::default()
        }),
        audio: Some(AudioFacts {
            sample_rate: 48_000,
            channels: 2,
        }),
    };
    let pb = stream_facts(&facts);
    let video = pb.video.unwrap();
    assert_eq!((video.width, video.height, video.fps), (1280, 720, 29.97));
    assert_eq!(video.keyframe_interval_millis, 2002);
    assert_eq!((video.profile_idc, video.level_idc), (100, 0));
    assert_eq!(video.declared_fps, 0.0);
    assert!(video.b_frames);
    assert_eq!(pb.audio.unwrap().channels, 2);
    assert_eq!(
        stream_facts(&StreamFacts::default()),
        pb::StreamFacts::default()
    );
}

#[test]
fn warnings_name_their_kind_and_say_what_to_do() {
    let warning = StreamWarning::BFrames {
        signal: BFrameSignal::SliceType,
    };
    let pb = stream_warning(MediaKind::Video, warning);
    assert_eq!(pb.warning, pb::StreamWarningKind::BFrames as i32);
    assert_eq!(pb.kind, pb::MediaKind::Video as i32);
    assert!(pb.detail.contains("B-frames"));
}
