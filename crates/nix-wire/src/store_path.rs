//! Store paths: `/nix/store/<32 nixbase32 chars>-<name>`, parsed and validated
//! with the rules of Nix's `path.cc`.

use std::fmt;
use std::str::FromStr;

use crate::base32;

/// The store directory every path here lives in. Nix allows others, but
/// binary caches and prebuilt closures only exist for this one.
pub const STORE_DIR: &str = "/nix/store";

/// Characters in the hash part of a store path.
pub const HASH_PART_LEN: usize = 32;

/// Longest name Nix accepts (255 minus the hash part and the dash, minus
/// room for `.lock`/`.chroot` suffixes, as in Nix).
pub const MAX_NAME_LEN: usize = 211;

/// Why a string is not a valid store path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store path {path:?}: {reason}")]
pub struct StorePathError {
    /// The offending text (truncated to 300 bytes).
    pub path: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

/// A validated store path. Ordered like Nix orders paths (byte order of the
/// full path), so sets of them print in the same order as Nix's.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: String,
}

impl StorePath {
    /// Parses a full path such as `/nix/store/<hash>-<name>`. A trailing
    /// slash or anything below the store path is an error: use
    /// [`StorePath::from_path_prefix`] to find the store path a file lies in.
    pub fn parse(full: &str) -> Result<Self, StorePathError> {
        let base = full
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| error(full, "not in /nix/store"))?;
        Self::from_base_name(base).map_err(|e| error(full, e.reason))
    }

    /// Parses `<hash>-<name>`, the file name inside the store directory.
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        let b = base.as_bytes();
        if b.len() < HASH_PART_LEN + 2 {
            return Err(error(base, "too short for a hash part and a name"));
        }
        if !b[..HASH_PART_LEN].iter().all(|&c| base32::is_valid_char(c)) {
            return Err(error(base, "hash part is not nixbase32"));
        }
        if b[HASH_PART_LEN] != b'-' {
            return Err(error(base, "no '-' after the 32-character hash part"));
        }
        validate_name(&base[HASH_PART_LEN + 1..]).map_err(|reason| error(base, reason))?;
        Ok(Self {
            base: base.to_owned(),
        })
    }

    /// The store path containing `path` (which may be a file deep inside it),
    /// and the rest of `path` below it (empty or starting with `/`).
    pub fn from_path_prefix(path: &str) -> Result<(Self, &str), StorePathError> {
        let rest = path
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| error(path, "not in /nix/store"))?;
        let end = rest.find('/').unwrap_or(rest.len());
        let sp = Self::from_base_name(&rest[..end]).map_err(|e| error(path, e.reason))?;
        Ok((sp, &rest[end..]))
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_PART_LEN]
    }

    /// The name after the hash part, e.g. `htop-3.3.0`.
    pub fn name(&self) -> &str {
        &self.base[HASH_PART_LEN + 1..]
    }

    /// The 20 bytes the hash part encodes.
    pub fn digest(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        // Validated at construction: only alphabet characters, right length.
        // The top bits may still overflow, which Nix tolerates; so do we.
        let _ = base32::decode_into(self.hash_part().as_bytes(), &mut out);
        out
    }

    /// The full path, `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }

    /// Whether this is a derivation (`.drv`).
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

/// Checks a store path name against Nix's rules: 1 to 211 characters from
/// `A-Za-z0-9+-._?=`, not `.` or `..`, not starting with `.-` or `..-`.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 211 characters");
    }
    if name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-") {
        return Err("name is '.', '..' or starts with '.-' or '..-'");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
    {
        return Err("name has a character outside A-Za-z0-9+-._?=");
    }
    Ok(())
}

fn error(path: &str, reason: &'static str) -> StorePathError {
    let mut shown: String = path.chars().take(300).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    StorePathError {
        path: shown,
        reason,
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "/nix/store/g7lkiv5g5vdwr6vb5vpsmi573bs288bk-hello1";

    #[test]
    fn parses_and_displays() {
        let p = StorePath::parse(P).unwrap();
        assert_eq!(p.to_string(), P);
        assert_eq!(p.hash_part(), "g7lkiv5g5vdwr6vb5vpsmi573bs288bk");
        assert_eq!(p.name(), "hello1");
        assert!(!p.is_derivation());
        assert_eq!(base32::encode(&p.digest()), p.hash_part());
    }

    #[test]
    fn finds_the_store_path_of_a_file_inside() {
        let file = format!("{P}/bin/hello");
        let (p, rest) = StorePath::from_path_prefix(&file).unwrap();
        assert_eq!(p.to_string(), P);
        assert_eq!(rest, "/bin/hello");
    }

    #[test]
    fn rejects_what_nix_rejects() {
        let h = "g7lkiv5g5vdwr6vb5vpsmi573bs288bk";
        for bad in [
            "/nix/store/".to_string(),
            "/tmp/x".to_string(),
            format!("/nix/store/{h}"),
            format!("/nix/store/{h}-"),
            format!("/nix/store/{h}_x"),
            "/nix/store/e7lkiv5g5vdwr6vb5vpsmi573bs288bk-x".to_string(),
            format!("/nix/store/{h}-a/b"),
            format!("/nix/store/{h}-a b"),
            format!("/nix/store/{h}-.."),
            format!("/nix/store/{h}-.-x"),
            format!("/nix/store/{h}-{}", "a".repeat(212)),
            format!("/nix/store/{h}-é"),
        ] {
            assert!(StorePath::parse(&bad).is_err(), "{bad}");
        }
        assert!(StorePath::parse(&format!("/nix/store/{h}-{}", "a".repeat(211))).is_ok());
        assert!(StorePath::parse(&format!("/nix/store/{h}-a+b-1.0_x?=y")).is_ok());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = StorePath::parse(&s);
            let _ = StorePath::from_path_prefix(&s);
        }
    }
}
