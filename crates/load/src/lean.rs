//! The lean transport of a WebRTC publisher, from webrtc-rs's own parts: ICE as the
//! controlling agent towards the gateway's first UDP candidate of our address family (STUN
//! checks with USE-CANDIDATE, `rtc-stun`; the gateway's own checks are answered), the DTLS
//! client handshake (`rtc-dtls`, the gateway's certificate checked against the answer's
//! fingerprint), then SRTP with the keys it exports (`rtc-srtp`), as the `rtc` peer connection
//! derives them, but without that connection's per-packet handler pipeline (which cost the
//! generator about half its CPU). The offer is still made by `rtc` (see [`super::offer`]);
//! RTCP from the gateway is decrypted and parsed so that keyframe requests and NACKs are
//! counted. Only one candidate pair is tried: a gateway reachable only through a later
//! candidate needs `--full-rtc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::HandshakeConfig;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::attributes::{
    control::AttrControlling, priority::PriorityAttr, use_candidate::UseCandidateAttr,
};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::TransportProtocol;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;

use crate::LoadError;

/// STUN checks are retransmitted this often until one is answered.
const CHECK_RETRY: Duration = Duration::from_millis(200);
/// Consent checks once connected (RFC 7675 wants one at least every 5 s).
const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// No connection by then: failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A host candidate's priority (RFC 8445 5.1.2.1, type preference 126, one component).
const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// Where the lean transport is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Connecting,
    Connected,
    Failed,
}

/// ICE, DTLS and SRTP of one publisher towards one gateway candidate.
pub(super) struct Lean {
    remote: SocketAddr,
    username: String,
    remote_pwd: String,
    /// Our ICE password: the gateway's own checks are answered with it.
    local_pwd: String,
    tie_breaker: u64,
    crypto: Arc<dyn RTCCryptoProvider>,
    config: Arc<HandshakeConfig>,
    dtls: Endpoint,
    dtls_started: bool,
    next_check: Instant,
    deadline: Instant,
    /// Encrypts what we send.
    srtp: Option<Context>,
    /// Decrypts the gateway's RTCP.
    srtcp: Option<Context>,
    pub(super) state: State,
    transmits: Vec<Bytes>,
    pub(super) keyframe_requests: u64,
    pub(super) nacks: u64,
}

/// `a=<name>:<value>` of an SDP, first occurrence.
fn attribute<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The first UDP candidate of an SDP (`a=candidate:f 1 udp prio ip port typ host`) in the
/// address family of `local`.
fn udp_candidate(sdp: &str, local: SocketAddr) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let c: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        if c.len() < 6 || !c[2].eq_ignore_ascii_case("udp") {
            return None;
        }
        let addr = SocketAddr::new(c[4].parse().ok()?, c[5].parse().ok()?);
        (addr.is_ipv4() == local.is_ipv4()).then_some(addr)
    })
}

