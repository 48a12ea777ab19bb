//! The known_hosts reader on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    deploy_ssh::fuzzing::known_hosts(&String::from_utf8_lossy(data), "node1", 22)
});
