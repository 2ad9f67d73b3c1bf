use super::*;

const ANSWER: &str = "v=0\r\na=ice-ufrag:gw\r\na=ice-pwd:secretsecretsecretsecret\r\n\
    a=fingerprint:sha-256 AB:CD\r\na=setup:passive\r\n\
    a=candidate:1 1 udp 2130706431 ::1 9000 typ host\r\n\
    a=candidate:2 1 tcp 1671430143 127.0.0.1 9000 typ host tcptype passive\r\n\
    a=candidate:3 1 udp 2130706431 127.0.0.1 9001 typ host\r\n";

#[test]
fn the_answer_gives_credentials_and_a_candidate_of_our_family() {
    assert_eq!(attribute(ANSWER, "ice-ufrag"), Some("gw"));
    assert_eq!(attribute(ANSWER, "setup"), Some("passive"));
    assert_eq!(attribute(ANSWER, "ice-options"), None);
    let v4 = SocketAddr::from(([127, 0, 0, 1], 5000));
    let v6: SocketAddr = "[::1]:5000".parse().expect("address");
    assert_eq!(
        udp_candidate(ANSWER, v4),
        Some("127.0.0.1:9001".parse().expect("addr"))
    );
    assert_eq!(
        udp_candidate(ANSWER, v6),
        Some("[::1]:9000".parse().expect("addr"))
    );
    assert_eq!(
        udp_candidate("a=candidate:1 1 tcp 1 127.0.0.1 9 typ host\r\n", v4),
        None
    );
}

#[test]
fn a_gateway_that_wants_to_be_the_dtls_client_is_refused() {
    let provider = rtc::crypto::default_provider().expect("provider");
    let certificate = RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        rtc::peer_connection::certificate::CertificateParams::new(vec!["t".to_owned()])
            .expect("params"),
    )
    .expect("certificate");
    let offer = "a=ice-ufrag:me\r\na=ice-pwd:mypasswordmypasswordmy\r\n";
    let local = SocketAddr::from(([127, 0, 0, 1], 5000));
    let now = Instant::now();
    let active = ANSWER.replace("a=setup:passive", "a=setup:active");
    let err = Lean::new(local, offer, &active, &certificate, now).err();
    assert!(err.is_some_and(|e| e.to_string().contains("setup:active")));
    let lean = Lean::new(local, offer, ANSWER, &certificate, now).expect("lean");
    assert_eq!(lean.remote(), SocketAddr::from(([127, 0, 0, 1], 9001)));
    assert_eq!(lean.state, State::Connecting);
    assert!(Lean::new(local, "a=ice-ufrag:me\r\n", ANSWER, &certificate, now).is_err());
}
