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
mod tests;
