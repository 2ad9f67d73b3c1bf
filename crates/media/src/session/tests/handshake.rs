//! The DTLS handshake every session runs (rtc-dtls, as patched in `vendor/rtc-dtls`), driven
//! on simulated time with one datagram lost: it must complete by retransmission.
//!
//! Regression for the "Flight 4 retransmit > 7" stall: once a datagram of flight 5 (or 4) was
//! lost, the peer's retransmission of its previous flight disarmed the waiting side's timer, so
//! nobody ever sent the lost flight again and the gateway gave up after 8 s. Under media load a
//! full media socket dropped such a datagram for 8-15 % of new publishers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::dtls::config::{ConfigBuilder, HandshakeConfig};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::shared::TransportProtocol;

const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4444);
const SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4445);

fn config(is_client: bool) -> Arc<HandshakeConfig> {
    let provider = rtc::crypto::default_provider().expect("crypto provider");
    let mut builder = ConfigBuilder::default()
        .with_crypto_provider(Arc::clone(&provider))
        .with_insecure_skip_verify(true);
    if !is_client {
        let certificate =
            Certificate::generate_self_signed(vec!["whipgate".to_owned()], provider.crypto())
                .expect("certificate");
        builder = builder.with_certificates(vec![certificate]);
    }
    Arc::new(builder.build(is_client, None).expect("DTLS config"))
}

/// Which datagram the network loses: the `n`th (0-based) sent by the client or the server.
#[derive(Clone, Copy)]
enum Lose {
    Client(usize),
    Server(usize),
}

/// When each side completed, in simulated time from the start (None: never within `limit`).
struct Outcome {
    client: Option<Duration>,
    server: Option<Duration>,
}

/// Runs a client and a server as a discrete-event simulation: every datagram takes 1 ms of
/// simulated time, and when nothing is in flight the clock jumps to the earliest timer of
/// either side (whose retransmissions then fly). One datagram is lost; `limit` bounds the time.
fn handshake(lose: Lose, limit: Duration) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let mut server = Endpoint::new(SERVER, TransportProtocol::UDP, Some(config(false)));
    let mut client = Endpoint::new(CLIENT, TransportProtocol::UDP, None);
    client
        .connect(now, SERVER, config(true), None)
        .expect("connect");
    let (mut sent_by_client, mut sent_by_server) = (0usize, 0usize);
    let mut outcome = Outcome {
        client: None,
        server: None,
    };
    loop {
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(t) = client.poll_transmit() {
                moved = true;
                sent_by_client += 1;
                now += Duration::from_millis(1);
                if matches!(lose, Lose::Client(n) if n + 1 == sent_by_client) {
                    continue;
                }
                for event in server
                    .read(now, CLIENT, None, t.message)
                    .unwrap_or_default()
                {
                    if matches!(event, EndpointEvent::HandshakeComplete) {
                        outcome.server = Some(now.duration_since(start));
                    }
                }
            }
            while let Some(t) = server.poll_transmit() {
                moved = true;
                sent_by_server += 1;
                now += Duration::from_millis(1);
                if matches!(lose, Lose::Server(n) if n + 1 == sent_by_server) {
                    continue;
                }
                for event in client
                    .read(now, SERVER, None, t.message)
                    .unwrap_or_default()
                {
                    if matches!(event, EndpointEvent::HandshakeComplete) {
                        outcome.client = Some(now.duration_since(start));
                    }
                }
            }
        }
        if outcome.client.is_some() && outcome.server.is_some() {
            return outcome;
        }
        // Nothing in flight: the earliest timer fires (as the session loop runs it when due).
        let client_due = client.poll_timeout(&SERVER);
        let server_due = server.poll_timeout(&CLIENT);
        let due = match (client_due, server_due) {
            (Some(c), Some(s)) => c.min(s),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return outcome,
        };
        now = now.max(due);
        if now.duration_since(start) > limit {
            return outcome;
        }
        // A side whose handshake failed (retransmissions exhausted) ends, as a session does.
        let failed = if server_due == Some(due) {
            server.handle_timeout(CLIENT, now).is_err()
        } else {
            client.handle_timeout(SERVER, now).is_err()
        };
        if failed {
            return outcome;
        }
    }
}

#[test]
fn handshake_without_loss_completes_at_once() {
    let o = handshake(Lose::Client(usize::MAX - 1), Duration::from_secs(10));
    assert!(o.client.is_some_and(|t| t < Duration::from_millis(100)));
    assert!(o.server.is_some_and(|t| t < Duration::from_millis(100)));
}

#[test]
fn handshake_recovers_a_lost_client_flight_5() {
    // Client datagrams: flight 1 (ClientHello), flight 3 (ClientHello + cookie), flight 5.
    let o = handshake(Lose::Client(2), Duration::from_secs(10));
    assert!(
        o.server.is_some_and(|t| t < Duration::from_secs(3)),
        "server never completed: the lost flight 5 was not retransmitted"
    );
    assert!(o.client.is_some_and(|t| t < Duration::from_secs(3)));
}

#[test]
fn handshake_recovers_a_lost_server_flight_4() {
    // Server datagrams: flight 2 (HelloVerifyRequest), flight 4.
    let o = handshake(Lose::Server(1), Duration::from_secs(10));
    assert!(
        o.client.is_some_and(|t| t < Duration::from_secs(3)),
        "client never completed: the lost flight 4 was not retransmitted"
    );
    assert!(o.server.is_some_and(|t| t < Duration::from_secs(3)));
}

#[test]
fn handshake_recovers_a_lost_server_flight_6() {
    // The server's last flight (ChangeCipherSpec + Finished): the client repeats flight 5.
    let o = handshake(Lose::Server(2), Duration::from_secs(10));
    assert!(o.client.is_some_and(|t| t < Duration::from_secs(3)));
    assert!(o.server.is_some());
}
