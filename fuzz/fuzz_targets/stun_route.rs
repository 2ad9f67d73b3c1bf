//! The media mux's STUN routing: one datagram from anyone on the internet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = whipgate::fuzzing::stun_route(data);
});
