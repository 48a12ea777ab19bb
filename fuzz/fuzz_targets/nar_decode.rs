//! The NAR decoder on arbitrary bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nix_wire::fuzzing::nar(data));
