//! Arbitrary bytes → sync message decode and re-encode never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_protocol::encoding::fuzzing::decode_message(data));
