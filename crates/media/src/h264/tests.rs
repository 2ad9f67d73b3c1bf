use super::*;

#[test]
fn a_single_nal_unit_is_one_unit() {
    let got: Vec<_> = units(&[0x65, 0x88, 0x84]).collect();
    assert_eq!(got, [Unit::Nal(&[0x65, 0x88, 0x84])]);
    assert_eq!(got[0].nal_type(), Some(NAL_IDR));
}

#[test]
fn a_stap_a_yields_each_unit_then_stops_at_a_short_tail() {
    // SPS (2 bytes), IDR (2 bytes), then one stray byte.
    let payload = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x65, 0x88, 0];
    let got: Vec<_> = units(&payload).collect();
    assert_eq!(got, [Unit::Nal(&[0x67, 0x42]), Unit::Nal(&[0x65, 0x88])]);
}

#[test]
fn a_stap_a_unit_longer_than_the_packet_is_truncated_and_ends_the_walk() {
    let payload = [0x78, 0, 9, 0x65, 0x88];
    let got: Vec<_> = units(&payload).collect();
    assert_eq!(got, [Unit::Truncated(&[0x65, 0x88])]);
    assert_eq!(got[0].nal_type(), Some(NAL_IDR));
    // A zero size is malformed: what follows is not trusted as a unit of its own.
    assert_eq!(units(&[0x78, 0, 0, 0x65]).count(), 1);
}

#[test]
fn an_fu_a_is_one_fragment_with_its_header() {
    let got: Vec<_> = units(&[0x7c, 0x85, 0x88, 0x99]).collect();
    assert_eq!(
        got,
        [Unit::Fragment {
            indicator: 0x7c,
            header: 0x85,
            data: &[0x88, 0x99]
        }]
    );
    assert!(got[0].starts_nal());
    assert_eq!(got[0].nal_type(), Some(NAL_IDR));
    assert!(
        !units(&[0x7c, 0x05, 0x88])
            .next()
            .is_some_and(|u| u.starts_nal())
    );
    assert_eq!(units(&[0x7c]).count(), 0, "an FU-A without its header");
    assert_eq!(units(&[]).count(), 0);
}
