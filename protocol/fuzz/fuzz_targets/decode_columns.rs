//! Arbitrary bytes → a batch's column layout decodes, re-encodes and decodes the same, never panicking.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_protocol::encoding::fuzzing::decode_columns(data));
