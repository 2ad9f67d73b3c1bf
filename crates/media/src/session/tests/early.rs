//! The first DTLS flight of a publisher that starts DTLS before its nomination reached us
//! (libdatachannel, OBS's WebRTC library: its ClientHello follows its first answered check,
//! often ahead of USE-CANDIDATE). The gateway session is real and negotiated ([`crate::session::sim`]);
//! the publisher's side is made by hand so that the order on the wire is exactly the one under
//! test: a connectivity check signed with the session's ICE password, a nominating one, and a
//! ClientHello from a real DTLS client. Regression: the peer connection dropped every DTLS
//! record until a pair was selected, and an ICE-lite agent selected the pair only at the
//! publisher's STUN retransmission, so such a publisher waited for its 1 s DTLS retransmit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::dtls::config::ConfigBuilder;
use rtc::dtls::endpoint::Endpoint;
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::shared::TransportProtocol;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;

use super::core::MS;
use crate::session::Limits;
use crate::session::SessionTimers;
use crate::session::early::MAX_PER_SOURCE;
use crate::session::sim::{PUBLISHER, Sim};
use crate::session::{Datagram, Input, Output};

fn sim() -> Sim {
    Sim::new(
        SessionTimers {
            media_timeout: std::time::Duration::from_secs(5),
            connect_timeout: std::time::Duration::from_secs(10),
            stats_interval: std::time::Duration::from_secs(1),
        },
        Limits::default(),
    )
}

/// A connectivity check from the publisher, as a full controlling agent sends it.
fn check(sim: &Sim, nominate: bool) -> BytesMut {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let username = format!("{}:{}", sim.ufrag, sim.publisher_ufrag);
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(ATTR_USERNAME, username)),
        Box::new(AttrControlling(7)),
        Box::new(PriorityAttr(1_853_824_767)),
    ];
    if nominate {
        setters.push(Box::new(UseCandidateAttr));
    }
    setters.push(Box::new(
        MessageIntegrity::new_short_term_integrity_with_provider(
            sim.pwd.clone(),
            provider.crypto(),
        ),
    ));
    setters.push(Box::new(FINGERPRINT));
    let mut m = Message::new();
    m.build(&setters).expect("binding request");
    BytesMut::from(&m.raw[..])
}

/// The first flight of a real DTLS client: its ClientHello.
fn client_hello(now: Instant) -> BytesMut {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let config = ConfigBuilder::default()
        .with_crypto_provider(Arc::clone(&provider))
        .with_insecure_skip_verify(true)
        .build(true, None)
        .expect("DTLS client config");
    let gateway: SocketAddr = "127.0.0.1:8189".parse().expect("address");
    let mut client = Endpoint::new(PUBLISHER, TransportProtocol::UDP, None);
    client
        .connect(now, gateway, Arc::new(config), None)
        .expect("connect");
    let hello = client.poll_transmit().expect("a ClientHello");
    assert_eq!(hello.message.first(), Some(&22), "a DTLS handshake record");
    hello.message
}

fn datagram(data: BytesMut, at: Instant) -> Datagram {
    Datagram {
        data,
        from: PUBLISHER,
        at,
        tcp: false,
    }
}

/// Reads `datagrams` as one batch (the way a worker hands a session what one receive
/// returned), then lets the session handle what they produced.
fn batch(sim: &mut Sim, datagrams: Vec<BytesMut>) {
    for data in datagrams {
        let d = datagram(data, sim.now);
        sim.session.handle_input(sim.now, Input::Datagram(d));
    }
}

/// What the session sent to the publisher since the last call, by kind.
#[derive(Debug, Default, PartialEq)]
struct Sent {
    stun_responses: usize,
    stun_requests: usize,
    dtls: usize,
}

