//! Routing-table tests: only verified checks bind addresses, and the table stays bounded.

use super::*;
use crate::fuzz::binding_request as request;

const PWD_A: &str = "aaaaaaaaaaaaaaaaaaaaaa";
const PWD_B: &str = "bbbbbbbbbbbbbbbbbbbbbb";

/// A table whose sessions are their ids (dispatch says which one a datagram went to) and whose
/// ICE-TCP writers are numbers.
type TestMux = Router<Uuid, u32>;

fn mux() -> TestMux {
    Router::new(rtc::crypto::default_provider().unwrap())
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn dispatch(
    mux: &TestMux,
    packet: &[u8],
    from: SocketAddr,
    at: Instant,
) -> Result<Uuid, DropReason> {
    mux.dispatch(packet, from, at)
}

fn check(mux: &TestMux, username: &str, pwd: &str) -> Vec<u8> {
    request(username, Some(pwd), true, mux.crypto.crypto())
}

#[test]
fn unauthenticated_checks_never_bind_or_move_an_address() {
    let mux = mux();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let _ra = mux.route("ufragA".into(), PWD_A, a, a);
    let _rb = mux.route("ufragB".into(), PWD_B, b, b);
    let now = Instant::now();
    // B's publisher authenticates from its address.
    let b_addr = addr(4000);
    assert_eq!(
        dispatch(&mux, &check(&mux, "ufragB:x", PWD_B), b_addr, now),
        Ok(b)
    );
    assert_eq!(mux.session_of(b_addr), Some(b));
    // Spoofed checks naming A from B's address: wrong password, none, or no fingerprint.
    let c = mux.crypto.crypto();
    for spoof in [
        request("ufragA:x", Some("guessed password......"), true, c),
        request("ufragA:x", None, true, c),
        request("ufragA:x", None, false, c),
        request("ufragA:x", Some(PWD_A), false, c),
    ] {
        assert_eq!(
            dispatch(&mux, &spoof, b_addr, now),
            Err(DropReason::Unauthenticated)
        );
    }
    assert_eq!(
        dispatch(&mux, &check(&mux, "nobody:x", PWD_A), addr(4001), now),
        Err(DropReason::UnknownUfrag)
    );
    assert_eq!(mux.session_of(b_addr), Some(b));
    assert_eq!(mux.session_of(addr(4001)), None);
    // Media from an address no check authenticated goes nowhere.
    assert_eq!(
        dispatch(&mux, b"\x80\x60media", addr(4002), now),
        Err(DropReason::Unmatched)
    );
    assert_eq!(dispatch(&mux, b"\x80\x60media", b_addr, now), Ok(b));
}

#[test]
fn a_verified_check_of_another_session_cannot_take_a_fresh_address() {
    let mux = mux();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let _ra = mux.route("ufragA".into(), PWD_A, a, a);
    let _rb = mux.route("ufragB".into(), PWD_B, b, b);
    let now = Instant::now();
    dispatch(&mux, &check(&mux, "ufragB:x", PWD_B), addr(5000), now).unwrap();
    // Publisher A, who knows its own password, spoofs B's address.
    assert_eq!(
        dispatch(&mux, &check(&mux, "ufragA:x", PWD_A), addr(5000), now),
        Err(DropReason::AddressInUse)
    );
    assert_eq!(mux.session_of(addr(5000)), Some(b));
    // Once B stopped proving consent from it, the address may move (a NAT reusing a port).
    let later = now + ADDRESS_HOLD + Duration::from_secs(1);
    dispatch(&mux, &check(&mux, "ufragA:x", PWD_A), addr(5000), later).unwrap();
    assert_eq!(mux.session_of(addr(5000)), Some(a));
}

#[test]
fn addresses_per_session_are_capped_and_routes_go_with_the_session() {
    let mux = mux();
    let a = Uuid::new_v4();
    let route = mux.route("ufragA".into(), PWD_A, a, a);
    let now = Instant::now();
    for port in 0..(MAX_ADDRS as u16 + 5) {
        dispatch(
            &mux,
            &check(&mux, "ufragA:x", PWD_A),
            addr(6000 + port),
            now,
        )
        .unwrap();
    }
    // ufrag + session + the newest MAX_ADDRS addresses.
    assert_eq!(mux.routes(), 2 + MAX_ADDRS);
    assert_eq!(mux.session_of(addr(6000)), None, "oldest replaced");
    assert_eq!(mux.session_of(addr(6000 + MAX_ADDRS as u16 + 4)), Some(a));
    drop(route);
    assert_eq!(mux.routes(), 0);
}

#[test]
fn ice_restarts_keep_only_the_current_and_previous_ufrag() {
    let mux = mux();
    let a = Uuid::new_v4();
    let _route = mux.route("u0".into(), PWD_A, a, a);
    mux.add_ufrag("u1".into(), PWD_B, a);
    mux.add_ufrag("u2".into(), "cccccccccccccccccccccc", a);
    let now = Instant::now();
    assert_eq!(
        dispatch(&mux, &check(&mux, "u0:x", PWD_A), addr(7000), now),
        Err(DropReason::UnknownUfrag)
    );
    // The previous ufrag works with its own password only.
    assert_eq!(
        dispatch(&mux, &check(&mux, "u1:x", PWD_A), addr(7001), now),
        Err(DropReason::Unauthenticated)
    );
    assert_eq!(
        dispatch(&mux, &check(&mux, "u1:x", PWD_B), addr(7001), now),
        Ok(a)
    );
    assert_eq!(
        dispatch(
            &mux,
            &check(&mux, "u2:x", "cccccccccccccccccccccc"),
            addr(7002),
            now,
        ),
        Ok(a)
    );
    assert_eq!(mux.routes(), 2 + 1 + 2);
}

#[test]
fn ice_tcp_connections_are_claimed_only_with_a_verified_check() {
    let mux = mux();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let route = mux.route("ufragA".into(), PWD_A, a, a);
    let _rb = mux.route("ufragB".into(), PWD_B, b, b);
    let tx = 1;
    let unsigned = request("ufragA:x", None, true, mux.crypto.crypto());
    assert_eq!(
        mux.claim_tcp(&unsigned, addr(8000), tx).err(),
        Some(DropReason::Unauthenticated)
    );
    assert_eq!(
        mux.claim_tcp(b"\x16\xfe\xfd dtls", addr(8000), tx).err(),
        Some(DropReason::Unmatched)
    );
    let (owner, _) = mux
        .claim_tcp(&check(&mux, "ufragA:x", PWD_A), addr(8000), tx)
        .unwrap();
    assert_eq!(owner, a);
    assert_eq!(mux.tcp_writer(addr(8000)), Some(1));
    assert_eq!(mux.check_tcp(&check(&mux, "ufragA:y", PWD_A), a), Ok(()));
    assert_eq!(
        mux.check_tcp(&check(&mux, "ufragB:y", PWD_B), a),
        Err(DropReason::AddressInUse)
    );
    assert_eq!(
        mux.check_tcp(&unsigned, a),
        Err(DropReason::Unauthenticated)
    );
    mux.release_tcp(addr(8000));
    drop(route);
    assert_eq!(mux.routes(), 2);
}
