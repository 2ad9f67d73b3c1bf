//! The SDP offer planner and the negotiation after it: byte 0 picks the ingest's codecs, the
//! rest is the offer a publisher POSTs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = whipgate::fuzzing::answer_offer(data);
});
