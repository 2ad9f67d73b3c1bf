use super::*;

#[test]
fn jitter_in_rtp_units_becomes_milliseconds_on_the_codec_clock() {
    // 889 ticks of a 90 kHz clock: the 889,000 "ms" the dashboard used to show.
    assert!((jitter_millis(889.0, VIDEO_CLOCK_RATE) - 9.877).abs() < 0.001);
    assert_eq!(jitter_millis(480.0, 48_000.0), 10.0);
    assert_eq!(jitter_millis(0.0, VIDEO_CLOCK_RATE), 0.0);
}
