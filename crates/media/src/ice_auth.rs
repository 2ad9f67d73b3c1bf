//! Authentication of ICE connectivity checks, before they may change routing.
//!
//! A binding request names its session by the local half of its USERNAME
//! (`<our ufrag>:<their ufrag>`) and proves it with MESSAGE-INTEGRITY, an HMAC keyed with the
//! session's short-term credential (our `ice-pwd`, RFC 8445 section 7.2.2 and RFC 5389
//! section 15.4). Only a check that verifies may bind an address or reach the ICE agent: an
//! unauthenticated request can neither divert media nor flip the agent's role.

use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::{
    ATTR_FINGERPRINT, ATTR_ICE_CONTROLLED, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message};

/// Why a datagram was not routed. The label of the drop counter, so a bounded set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, from an address no session has authenticated.
    Unmatched,
    /// STUN that does not parse, or a binding request without a usable USERNAME.
    Malformed,
    /// A binding request for a ufrag no live session has.
    UnknownUfrag,
    /// A binding request whose FINGERPRINT or MESSAGE-INTEGRITY is missing or wrong.
    Unauthenticated,
    /// A verified check from an address another session authenticated recently.
    AddressInUse,
    /// An ICE-TCP frame larger than a UDP datagram.
    Oversize,
    /// An ICE-TCP connection over the global or per-address cap.
    ConnectionLimit,
    /// A datagram of a session still setting up, while the setup threads' queue is full
    /// (ICE and DTLS retransmit).
    SetupBusy,
}

impl DropReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unmatched => "unmatched",
            DropReason::Malformed => "malformed",
            DropReason::UnknownUfrag => "unknown_ufrag",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::AddressInUse => "address_in_use",
            DropReason::Oversize => "oversize",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::SetupBusy => "setup_busy",
        }
    }
}

/// A parsed STUN binding request, not yet verified.
pub struct BindingRequest {
    message: Message,
    /// Our ufrag: the part of USERNAME before the colon.
    pub ufrag: String,
}

/// Parses a STUN message. `Ok(None)` for STUN that is not a binding request (indications,
/// responses): those carry no USERNAME and never change routing.
pub fn parse(packet: &[u8]) -> Result<Option<BindingRequest>, DropReason> {
    let mut message = Message::new();
    message
        .unmarshal_binary(packet)
        .map_err(|_| DropReason::Malformed)?;
    if message.typ != BINDING_REQUEST {
        return Ok(None);
    }
    let username = message
        .get(ATTR_USERNAME)
        .map_err(|_| DropReason::Unauthenticated)?;
    let username = std::str::from_utf8(&username).map_err(|_| DropReason::Malformed)?;
    let (ours, theirs) = username.split_once(':').ok_or(DropReason::Malformed)?;
    if ours.is_empty() || theirs.is_empty() {
        return Err(DropReason::Malformed);
    }
    Ok(Some(BindingRequest {
        ufrag: ours.to_owned(),
        message,
    }))
}

/// Verifies a binding request with the session's short-term credential: FINGERPRINT present,
/// last and correct; MESSAGE-INTEGRITY present and correct for `pwd`; and no ICE-CONTROLLED
/// (a full agent facing an ICE-lite one is always controlling, RFC 8445 section 6.1.1, so a
/// request claiming the controlled role could only be a role-conflict probe).
pub fn verify(
    request: &mut BindingRequest,
    pwd: &[u8],
    crypto: &dyn RTCCrypto,
) -> Result<(), DropReason> {
    let m = &mut request.message;
    let last = m.attributes.0.last().map(|a| a.typ);
    if last != Some(ATTR_FINGERPRINT) || FINGERPRINT.check(m).is_err() {
        return Err(DropReason::Unauthenticated);
    }
    if !m.contains(ATTR_MESSAGE_INTEGRITY) || m.contains(ATTR_ICE_CONTROLLED) {
        return Err(DropReason::Unauthenticated);
    }
    MessageIntegrity::check(m, pwd, crypto).map_err(|_| DropReason::Unauthenticated)
}

#[cfg(test)]
mod tests;
