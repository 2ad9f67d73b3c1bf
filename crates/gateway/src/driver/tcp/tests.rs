use super::*;

#[test]
fn frames_are_split_without_copy_and_oversize_ones_rejected() {
    let mut input = BytesMut::new();
    input.extend_from_slice(&[0, 3, b'a', b'b', b'c', 0, 2, b'x']);
    assert_eq!(
        next_frame(&mut input).unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(next_frame(&mut input).unwrap(), None, "incomplete");
    input.extend_from_slice(b"y");
    assert_eq!(next_frame(&mut input).unwrap().as_deref(), Some(&b"xy"[..]));
    let big = (MAX_FRAME as u16 + 1).to_be_bytes();
    input.extend_from_slice(&big);
    assert_eq!(next_frame(&mut input), Err(DropReason::Oversize));
    let mut ok = BytesMut::from(&(MAX_FRAME as u16).to_be_bytes()[..]);
    ok.extend_from_slice(&[0; MAX_FRAME]);
    assert_eq!(
        next_frame(&mut ok).unwrap().map(|f| f.len()),
        Some(MAX_FRAME)
    );
}
