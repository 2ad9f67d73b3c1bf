use super::*;
use axum::http::HeaderValue;

fn with_bearer(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {value}")).unwrap(),
    );
    h
}

#[test]
fn tokens_open_events_once_for_their_filter_until_they_expire() {
    let access = ReadAccess::new(Some("sekrit"), false);
    let now = SystemTime::now();
    let none = HeaderMap::new();
    let token = access.issue("ingest_ids=cam", now).unwrap();
    assert_eq!(
        access
            .check_events(&none, Some(&token), "", now)
            .unwrap_err()
            .http_status(),
        401,
        "another filter"
    );
    assert!(matches!(
        access.check_events(&none, Some(&token), "ingest_ids=cam", now),
        Ok(Reader::Full)
    ));
    assert!(
        access
            .check_events(&none, Some(&token), "ingest_ids=cam", now)
            .is_err(),
        "spent"
    );
    let late = access.issue("", now).unwrap();
    let after = now + TOKEN_TTL + Duration::from_secs(2);
    assert!(access.check_events(&none, Some(&late), "", after).is_err());
    // A token cannot be made with the API key itself, nor with another key.
    let raw = hmac::Key::new(hmac::HMAC_SHA256, b"sekrit");
    let expiry = unix_secs(now) + 30;
    let forged = issue_token(&raw, expiry, &[7; 16], "");
    assert!(access.check_events(&none, Some(&forged), "", now).is_err());
    let good = issue_token(&derive_token_key("sekrit"), expiry, &[7; 16], "");
    assert!(matches!(
        access.check_events(&none, Some(&good), "", now),
        Ok(Reader::Full)
    ));
    for garbage in [
        "",
        ".",
        "x.y.z",
        "1.00.00",
        "99999999999999999999.0.0",
        "a.b.c.d",
    ] {
        assert!(
            access.check_events(&none, Some(garbage), "", now).is_err(),
            "{garbage:?}"
        );
    }
}

#[test]
fn the_key_reads_everything_and_strangers_read_only_when_public() {
    let keyed = ReadAccess::new(Some("sekrit"), false);
    assert!(matches!(
        keyed.check_key(&with_bearer("sekrit")),
        Ok(Reader::Full)
    ));
    assert_eq!(
        keyed
            .check_key(&with_bearer("sekri"))
            .unwrap_err()
            .http_status(),
        401
    );
    assert_eq!(
        keyed
            .check_key(&HeaderMap::new())
            .unwrap_err()
            .http_status(),
        401
    );
    let public = ReadAccess::new(Some("sekrit"), true);
    assert!(matches!(
        public.check_key(&HeaderMap::new()),
        Ok(Reader::Public)
    ));
    assert!(matches!(
        public.check_key(&with_bearer("sekrit")),
        Ok(Reader::Full)
    ));
    let off = ReadAccess::new(None, false);
    let err = off.check_key(&with_bearer("anything")).unwrap_err();
    assert_eq!(err.http_status(), 403);
    assert!(err.to_string().contains("--api-key-file"), "{err}");
    assert!(off.issue("", SystemTime::now()).is_err());
    let open = ReadAccess::new(None, true);
    assert!(matches!(
        open.check_key(&HeaderMap::new()),
        Ok(Reader::Public)
    ));
}
