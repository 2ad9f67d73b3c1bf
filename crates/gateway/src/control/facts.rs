//! Stream facts and warnings <-> proto.

use whipgate_media::codec::MediaKind;
use whipgate_media::facts::{AudioFacts, StreamFacts, StreamWarning, VideoFacts};
use whipgate_proto::pb;

/// Stream facts as the proto has them (zero: not known).
pub(super) fn stream_facts(f: &StreamFacts) -> pb::StreamFacts {
    pb::StreamFacts {
        video: f.video.as_ref().map(video),
        audio: f.audio.as_ref().map(audio),
    }
}

fn video(v: &VideoFacts) -> pb::VideoFacts {
    let (width, height) = v.resolution.unwrap_or_default();
    pb::VideoFacts {
        width,
        height,
        fps: v.fps.unwrap_or_default(),
        declared_fps: v.declared_fps.unwrap_or_default(),
        keyframe_interval_millis: v
            .keyframe_interval
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        profile_idc: v.profile_idc.map(u32::from).unwrap_or_default(),
        level_idc: v.level_idc.map(u32::from).unwrap_or_default(),
        b_frames: v.b_frames,
    }
}

fn audio(a: &AudioFacts) -> pb::AudioFacts {
    pb::AudioFacts {
        sample_rate: a.sample_rate,
        channels: u32::from(a.channels),
    }
}

/// A stream warning event's payload.
pub(super) fn stream_warning(kind: MediaKind, warning: StreamWarning) -> pb::StreamWarning {
    pb::StreamWarning {
        warning: match warning {
            StreamWarning::BFrames { .. } => pb::StreamWarningKind::BFrames,
        } as i32,
        kind: match kind {
            MediaKind::Video => pb::MediaKind::Video,
            MediaKind::Audio => pb::MediaKind::Audio,
        } as i32,
        detail: warning.detail().to_owned(),
    }
}

#[cfg(test)]
mod tests {
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
}
