//! The ssh_config parser and host resolution on arbitrary text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    deploy_ssh::fuzzing::ssh_config(&String::from_utf8_lossy(data), "node1")
});
