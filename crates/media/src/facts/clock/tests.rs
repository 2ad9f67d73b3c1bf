//! The keyframe interval, across forced keyframes.

use super::*;

#[test]
fn a_forced_keyframe_does_not_hide_the_encoders_cadence() {
    let mut clock = KeyframeClock::default();
    assert_eq!(clock.interval(90_000), None);
    clock.observe(0);
    assert_eq!(clock.interval(90_000), None);
    // A PLI-forced keyframe 0.1 s after the first, then the encoder's 2 s cadence.
    clock.observe(9_000);
    assert_eq!(
        clock.interval(90_000),
        None,
        "one short interval is no cadence"
    );
    clock.observe(180_000);
    assert_eq!(clock.interval(90_000), Some(Duration::from_millis(1_900)));
    clock.observe(360_000);
    assert_eq!(clock.interval(90_000), Some(Duration::from_secs(2)));
    // The same keyframe's later packets and a timestamp going back change nothing.
    clock.observe(360_000);
    clock.observe(100);
    assert_eq!(clock.interval(90_000), Some(Duration::from_secs(2)));
}
