use super::*;

fn trust(fill: u8) -> Trust {
    Trust::from_secret(&[fill; 32]).expect("secret")
}

#[test]
fn sealed_records_open_only_unchanged_under_their_id_and_kind() {
    let t = trust(1);
    let sealed = t.seal(Record::Ingest, "cam", r#"{"a":1}"#);
    assert_eq!(t.open(Record::Ingest, "cam", &sealed), Some(r#"{"a":1}"#));
    assert_eq!(t.open(Record::Ingest, "cam2", &sealed), None);
    assert_eq!(t.open(Record::Lease, "cam", &sealed), None);
    assert_eq!(t.open(Record::Ingest, "cam", r#"{"a":1}"#), None);
    let edited = sealed.replace(r#""a":1"#, r#""a":2"#);
    assert_eq!(t.open(Record::Ingest, "cam", &edited), None);
    assert_eq!(trust(2).open(Record::Ingest, "cam", &sealed), None);
    let bytes = t.seal_bytes(Record::Session, "cam", b"\x00\xffpb");
    assert_eq!(
        t.open_bytes(Record::Session, "cam", &bytes),
        Some(&b"\x00\xffpb"[..])
    );
    assert_eq!(t.open_bytes(Record::Session, "x", &bytes), None);
}

#[test]
fn rpc_tags_verify_only_for_the_same_fields_and_key() {
    let t = trust(1);
    let tag = t.sign_rpc(&[b"a", b"bc"]);
    assert!(t.verify_rpc(&[b"a", b"bc"], &tag));
    assert!(!t.verify_rpc(&[b"ab", b"c"], &tag), "framing");
    assert!(!trust(2).verify_rpc(&[b"a", b"bc"], &tag));
    assert!(!t.verify_rpc(&[b"a", b"bc"], "zz"));
    // The record key is another key: a record tag is no call tag.
    assert!(Trust::from_secret(&[0; 31]).is_err());
}
