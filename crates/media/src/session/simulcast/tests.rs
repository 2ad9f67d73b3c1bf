use super::*;

fn feed(s: &mut LayerSelector, rid: &str, keyframe: bool) -> bool {
    let (ssrc, size) = match rid {
        "q" => (1, 100),
        "h" => (2, 400),
        _ => (3, 1000),
    };
    s.on_packet(rid, ssrc, size, keyframe)
}

#[test]
fn the_highest_layer_is_chosen_and_switched_to_on_its_keyframe() {
    let mut s = LayerSelector::new(None);
    assert!(feed(&mut s, "q", false), "first layer seen flows at once");
    assert!(!feed(&mut s, "f", false));
    s.evaluate();
    assert_eq!(s.target(), Some("f"));
    assert_eq!(s.pending_switch(), Some(3), "ask f for a keyframe");
    assert!(!feed(&mut s, "f", false), "no switch before a keyframe");
    assert!(
        feed(&mut s, "q", false),
        "the old layer keeps flowing meanwhile"
    );
    assert!(feed(&mut s, "f", true), "switch on f's keyframe");
    assert!(!feed(&mut s, "q", true), "q is now dropped");
    assert_eq!(s.pending_switch(), None);
}

#[test]
fn a_preferred_layer_wins_once_it_is_seen() {
    let mut s = LayerSelector::new(Some("h".into()));
    feed(&mut s, "f", true);
    s.evaluate();
    assert_eq!(s.target(), Some("f"), "h not seen yet");
    feed(&mut s, "h", false);
    assert_eq!(s.target(), Some("h"));
    assert!(feed(&mut s, "h", true));
    s.set_preferred(None);
    s.evaluate();
    assert_eq!(
        s.target(),
        Some("h"),
        "h carried the most in the last window"
    );
}

#[test]
fn small_fluctuations_do_not_flip_the_highest_layer() {
    let mut s = LayerSelector::new(None);
    s.on_packet("a", 1, 1000, true);
    s.on_packet("b", 2, 900, true);
    s.evaluate();
    assert_eq!(s.target(), Some("a"));
    s.on_packet("a", 1, 1000, false);
    s.on_packet("b", 2, 1100, false);
    s.evaluate();
    assert_eq!(s.target(), Some("a"), "10% more is within the margin");
}
