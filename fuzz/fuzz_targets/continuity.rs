//! Output stream continuity across packets, padding, reconnects and Sender Reports, with its
//! invariants (one output SSRC, consecutive input stays consecutive).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::continuity(data);
});
