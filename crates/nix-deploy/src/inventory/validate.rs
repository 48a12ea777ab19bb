//! What the inventory's strings may hold, checked before any node is
//! touched: they end up in shell commands, file names on nodes, nix.conf
//! and k3s's flags, so each is held to what its use allows (and is still
//! quoted wherever it is used).

use std::net::IpAddr;

use nix_wire::StorePath;

/// A node's name: a DNS name as k3s requires of node names (RFC 1123:
/// lowercase letters, digits, `-` and `.`, labels of 1 to 63 characters
/// that start and end with a letter or digit, 253 characters at most).
pub fn node_name(name: &str) -> Result<(), String> {
    let lowercase = name.bytes().all(|b| !b.is_ascii_uppercase() && b != b'_');
    match dns_name(name) {
        Ok(()) if lowercase => Ok(()),
        Ok(()) => Err(format!(
            "{name:?} has capital letters or '_': k3s takes lowercase DNS names as node names"
        )),
        Err(why) => Err(format!(
            "{name:?} is not a DNS name ({why}), as k3s requires of node names"
        )),
    }
}

/// A hostname: an IP address, or a DNS name (or an ssh_config alias of
/// the same characters).
pub fn hostname(host: &str) -> Result<(), String> {
    let bracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bracketed.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    dns_name(host)
        .map_err(|why| format!("{host:?} is neither an IP address nor a DNS name ({why})"))
}

/// Letters, digits and `-` in dot-separated labels of 1 to 63 characters
/// that neither start nor end with `-`; 253 characters at most; `_` is
/// allowed too, as in SRV names and many ssh_config aliases.
fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("1 to 253 characters".to_owned());
    }
    for label in name.strip_suffix('.').unwrap_or(name).split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(format!(
                "label {label:?}: 1 to 63 letters, digits, '-' or '_'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// A login name on the node: letters, digits, `.`, `_` and `-`, not
/// starting with `-`, 32 characters at most (as `useradd` allows).
pub fn ssh_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        format!("{user:?} is not a user name (letters, digits, '.', '_', '-'; 32 at most)")
    })
}

/// A nix.conf setting: a name of letters, digits and `-` (as every Nix
/// setting is spelled), and a value on one line without a `#` (which
/// nix.conf would take for a comment) or control characters.
pub fn nix_setting(key: &str, value: &str) -> Result<(), String> {
    let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !key_ok {
        return Err(format!(
            "{key:?} is not a setting name (letters, digits and '-')"
        ));
    }
    if value.contains('#') || value.chars().any(char::is_control) {
        return Err(format!(
            "{key} = {value:?}: a value is one line, without '#' or control characters"
        ));
    }
    Ok(())
}

/// Where a workload manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSource {
    /// A file in the Nix store (a flake's `./app.yaml`, or a derivation's
    /// output): read when the stage is made.
    StoreFile(String),
    /// The manifest's text itself.
    Text(String),
}

/// A workload manifest, `cluster.manifests.<name> = value`: the name is a
/// plain file name (it becomes one in the servers' manifest directory);
/// the value a file in the Nix store or the manifest's text. A path
/// outside the store is refused, so a flake can't make the deployer read
/// (and upload, and print) a local file such as its signing key.
pub fn manifest(name: &str, value: &str) -> Result<ManifestSource, String> {
    let name_ok = !name.starts_with('.')
        && !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(format!(
            "{name:?} is not a plain file name (letters, digits, '.', '_', '-'; not starting with '.')"
        ));
    }
    if !value.starts_with('/') {
        return Ok(ManifestSource::Text(value.to_owned()));
    }
    let in_store = StorePath::from_path_prefix(value)
        .is_ok_and(|(_, rest)| !rest.split('/').any(|part| part == ".." || part == "."));
    if in_store {
        Ok(ManifestSource::StoreFile(value.to_owned()))
    } else {
        Err(format!(
            "{name} = {value:?}: a manifest is a file in the Nix store (e.g. ./{name} in the flake) or the manifest's text; a path outside the store is not read"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_lowercase_dns_names() {
        for ok in ["k8s-cluster-main", "node1", "a.b-c", "x"] {
            assert_eq!(node_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Main",
            "a_b",
            "-a",
            "a-",
            "a b",
            "a;b",
            "a..b",
            "$(id)",
            &"a".repeat(64),
        ] {
            assert!(node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_ip_addresses_or_dns_names() {
        for ok in [
            "10.0.0.1",
            "::1",
            "[fe80::1]",
            "vps-1.example.com",
            "vps_1",
            "host.",
        ] {
            assert_eq!(hostname(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x$(cmd)",
            "a b",
            "-oProxyCommand=x",
            "a/b",
            "",
            "a;b",
            "`id`",
        ] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_settings_and_manifests() {
        assert_eq!(ssh_user("deploy"), Ok(()));
        assert!(ssh_user("-x").is_err() && ssh_user("a b").is_err() && ssh_user("").is_err());
        assert_eq!(
            nix_setting("extra-substituters", "https://c.example a b"),
            Ok(())
        );
        for (k, v) in [
            ("a b", "x"),
            ("a=b", "x"),
            ("", "x"),
            ("k", "x\ny = z"),
            ("k", "a # b"),
        ] {
            assert!(nix_setting(k, v).is_err(), "{k} = {v}");
        }
        let store = "/nix/store/ffffffffffffffffffffffffffffffff-app.yaml";
        assert_eq!(
            manifest("app.yaml", store),
            Ok(ManifestSource::StoreFile(store.to_owned()))
        );
        assert_eq!(
            manifest("app.yaml", "kind: Namespace"),
            Ok(ManifestSource::Text("kind: Namespace".to_owned()))
        );
        for (n, v) in [
            ("app.yaml", "/root/.config/nix-deploy/signing-key"),
            (
                "app.yaml",
                "/nix/store/ffffffffffffffffffffffffffffffff-x/../../etc/shadow",
            ),
            ("../x.yaml", "kind: x"),
            ("a/b.yaml", "kind: x"),
            (".hidden", "kind: x"),
        ] {
            assert!(manifest(n, v).is_err(), "{n} = {v}");
        }
    }
}
