use super::*;

#[test]
fn ingest_ids_are_url_safe() {
    for ok in ["a", "cam-1", "A.b_c~d", &"x".repeat(128)] {
        assert!(validate_ingest_id(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a/b", "a b", "é", "a%20", &"x".repeat(129)] {
        assert!(validate_ingest_id(bad).is_err(), "{bad}");
    }
}
