use super::*;

#[test]
fn outside_strings_are_bounded_and_escaped() {
    assert_eq!(bounded("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
    let long = "é".repeat(300);
    let cut = bounded(&long);
    assert!(
        cut.len() <= MAX_LOGGED_BYTES + '…'.len_utf8(),
        "{}",
        cut.len()
    );
    assert!(cut.ends_with('…'));
    assert_eq!(bounded("short"), "short");
}
