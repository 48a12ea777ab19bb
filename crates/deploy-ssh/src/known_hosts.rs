//! Owns host key verification against OpenSSH known_hosts files: plain and
//! hashed (`|1|salt|hash`, HMAC-SHA1) host fields, patterns with `*`, `?`
//! and `!`, `[host]:port` names for ports other than 22, `@revoked` (refused)
//! and `@cert-authority` (ignored: host certificates are unsupported), and
//! appending a key accepted under accept-new.
//!
//! Policy: a key recorded for the host is accepted; any other key offered by
//! a host with recorded keys is a changed key and is refused; a host with no
//! recorded key is unknown.

use std::io::Write;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

use crate::error::SshError;

/// The name a host has in known_hosts: `host`, or `[host]:port` off port 22.
pub(crate) fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// `ALGO SHA256:...`, as OpenSSH shows keys.
pub(crate) fn describe(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

/// The outcome of a check that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The key is recorded for this host.
    Known,
    /// No key is recorded for this host.
    Unknown,
}

/// One usable known_hosts line.
pub(crate) struct Entry {
    file: PathBuf,
    line: usize,
    marker: Marker,
    key: PublicKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
}

/// The entries of `files` whose host field matches `name`.
fn entries_for(files: &[PathBuf], name: &str) -> Result<Vec<Entry>, SshError> {
    let mut out = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SshError::KnownHosts {
                    path: file.clone(),
                    source,
                })
            }
        };
        out.extend(entries_in(&text, file, name));
    }
    Ok(out)
}

/// The entries of known_hosts text `text` (read from `file`) whose host
/// field matches `name`; malformed lines are skipped.
pub(crate) fn entries_in(text: &str, file: &Path, name: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = trimmed.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => {
                tracing::debug!(file = %file.display(), line, "known_hosts: @cert-authority line ignored (host certificates are not supported)");
                continue;
            }
            m if m.starts_with('@') => {
                tracing::debug!(file = %file.display(), line, marker = m, "known_hosts: unknown marker, line ignored");
                continue;
            }
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next().unwrap_or_default();
        }
        let (Some(algo), Some(b64)) = (fields.next(), fields.next()) else {
            tracing::debug!(file = %file.display(), line, "known_hosts: malformed line ignored");
            continue;
        };
        if !hosts_match(first, name) {
            continue;
        }
        match PublicKey::from_openssh(&format!("{algo} {b64}")) {
            Ok(key) => out.push(Entry {
                file: file.to_path_buf(),
                line,
                marker,
                key,
            }),
            Err(e) => {
                tracing::debug!(file = %file.display(), line, error = %e, "known_hosts: unreadable key ignored")
            }
        }
    }
    out
}

/// Whether a host field (hashed, or a comma list of patterns) names `name`.
fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        let (pattern, negated) = match pattern.strip_prefix('!') {
            Some(p) => (p, true),
            None => (pattern, false),
        };
        if crate::config::glob_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `salt|hash` with hash = HMAC-SHA1(key = salt, name), both base64.
fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// The key algorithms recorded for the host, to prefer them in negotiation
/// (as OpenSSH does), so a host with several keys offers a recorded one.
pub(crate) fn known_algorithms(files: &[PathBuf], host: &str, port: u16) -> Vec<Algorithm> {
    match entries_for(files, &host_name(host, port)) {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.marker == Marker::None)
            .map(|e| e.key.algorithm())
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "known_hosts not readable for algorithm preference");
            Vec::new()
        }
    }
}

/// Checks `key` offered by `host:port` against `files`.
pub(crate) fn check(
    files: &[PathBuf],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, SshError> {
    let entries = entries_for(files, &host_name(host, port))?;
    if let Some(e) = entries
        .iter()
        .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
    {
        return Err(SshError::HostKeyRevoked {
            host: host.to_string(),
            port,
            fingerprint: describe(key),
            file: e.file.clone(),
            line: e.line,
        });
    }
    let recorded: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.marker == Marker::None)
        .collect();
    if recorded.iter().any(|e| e.key.key_data() == key.key_data()) {
        return Ok(Verdict::Known);
    }
    // Prefer reporting a recorded key of the same algorithm.
    let changed = recorded
        .iter()
        .find(|e| e.key.algorithm() == key.algorithm())
        .or(recorded.first());
    match changed {
        Some(e) => Err(SshError::HostKeyChanged {
            host: host.to_string(),
            port,
            expected: describe(&e.key),
            actual: describe(key),
            file: e.file.clone(),
            line: e.line,
        }),
        None => Ok(Verdict::Unknown),
    }
}

