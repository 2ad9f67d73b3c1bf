//! A trickle-ice-sdpfrag PATCH (RFC 8840) restarting ICE on a live session negotiated from a
//! real Firefox offer.
#![no_main]

const OFFER: &str = include_str!("../../crates/gateway/tests/it/fixtures/firefox-esr-153-vp8-offer.sdp");

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = whipgate::fuzzing::ice_restart(OFFER, data);
});