fn sent(sim: &mut Sim) -> Sent {
    let mut out = Sent::default();
    while let Some(d) = transmit(sim) {
        if crate::session::early::is_dtls(&d.message) {
            out.dtls += 1;
            continue;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(&d.message).is_ok() {
            if m.typ == BINDING_SUCCESS {
                out.stun_responses += 1;
            } else if m.typ == BINDING_REQUEST {
                out.stun_requests += 1;
            }
        }
    }
    out
}

/// The session's next datagram for the publisher (its events are kept, as the driver would).
fn transmit(sim: &mut Sim) -> Option<rtc::shared::TaggedBytesMut> {
    loop {
        match sim.session.poll_output() {
            Output::Transmit(t) => return Some(t),
            Output::Event(e) => sim.events.push(e),
            Output::Forward(_) => {}
            Output::Timeout(_) => return None,
        }
    }
}

fn records(sim: &Sim, outcome: &str) -> u64 {
    sim.meter.get("dtls_before_ice", outcome)
}

#[test]
fn a_client_hello_in_the_batch_of_the_nominating_check_is_answered_at_once() {
    let mut sim = sim();
    let data = vec![check(&sim, false)];
    batch(&mut sim, data);
    let first = sent(&mut sim);
    assert_eq!(first.stun_responses, 1, "the check is answered");
    assert_eq!(
        first.stun_requests, 0,
        "an ICE-lite agent sends no checks of its own (RFC 8445)"
    );
    sim.now += MS;
    // libdatachannel's order: the ClientHello overtakes the nominating check.
    let hello = client_hello(sim.now);
    let data = vec![hello, check(&sim, true)];
    batch(&mut sim, data);
    let answer = sent(&mut sim);
    assert_eq!(answer.stun_responses, 1, "the nomination is answered");
    assert!(
        answer.dtls >= 1,
        "the ClientHello is answered in the same instant, not at the publisher's retransmit: {answer:?}"
    );
    assert!(sim.session.progress.ice_selected);
    assert_eq!(records(&sim, "deferred"), 1);
    assert_eq!(records(&sim, "dropped"), 0);
}

#[test]
fn a_client_hello_right_after_the_nominating_check_is_answered_at_once() {
    let mut sim = sim();
    // A publisher that nominates with its first check (aggressive nomination, or a check
    // of its own retried) and starts DTLS on the answer.
    let data = vec![check(&sim, true)];
    batch(&mut sim, data);
    assert_eq!(sent(&mut sim).stun_responses, 1);
    assert!(
        sim.session.progress.ice_selected,
        "a verified USE-CANDIDATE selects the pair at once"
    );
    sim.now += MS;
    let data = vec![client_hello(sim.now)];
    batch(&mut sim, data);
    assert!(sent(&mut sim).dtls >= 1, "the ClientHello is answered");
    assert_eq!(records(&sim, "deferred"), 0, "nothing had to wait");
}

#[test]
fn a_client_hello_before_any_nomination_waits_for_it() {
    let mut sim = sim();
    let data = vec![check(&sim, false)];
    batch(&mut sim, data);
    sent(&mut sim);
    sim.now += MS;
    let data = vec![client_hello(sim.now)];
    batch(&mut sim, data);
    assert_eq!(sent(&mut sim).dtls, 0, "no pair is selected yet");
    assert_eq!(records(&sim, "deferred"), 1);
    sim.now += 10 * MS;
    let data = vec![check(&sim, true)];
    batch(&mut sim, data);
    let answer = sent(&mut sim);
    assert_eq!(answer.stun_responses, 1);
    assert!(
        answer.dtls >= 1,
        "the held ClientHello is handled when the pair is nominated: {answer:?}"
    );
    assert_eq!(records(&sim, "dropped"), 0);
}

#[test]
fn records_before_nomination_are_bounded_per_source() {
    let mut sim = sim();
    let data = vec![check(&sim, false)];
    batch(&mut sim, data);
    let hellos = (0..MAX_PER_SOURCE + 3)
        .map(|_| client_hello(sim.now))
        .collect();
    batch(&mut sim, hellos);
    assert_eq!(records(&sim, "deferred"), MAX_PER_SOURCE as u64);
    assert_eq!(records(&sim, "dropped"), 3);
    assert_eq!(sim.session.progress.early.len(), MAX_PER_SOURCE);
}
