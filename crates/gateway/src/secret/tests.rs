use super::*;

#[test]
fn equal_secrets_match_and_others_do_not() {
    let key = Secret::new("s3cret");
    assert!(key.matches("s3cret"));
    assert!(!key.matches("s3cre"), "prefix");
    assert!(!key.matches("s3cret "), "longer");
    assert!(!key.matches(""));
    assert!(secrets_equal("", ""));
    assert!(!secrets_equal("a", "b"));
    assert_eq!(format!("{key:?}"), "Secret(..)", "no digest in logs");
}
#[test]
fn token_hashes_are_salted_and_check_the_token() {
    let a = TokenHash::new("t0ken");
    let b = TokenHash::new("t0ken");
    assert!(a.matches("t0ken") && b.matches("t0ken"));
    assert!(!a.matches("t0ke") && !a.matches("t0ken ") && !a.matches(""));
    assert_ne!(a, b, "a fresh salt per hash");
    let text = String::from(a.clone());
    assert!(
        text.starts_with("sha256:") && text.len() == 7 + 32 + 1 + 64,
        "{text}"
    );
    assert!(!text.contains("t0ken"));
    let back = TokenHash::try_from(text).expect("parses back");
    assert_eq!(back, a);
    assert!(back.matches("t0ken"));
    assert_eq!(format!("{a:?}"), "TokenHash(..)", "no hash in logs");
    assert!(TokenHash::same_token(None, None));
    assert!(TokenHash::same_token(Some(&a), Some("t0ken")));
    assert!(!TokenHash::same_token(Some(&a), Some("other")));
    assert!(!TokenHash::same_token(Some(&a), None));
    assert!(!TokenHash::same_token(None, Some("t0ken")));
}

#[test]
fn malformed_token_hashes_are_refused() {
    let good = String::from(TokenHash::new("x"));
    for bad in [
        String::new(),
        "t0ken".to_owned(),
        good.replacen("sha256", "md5", 1),
        format!("{good}:extra"),
        good[..good.len() - 2].to_owned(),
        format!("sha256:{}:{}", "zz".repeat(16), "00".repeat(32)),
    ] {
        assert!(TokenHash::try_from(bad.clone()).is_err(), "{bad}");
    }
}
