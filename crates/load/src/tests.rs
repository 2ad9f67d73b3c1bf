use super::*;

#[test]
fn frames_average_to_the_bitrate() {
    let plan = LoadConfig::default().plan();
    let k = plan.keyframe_frames();
    assert_eq!(k, 60);
    let interval: usize = plan.frame_bytes(true) + (k as usize - 1) * plan.frame_bytes(false);
    let expected = (plan.bitrate / 8 * 2) as usize;
    assert!(
        interval.abs_diff(expected) < expected / 100,
        "{interval} vs {expected}"
    );
}
