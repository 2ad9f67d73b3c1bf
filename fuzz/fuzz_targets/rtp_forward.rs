//! RTP and RTCP from a publisher through the forwarder and the ingest's continuity state.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::forward_rtp(data);
});