/// Records `key` for `host:port` in `files[0]` (created 0600, its
/// directory 0700, if missing) unless `files` know it by now. Under an
/// exclusive lock of that file, it checks `files` again (a parallel deploy
/// may have recorded the host meanwhile: a different key is then refused
/// as changed) and appends the line with one write, so parallel first
/// deploys never interleave or duplicate lines.
pub(crate) fn record_new(
    files: &[PathBuf],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<(), SshError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let Some(file) = files.first() else {
        return Ok(());
    };
    let err = |source| SshError::KnownHosts {
        path: file.to_path_buf(),
        source,
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let mut key = key.clone();
    key.set_comment("");
    let encoded = key
        .to_openssh()
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(err)?;
    // Released when `f` closes.
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| err(e.into()))?;
    if check(files, host, port, &key)? == Verdict::Known {
        return Ok(());
    }
    let line = format!("{} {}\n", host_name(host, port), encoded.trim());
    f.write_all(line.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key(s: &str) -> PublicKey {
        match PublicKey::from_openssh(s) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("known_hosts");
        if let Err(e) = std::fs::write(&path, text) {
            panic!("{e}");
        }
        (dir, path)
    }

    #[test]
    fn names() {
        assert_eq!(host_name("Node1", 22), "node1");
        assert_eq!(host_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn hashed_entry_matches() {
        // `ssh-keygen -H` output for "node1": salt and HMAC-SHA1 of the name.
        let salt = [7u8; 20];
        let mut mac = match Hmac::<Sha1>::new_from_slice(&salt) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        mac.update(b"node1");
        let hash = mac.finalize().into_bytes();
        let field = format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&hash));
        assert!(hosts_match(&field, "node1"));
        assert!(!hosts_match(&field, "node2"));
    }

    #[test]
    fn known_unknown_changed_revoked() {
        let (_d, path) = file(&format!(
            "# comment\n@cert-authority * {KEY_B}\nnode1,!node2 {KEY_A}\n[node3]:2222 {KEY_A}\n"
        ));
        let files = vec![path.clone()];
        assert_eq!(
            check(&files, "node1", 22, &key(KEY_A)).ok(),
            Some(Verdict::Known)
        );
        assert_eq!(
            check(&files, "node2", 22, &key(KEY_A)).ok(),
            Some(Verdict::Unknown)
        );
        assert_eq!(
            check(&files, "node3", 22, &key(KEY_A)).ok(),
            Some(Verdict::Unknown)
        );
        assert_eq!(
            check(&files, "node3", 2222, &key(KEY_A)).ok(),
            Some(Verdict::Known)
        );
        match check(&files, "node1", 22, &key(KEY_B)) {
            Err(SshError::HostKeyChanged {
                line,
                expected,
                actual,
                ..
            }) => {
                assert_eq!(line, 3);
                assert!(expected.starts_with("ssh-ed25519 SHA256:"));
                assert_ne!(expected, actual);
            }
            other => panic!("{other:?}"),
        }
        let (_d2, revoked) = file(&format!("@revoked * {KEY_A}\nnode1 {KEY_A}\n"));
        assert!(matches!(
            check(&[revoked], "node1", 22, &key(KEY_A)),
            Err(SshError::HostKeyRevoked { line: 1, .. })
        ));
    }

    #[test]
    fn append_then_known() {
        let (_d, path) = file("");
        let files = vec![path.clone()];
        if let Err(e) = record_new(&files, "127.0.0.1", 2200, &key(KEY_A)) {
            panic!("{e}");
        }
        assert_eq!(
            check(&files, "127.0.0.1", 2200, &key(KEY_A)).ok(),
            Some(Verdict::Known)
        );
        assert_eq!(
            known_algorithms(&files, "127.0.0.1", 2200),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn parallel_records_neither_interleave_nor_repeat() {
        let (_d, path) = file("");
        let files = vec![path.clone()];
        std::thread::scope(|scope| {
            for i in 0..32 {
                let files = &files;
                // Each host twice, at once.
                scope.spawn(move || record_new(files, &format!("node{}", i / 2), 22, &key(KEY_A)));
            }
        });
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let mut hosts: Vec<&str> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        assert!(
            text.lines()
                .all(|l| l.ends_with(KEY_A.split(' ').nth(1).unwrap_or("?"))),
            "{text}"
        );
        hosts.sort();
        let mut expected: Vec<String> = (0..16).map(|i| format!("node{i}")).collect();
        expected.sort();
        assert_eq!(hosts, expected);
        // A host recorded meanwhile with another key is a changed key.
        assert!(matches!(
            record_new(&files, "node3", 22, &key(KEY_B)),
            Err(SshError::HostKeyChanged { .. })
        ));
    }
}
