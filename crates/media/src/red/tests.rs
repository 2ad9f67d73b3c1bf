use super::*;

/// A RED payload of `blocks` (payload type, timestamp offset, data), the last the primary.
pub(super) fn red(blocks: &[(u8, u16, &[u8])]) -> Bytes {
    let mut out = Vec::new();
    let last = blocks.len() - 1;
    for (i, (pt, offset, data)) in blocks.iter().enumerate() {
        if i == last {
            out.push(*pt & 0x7f);
        } else {
            let len = data.len();
            out.push(0x80 | (*pt & 0x7f));
            out.push((offset >> 6) as u8);
            out.push((((offset & 0x3f) << 2) as u8) | ((len >> 8) as u8 & 0x03));
            out.push((len & 0xff) as u8);
        }
    }
    for (_, _, data) in blocks {
        out.extend_from_slice(data);
    }
    Bytes::from(out)
}

#[test]
fn a_packet_with_two_redundant_blocks_splits_into_three_frames() {
    let payload = red(&[
        (111, 1920, b"two back"),
        (111, 960, b"one back"),
        (111, 0, b"now"),
    ]);
    let split = split(&payload).expect("well formed");
    assert_eq!(split.primary.payload_type, 111);
    assert_eq!(&split.primary.payload[..], b"now");
    let got: Vec<_> = split
        .redundant
        .iter()
        .map(|b| (b.payload_type, b.timestamp_offset, &b.payload[..]))
        .collect();
    assert_eq!(
        got,
        vec![(111, 1920, &b"two back"[..]), (111, 960, &b"one back"[..])]
    );
}

#[test]
fn a_primary_only_packet_and_an_empty_redundant_block_split() {
    let only = split(&red(&[(111, 0, b"x")])).expect("primary only");
    assert!(only.redundant.is_empty());
    assert_eq!(&only.primary.payload[..], b"x");
    // DTX: a redundant block of length 0.
    let dtx = split(&red(&[(111, 960, b""), (111, 0, b"y")])).expect("empty block");
    assert_eq!(dtx.redundant.len(), 1);
    assert!(dtx.redundant[0].payload.is_empty());
}

#[test]
fn malformed_payloads_are_refused_without_panicking() {
    assert_eq!(split(&Bytes::new()), None);
    // A header that says "more follow" and ends.
    assert_eq!(split(&Bytes::from_static(&[0x80 | 111, 0, 4])), None);
    // A block longer than the packet.
    let mut bad = red(&[(111, 960, b"abcd"), (111, 0, b"")]).to_vec();
    bad.truncate(6);
    assert_eq!(split(&Bytes::from(bad)), None);
    // Too many blocks.
    let many: Vec<(u8, u16, &[u8])> = (0..12).map(|_| (111u8, 960u16, &b"a"[..])).collect();
    assert_eq!(split(&red(&many)), None);
    for n in 0..16u8 {
        let noise: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) | 0x80).collect();
        let _ = split(&Bytes::from(noise));
    }
}
