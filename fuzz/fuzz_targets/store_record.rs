//! Stored registrations and output-stream records as a restart reads them back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::store_record(data);
});
