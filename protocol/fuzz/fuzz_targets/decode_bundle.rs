//! Arbitrary bytes → bundle decode, re-encode and verify never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_protocol::encoding::fuzzing::decode_bundle(data));