impl Lean {
    /// Sets up from our offer and the gateway's answer (`local`: our socket's address);
    /// starts checking at once.
    pub(super) fn new(
        local: SocketAddr,
        offer: &str,
        answer: &str,
        certificate: &RTCCertificate,
        now: Instant,
    ) -> Result<Lean, LoadError> {
        let field = |sdp: &str, name: &str| {
            attribute(sdp, name)
                .map(str::to_owned)
                .ok_or_else(|| LoadError::Lean(format!("no a={name} in the SDP")))
        };
        let local_ufrag = field(offer, "ice-ufrag")?;
        let local_pwd = field(offer, "ice-pwd")?;
        let remote_ufrag = field(answer, "ice-ufrag")?;
        let remote_pwd = field(answer, "ice-pwd")?;
        let fingerprint = field(answer, "fingerprint")?;
        let remote = udp_candidate(answer, local)
            .ok_or_else(|| LoadError::Lean("no usable UDP candidate in the answer".into()))?;
        if attribute(answer, "setup") == Some("active") {
            return Err(LoadError::Lean(
                "the gateway wants to be the DTLS client (a=setup:active): use --full-rtc".into(),
            ));
        }
        let expected = fingerprint
            .strip_prefix("sha-256 ")
            .ok_or_else(|| LoadError::Lean("the answer's fingerprint is not sha-256".into()))?
            .trim()
            .to_ascii_lowercase();
        let crypto = rtc::crypto::default_provider().map_err(|e| LoadError::Lean(e.to_string()))?;
        let hasher = Arc::clone(&crypto);
        let verify: rtc::dtls::config::VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            let cert = certs
                .first()
                .ok_or(rtc::shared::error::Error::ErrNonCertificate)?;
            let hash = hasher
                .crypto()
                .hash(rtc::crypto::HashAlgorithm::Sha256, cert)
                .map_err(|e| rtc::shared::error::Error::Other(e.to_string()))?;
            let seen: Vec<String> = hash.iter().map(|b| format!("{b:02x}")).collect();
            if seen.join(":") == expected {
                Ok(())
            } else {
                Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
            }
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&crypto))
            .with_certificates(vec![certificate.dtls_certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, None)
            .map_err(|e| LoadError::Lean(format!("DTLS: {e}")))?;
        Ok(Lean {
            remote,
            username: format!("{remote_ufrag}:{local_ufrag}"),
            remote_pwd,
            local_pwd,
            tie_breaker: rand_u64(),
            crypto,
            config: Arc::new(config),
            dtls: Endpoint::new(remote, TransportProtocol::UDP, None),
            dtls_started: false,
            next_check: now,
            deadline: now + CONNECT_TIMEOUT,
            srtp: None,
            srtcp: None,
            state: State::Connecting,
            transmits: Vec::new(),
            keyframe_requests: 0,
            nacks: 0,
        })
    }

    /// The gateway's address.
    pub(super) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// When [`Lean::handle_timeout`] wants to run next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        // DTLS timers only matter during the handshake (asking costs a lookup per call).
        let dtls = (self.state == State::Connecting && self.dtls_started)
            .then(|| self.dtls.poll_timeout(&self.remote))
            .flatten();
        [Some(self.next_check), dtls].into_iter().flatten().min()
    }

    /// Checks, consent and DTLS retransmissions that are due.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Failed {
            return;
        }
        if self.state == State::Connecting && now >= self.deadline {
            tracing::debug!(remote = %self.remote, "ICE/DTLS timed out");
            self.state = State::Failed;
            return;
        }
        if now >= self.next_check {
            self.send_check();
            let connected = self.state == State::Connected;
            self.next_check = now
                + if connected {
                    CONSENT_INTERVAL
                } else {
                    CHECK_RETRY
                };
        }
        if self.dtls_started
            && self
                .dtls
                .poll_timeout(&self.remote)
                .is_some_and(|t| t <= now)
        {
            let _ = self.dtls.handle_timeout(self.remote, now);
            self.take_dtls_transmits();
        }
    }

    /// One datagram from the socket.
    pub(super) fn handle_read(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != self.remote || self.state == State::Failed {
            return;
        }
        match data.first() {
            Some(0..=3) => self.on_stun(now, data),
            Some(20..=63) => self.on_dtls(now, data),
            Some(128..=191) => self.on_rtcp(data),
            _ => {}
        }
    }

    /// Encrypts a marshalled RTP packet with its `header` (None before the keys exist or on
    /// an error).
    pub(super) fn protect(&mut self, rtp: &[u8], header: &rtc::rtp::Header) -> Option<Bytes> {
        self.srtp
            .as_mut()?
            .encrypt_rtp_with_header(rtp, header)
            .ok()
            .map(BytesMut::freeze)
    }

    /// The STUN and DTLS datagrams waiting to go to [`Lean::remote`].
    pub(super) fn take_transmits(&mut self) -> std::vec::Drain<'_, Bytes> {
        self.transmits.drain(..)
    }

    /// Ends DTLS politely (close_notify).
    pub(super) fn close(&mut self, now: Instant) {
        let _ = self.dtls.close(now);
        self.take_dtls_transmits();
        self.state = State::Failed;
    }

    fn send_check(&mut self) {
        let id = TransactionId::new();
        let mut msg = Message::new();
        let crypto = self.crypto.crypto();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(id),
            Box::new(Username::new(ATTR_USERNAME, self.username.clone())),
            Box::<UseCandidateAttr>::default(),
            Box::new(AttrControlling(self.tie_breaker)),
            Box::new(PriorityAttr(HOST_PRIORITY)),
        ];
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(
                self.remote_pwd.clone(),
                crypto,
            ),
        ));
        setters.push(Box::new(FINGERPRINT));
        if msg.build(&setters).is_ok() {
            self.transmits.push(Bytes::from(msg.raw));
        }
    }

    /// Answers the gateway's checks (a full agent checks back) and takes any answer to ours
    /// as the pair working (a retransmitted check has a new transaction id).
    fn on_stun(&mut self, now: Instant, data: &[u8]) {
        let mut msg = Message::new();
        if msg.unmarshal_binary(data).is_err() {
            return;
        }
        if msg.typ == BINDING_REQUEST {
            self.answer_check(&msg);
            return;
        }
        if msg.typ != BINDING_SUCCESS {
            return;
        }
        if !self.dtls_started {
            self.dtls_started = true;
            if self
                .dtls
                .connect(now, self.remote, Arc::clone(&self.config), None)
                .is_err()
            {
                self.state = State::Failed;
            }
            self.take_dtls_transmits();
            self.next_check = now + CONSENT_INTERVAL;
        }
    }

    fn answer_check(&mut self, request: &Message) {
        let mut msg = Message::new();
        let crypto = self.crypto.crypto();
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_SUCCESS),
            Box::new(request.transaction_id),
            Box::new(XorMappedAddress {
                ip: self.remote.ip(),
                port: self.remote.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.local_pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ];
        if msg.build(&setters).is_ok() {
            self.transmits.push(Bytes::from(msg.raw));
        }
    }

    fn on_dtls(&mut self, now: Instant, data: &[u8]) {
        if !self.dtls_started {
            return;
        }
        let events = match self.dtls.read(now, self.remote, None, BytesMut::from(data)) {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(remote = %self.remote, "DTLS: {e}");
                self.take_dtls_transmits();
                return;
            }
        };
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => match self.srtp_contexts() {
                    Ok((local, remote)) => {
                        self.srtp = Some(local);
                        self.srtcp = Some(remote);
                        self.state = State::Connected;
                    }
                    Err(e) => {
                        tracing::debug!(remote = %self.remote, "SRTP keys: {e}");
                        self.state = State::Failed;
                    }
                },
                // As with the `rtc` peer connection, a close_notify (the gateway ending the
                // session after our DELETE, typically) does not make the publisher failed.
                EndpointEvent::PeerClosed => {
                    tracing::debug!(remote = %self.remote, "DTLS closed by the gateway");
                }
                _ => {}
            }
        }
        self.take_dtls_transmits();
    }

    fn on_rtcp(&mut self, data: &[u8]) {
        // RTP payload types 64..=95 in the second byte are RTCP (RFC 5761).
        if !data.get(1).is_some_and(|b| (192..=223).contains(b)) {
            return;
        }
        let Some(plain) = self.srtcp.as_mut().and_then(|c| c.decrypt_rtcp(data).ok()) else {
            return;
        };
        let mut buf = plain.freeze();
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut buf) else {
            return;
        };
        for p in &packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                self.keyframe_requests += 1;
            } else if any.is::<TransportLayerNack>() {
                self.nacks += 1;
            }
        }
    }

    fn take_dtls_transmits(&mut self) {
        while let Some(t) = self.dtls.poll_transmit() {
            self.transmits.push(t.message.freeze());
        }
    }

    /// The SRTP contexts from the DTLS keying material (RFC 5764 4.2), as `rtc` derives them.
    fn srtp_contexts(&self) -> Result<(Context, Context), LoadError> {
        let state = self
            .dtls
            .get_connection_state(self.remote)
            .ok_or_else(|| LoadError::Lean("no DTLS state".into()))?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => {
                ProtectionProfile::Aes128CmHmacSha1_32
            }
            other => return Err(LoadError::Lean(format!("SRTP profile {other:?}"))),
        };
        let mut config = rtc::srtp::config::Config {
            profile,
            ..Default::default()
        };
        let material = state
            .export_keying_material(
                rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
                &[],
                config.keying_material_len(),
            )
            .map_err(|e| LoadError::Lean(e.to_string()))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| LoadError::Lean(e.to_string()))?;
        let crypto = self.crypto.crypto();
        let local = Context::new(
            &config.keys.local_master_key,
            &config.keys.local_master_salt,
            profile,
            None,
            None,
            crypto,
        )
        .map_err(|e| LoadError::Lean(e.to_string()))?;
        let remote = Context::new(
            &config.keys.remote_master_key,
            &config.keys.remote_master_salt,
            profile,
            None,
            Some(rtc::srtp::option::srtcp_replay_protection(64)),
            crypto,
        )
        .map_err(|e| LoadError::Lean(e.to_string()))?;
        Ok((local, remote))
    }
}

fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u128() as u64
}

#[cfg(test)]
mod tests;
