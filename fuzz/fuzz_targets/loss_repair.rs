//! Loss repair (the sequence log, NACK schedule and give-up) and RED payload splitting on
//! hostile input, with their invariants (bounded holes, blocks inside the payload).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    whipgate::fuzzing::loss_repair(data);
});
