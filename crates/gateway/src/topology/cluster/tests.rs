use super::*;

#[test]
fn keys_share_one_prefix() {
    let k = Keys::new("wg");
    assert_eq!(k.node("a"), "wg:node:a");
    assert_eq!(k.lease("cam-1"), "wg:lease:cam-1");
    assert_eq!(k.events_seq(), "wg:events:seq");
    assert_eq!(k.rpc_reply("x"), "wg:rpc:reply:x");
    assert_eq!(Keys::default().caps(), "whipgate:caps");
}

#[test]
fn node_ids_are_key_safe() {
    assert!(validate_node_id("host-8080").is_ok());
    for bad in ["", "a:b", "a b", &"x".repeat(65)] {
        assert!(validate_node_id(bad).is_err(), "{bad}");
    }
}
