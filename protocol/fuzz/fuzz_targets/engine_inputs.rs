//! Arbitrary input sequences to one sync engine, with model checks (see
//! `troupe_protocol::sync::fuzz`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_protocol::sync::fuzz::run(data));
