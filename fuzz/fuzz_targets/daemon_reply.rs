//! The daemon client reading arbitrary daemon output (handshake, STDERR
//! messages, answers) at a protocol version the first byte picks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nix_wire::fuzzing::daemon_reply(data));
