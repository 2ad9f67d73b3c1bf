//! The publisher's RTCP BYE: when it ends a session and when it does not.

use std::time::Instant;

use rtc::rtcp::goodbye::Goodbye;

use crate::session::{EndCause, Progress, on_goodbye};

fn progress(video: Option<u32>, audio: Option<u32>) -> Progress {
    Progress {
        connected: true,
        video_ssrc: video,
        audio_ssrc: audio,
        ..Progress::new(Instant::now())
    }
}

fn bye(sources: &[u32]) -> Goodbye {
    Goodbye {
        sources: sources.to_vec(),
        reason: Default::default(),
    }
}

#[test]
fn the_session_ends_once_every_forwarded_stream_said_goodbye() {
    let mut p = progress(Some(1), Some(2));
    on_goodbye(&bye(&[1]), &mut p);
    assert!(p.end.is_none(), "audio is still live");
    // Another simulcast layer's SSRC, or an unknown one, changes nothing.
    on_goodbye(&bye(&[7, 8]), &mut p);
    assert!(p.end.is_none());
    on_goodbye(&bye(&[2]), &mut p);
    assert!(matches!(p.end, Some((EndCause::PublisherClose, _))));

    let mut p = progress(Some(1), Some(2));
    on_goodbye(&bye(&[2, 1]), &mut p);
    assert!(matches!(p.end, Some((EndCause::PublisherClose, _))));
}

#[test]
fn a_paused_simulcast_layer_is_not_a_goodbye() {
    // Three layers seen, the middle one forwarded, no audio.
    let mut p = progress(Some(2), None);
    p.seen_ssrcs.extend([1, 2, 3]);
    on_goodbye(&bye(&[2]), &mut p);
    assert!(p.end.is_none(), "the browser paused the forwarded layer");
    on_goodbye(&bye(&[1, 3]), &mut p);
    assert!(matches!(p.end, Some((EndCause::PublisherClose, _))));
}

#[test]
fn a_goodbye_before_any_stream_or_after_an_end_changes_nothing() {
    let mut p = progress(None, None);
    on_goodbye(&bye(&[1]), &mut p);
    assert!(p.end.is_none(), "nothing forwarded yet: nothing to close");

    let mut p = progress(Some(1), None);
    p.end = Some((EndCause::Inactivity, "first".into()));
    on_goodbye(&bye(&[1]), &mut p);
    assert!(
        matches!(p.end, Some((EndCause::Inactivity, _))),
        "the first end wins"
    );
}
