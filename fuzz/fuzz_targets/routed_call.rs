//! Routed cluster calls as the owning node decodes them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::routed_call(data);
});
