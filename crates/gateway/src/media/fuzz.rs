//! The fuzz wrapper over the media driver's router (`mux`), reached as a child of `media` (no
//! widened visibility); the session core's own are in `whipgate_media::fuzz`. Compiled with the
//! `_fuzz` feature (the fuzz crate enables it) and in unit tests, so a change to the code under
//! test that breaks a wrapper breaks `cargo test`, not only the fuzz run. Re-exported by
//! [`crate::fuzzing`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::mux;
use crate::fuzzing::{FUZZ_PWD, FUZZ_UFRAG};
use whipgate_media::ice_auth;
use whipgate_media::peer::PeerFactory;

/// A runtime for the socket the mux wants (never driven: sends stay
/// would-block, which the code under test handles like a full socket buffer).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("fuzz runtime")
    })
}

fn udp_socket() -> tokio::net::UdpSocket {
    let _entered = runtime().enter();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("loopback UDP socket");
    socket.set_nonblocking(true).expect("non-blocking");
    tokio::net::UdpSocket::from_std(socket).expect("tokio UDP socket")
}

fn factory() -> &'static PeerFactory {
    static FACTORY: OnceLock<PeerFactory> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let udp = SocketAddr::from(([127, 0, 0, 1], 8189));
        PeerFactory::new(vec![udp], vec![udp]).expect("peer factory")
    })
}

/// The mux's routing of one UDP datagram from anyone (`UdpMux::dispatch`), then the same
/// bytes as the first frame of an ICE-TCP connection (`UdpMux::claim_tcp`). One session is
/// routed for [`FUZZ_UFRAG`] / [`FUZZ_PWD`]. Checks that an address is bound, and a TCP
/// connection claimed, only by a binding request whose MESSAGE-INTEGRITY verifies with that
/// password; that a datagram from an unbound address is never delivered unless it bound it;
/// and that dropping the route leaves nothing behind. Returns whether the datagram was routed.
pub fn stun_route(packet: &[u8]) -> bool {
    static MUX: OnceLock<mux::UdpMux<Uuid>> = OnceLock::new();
    let mux = MUX.get_or_init(|| mux::UdpMux::new(Arc::new(udp_socket()), factory().crypto()));
    let session = Uuid::from_u128(7);
    let route = mux.route(FUZZ_UFRAG.to_owned(), FUZZ_PWD, session, session);
    let from = SocketAddr::from(([127, 0, 0, 2], 40_000));
    let dispatched = mux.dispatch(packet, from, Instant::now());
    let routed = dispatched.is_ok();
    if let Ok(to) = dispatched {
        assert_eq!(to, session, "routed to the one session");
    }
    let bound = mux.session_of(from);
    let (writer, _frames) = mpsc::channel::<Bytes>(1);
    let claimed = mux
        .claim_tcp(packet, SocketAddr::from(([127, 0, 0, 3], 40_000)), writer)
        .is_ok();
    if routed || bound.is_some() || claimed {
        assert!(
            verifies(packet),
            "routed, bound or claimed without a valid integrity"
        );
        assert_eq!(bound, Some(session), "a routed check binds its address");
    }
    drop(route);
    assert_eq!(mux.routes(), 0, "a dropped route leaves nothing behind");
    routed
}

/// Whether `packet` is a binding request for [`FUZZ_UFRAG`] whose MESSAGE-INTEGRITY (and
/// FINGERPRINT) verify with [`FUZZ_PWD`].
fn verifies(packet: &[u8]) -> bool {
    let Ok(Some(mut request)) = ice_auth::parse(packet) else {
        return false;
    };
    let crypto = factory().crypto();
    request.ufrag == FUZZ_UFRAG
        && ice_auth::verify(&mut request, FUZZ_PWD.as_bytes(), crypto.crypto()).is_ok()
}
