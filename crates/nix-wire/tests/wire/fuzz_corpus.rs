//! Replays the coverage-guided fuzzers' committed corpora (`fuzz/corpus`,
//! grown by `scripts/fuzz`) through the same entry points: every input the
//! fuzzers kept, crashes they found and fixed included, must still run
//! through the NAR decoder and the daemon client without a panic.

use test_support::fuzz_corpus as corpus;

#[test]
fn the_nar_decoder_survives_its_corpus() {
    for (path, data) in corpus("nar_decode") {
        let result = std::panic::catch_unwind(|| nix_wire::fuzzing::nar(&data));
        assert!(result.is_ok(), "{}", path.display());
    }
}

#[test]
fn the_daemon_client_survives_its_corpus() {
    for (path, data) in corpus("daemon_reply") {
        let result = std::panic::catch_unwind(|| nix_wire::fuzzing::daemon_reply(&data));
        assert!(result.is_ok(), "{}", path.display());
    }
}
