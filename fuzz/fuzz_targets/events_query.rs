//! The read API's request parsing (/events query, Last-Event-ID, events tokens).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::events_query(data);
});
