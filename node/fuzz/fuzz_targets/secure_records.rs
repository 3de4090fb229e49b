//! A connection's encrypted records, damaged or cut anywhere: the reader
//! hands on only a prefix of what was sent and fails on any touched byte.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| troupe_node::secure::fuzzing::records(data));
