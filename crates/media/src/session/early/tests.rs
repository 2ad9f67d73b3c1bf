use super::*;
use std::net::SocketAddr;
use std::time::Instant;

fn record(from: &str, first: u8) -> Datagram {
    Datagram {
        from: from.parse::<SocketAddr>().expect("address"),
        data: bytes::BytesMut::from(&[first, 0xfe, 0xfd][..]),
        at: Instant::now(),
        tcp: false,
    }
}

#[test]
fn only_dtls_content_types_are_dtls() {
    assert!(is_dtls(&[22, 0xfe, 0xfd]), "handshake");
    assert!(is_dtls(&[20]) && is_dtls(&[63]));
    assert!(!is_dtls(&[0, 1]), "STUN");
    assert!(!is_dtls(&[0x80, 96]), "RTP");
    assert!(!is_dtls(&[]));
}

#[test]
fn records_are_held_in_order_and_bounded_per_source_and_in_total() {
    let mut early = EarlyRecords::default();
    for _ in 0..MAX_PER_SOURCE {
        assert!(early.hold(record("127.0.0.1:5000", 22)).is_ok());
    }
    assert!(
        early.hold(record("127.0.0.1:5000", 22)).is_err(),
        "one source holds at most MAX_PER_SOURCE"
    );
    let mut port = 5001;
    while early.len() < MAX_HELD {
        assert!(early.hold(record(&format!("127.0.0.1:{port}"), 22)).is_ok());
        port += 1;
    }
    assert!(
        early.hold(record("127.0.0.2:6000", 22)).is_err(),
        "total bound"
    );
    let taken = early.take();
    assert_eq!(taken.len(), MAX_HELD);
    assert!(
        taken
            .iter()
            .take(MAX_PER_SOURCE)
            .all(|d| d.from.port() == 5000)
    );
    assert_eq!(early.len(), 0);
}
