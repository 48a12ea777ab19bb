//! Replays the coverage-guided fuzzers' committed corpora (`fuzz/corpus`,
//! grown by `scripts/fuzz`) of the ssh_config and known_hosts parsers
//! through the same entry points: none may panic.

use test_support::fuzz_corpus as corpus;

#[test]
fn the_ssh_config_parser_survives_its_corpus() {
    for (path, data) in corpus("ssh_config") {
        let text = String::from_utf8_lossy(&data);
        let result = std::panic::catch_unwind(|| deploy_ssh::fuzzing::ssh_config(&text, "node1"));
        assert!(result.is_ok(), "{}", path.display());
    }
}

#[test]
fn the_known_hosts_reader_survives_its_corpus() {
    for (path, data) in corpus("known_hosts") {
        let text = String::from_utf8_lossy(&data);
        let result =
            std::panic::catch_unwind(|| deploy_ssh::fuzzing::known_hosts(&text, "node1", 22));
        assert!(result.is_ok(), "{}", path.display());
    }
}
