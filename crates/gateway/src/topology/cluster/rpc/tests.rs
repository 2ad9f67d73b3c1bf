use super::*;
use crate::topology::cluster::trust::Trust;

/// Handles connect lazily: these tests never reach a server.
fn rpc(node: &str, secret: u8) -> Rpc {
    let trust = Trust::from_secret(&[secret; 32]).expect("secret");
    let redis = Redis::open("redis://127.0.0.1:1/0", Default::default(), trust).expect("url");
    Rpc::new(redis, Keys::default(), node)
}

fn soon() -> u64 {
    now_ms() + 5_000
}

#[test]
fn a_call_is_admitted_once_and_only_as_sent() {
    let (a, b) = (rpc("a", 1), rpc("b", 1));
    let mut inbox = b.serve("b");
    let (_, raw) = a.envelope("b", "teardown", soon()).expect("envelope");
    let call = inbox.admit(&raw).expect("genuine");
    assert_eq!((call.body.as_str(), call.from.as_str()), ("teardown", "a"));
    assert!(inbox.admit(&raw).is_none(), "replay");
    let tampered = raw.replace("teardown", "keyframe");
    let (_, fresh) = a.envelope("b", "teardown", soon()).expect("envelope");
    assert!(
        inbox
            .admit(&fresh.replace("teardown", "keyframe"))
            .is_none()
    );
    assert!(inbox.admit(&tampered).is_none());
    let (_, other_node) = a.envelope("c", "x", soon()).expect("envelope");
    assert!(inbox.admit(&other_node).is_none(), "for another node");
    let (_, far) = a.envelope("b", "x", now_ms() + 60_000).expect("envelope");
    assert!(inbox.admit(&far).is_none(), "deadline too far");
    let (_, foreign) = rpc("a", 2).envelope("b", "x", soon()).expect("envelope");
    assert!(inbox.admit(&foreign).is_none(), "another secret");
    assert!(
        inbox.admit(&fresh).is_some(),
        "the untouched one still passes"
    );
}

#[test]
fn a_full_replay_window_refuses_rather_than_forgets() {
    let (a, b) = (rpc("a", 1), rpc("b", 1));
    let mut inbox = b.serve("b");
    for i in 0..MAX_SEEN {
        inbox.seen.insert(format!("id-{i}"), soon());
    }
    let (_, raw) = a.envelope("b", "x", soon()).expect("envelope");
    assert!(inbox.admit(&raw).is_none(), "window full");
    // Ids whose deadline passed are forgotten, making room.
    for deadline in inbox.seen.values_mut() {
        *deadline = 1;
    }
    assert!(inbox.admit(&raw).is_some());
}
