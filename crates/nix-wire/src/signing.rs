//! Nix's Ed25519 signatures on store paths (reference §5.3): the key text
//! formats written by `nix-store --generate-binary-cache-key`, the
//! fingerprint a signature covers, and signing and verifying path infos.
//!
//! - secret key: `name:base64(32-byte seed ‖ 32-byte public key)`;
//! - public key: `name:base64(32-byte public key)`;
//! - signature:  `name:base64(64-byte signature)`;
//! - fingerprint: `1;<path>;sha256:<nix32 narHash>;<narSize>;<refs>` with the
//!   references as full store paths, sorted, comma-separated.
//!
//! Ed25519 is deterministic, so our signature of a path equals Nix's byte
//! for byte. Secret keys never appear in `Debug` output or error messages.

use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::daemon::PathInfo;

/// Why a key or signature text was rejected. Never contains secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `name:` prefix, or an empty name.
    #[error("{what} must look like `name:base64`, with a non-empty name")]
    NoName {
        /// Which kind of text.
        what: &'static str,
    },
    /// The part after the name is not base64.
    #[error("{what} named {name:?}: the part after `name:` is not valid base64")]
    BadBase64 {
        /// Which kind of text.
        what: &'static str,
        /// The key name.
        name: String,
    },
    /// The decoded bytes have the wrong length.
    #[error("{what} named {name:?}: {got} bytes after base64 decoding, expected {expected}")]
    BadLength {
        /// Which kind of text.
        what: &'static str,
        /// The key name.
        name: String,
        /// Decoded length.
        got: usize,
        /// Required length.
        expected: usize,
    },
    /// The bytes are not a valid Ed25519 public key.
    #[error("public key named {name:?} is not a valid Ed25519 point")]
    BadPoint {
        /// The key name.
        name: String,
    },
    /// The public half stored in a secret key does not belong to its seed.
    #[error("secret key named {name:?} is corrupt: its public half does not match its seed")]
    Mismatch {
        /// The key name.
        name: String,
    },
}

/// Why a path cannot be fingerprinted (and so not signed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot fingerprint {path}: its narSize is 0 (unknown)")]
pub struct FingerprintError {
    /// The path.
    pub path: String,
}

const SECRET: &str = "secret key";
const PUBLIC: &str = "public key";
const SIGNATURE: &str = "signature";

/// Splits `name:base64` and decodes the base64 into exactly `N` bytes.
fn split_decode<const N: usize>(
    text: &str,
    what: &'static str,
) -> Result<(String, [u8; N]), KeyError> {
    let (name, b64) = text
        .trim()
        .split_once(':')
        .filter(|(name, _)| !name.is_empty())
        .ok_or(KeyError::NoName { what })?;
    let bytes = BASE64
        .decode(b64.as_bytes())
        .map_err(|_| KeyError::BadBase64 {
            what,
            name: name.to_owned(),
        })?;
    let got = bytes.len();
    let arr = bytes.try_into().map_err(|_| KeyError::BadLength {
        what,
        name: name.to_owned(),
        got,
        expected: N,
    })?;
    Ok((name.to_owned(), arr))
}

/// The message a path's signatures sign (reference §5.3).
pub fn fingerprint(info: &PathInfo) -> Result<String, FingerprintError> {
    if info.nar_size == 0 {
        return Err(FingerprintError {
            path: info.path.to_absolute(),
        });
    }
    let mut refs: Vec<String> = info.references.iter().map(|r| r.to_absolute()).collect();
    refs.sort();
    Ok(format!(
        "1;{};{};{};{}",
        info.path.to_absolute(),
        info.nar_hash.to_nix32_prefixed(),
        info.nar_size,
        refs.join(",")
    ))
}

/// A named Ed25519 secret key (zeroed when dropped).
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses the text `nix-store --generate-binary-cache-key` writes
    /// (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_decode::<64>(text, SECRET)?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(KeyError::Mismatch { name });
        }
        Ok(Self { name, key })
    }

    /// A key from a 32-byte seed (e.g. fresh random bytes).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        if name.is_empty() || name.contains(':') {
            return Err(KeyError::NoName { what: SECRET });
        }
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text form, as `nix-store --generate-binary-cache-key` writes it
    /// (without a newline). It is the secret: write it only to a private file.
    pub fn to_text(&self) -> String {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.key.as_bytes());
        bytes[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        let text = format!("{}:{}", self.name, BASE64.encode(&bytes));
        bytes.fill(0);
        text
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs an arbitrary fingerprint: `name:base64(signature)`.
    pub fn sign_fingerprint(&self, fingerprint: &str) -> String {
        let sig = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&sig.to_bytes()))
    }

    /// Signs a path: `name:base64(signature)`, as `nix store sign` adds.
    pub fn sign(&self, info: &PathInfo) -> Result<String, FingerprintError> {
        Ok(self.sign_fingerprint(&fingerprint(info)?))
    }
}

impl fmt::Debug for SecretKey {
    /// Shows only the name and public key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &self.public_key().to_string())
            .finish_non_exhaustive()
    }
}

/// A named Ed25519 public key, as listed in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_decode::<32>(text, PUBLIC)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadPoint { name: name.clone() })?;
        Ok(Self { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` (`name:base64`) is this key's valid signature
    /// over `fingerprint`. A signature under another name is not.
    pub fn verify_fingerprint(&self, fingerprint: &str, signature: &str) -> bool {
        let Ok((name, bytes)) = split_decode::<64>(signature, SIGNATURE) else {
            return false;
        };
        name == self.name
            && self
                .key
                .verify_strict(fingerprint.as_bytes(), &Signature::from_bytes(&bytes))
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// `name:base64(32 bytes)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Whether one of `info`'s signatures is valid under one of `keys`, the
/// check a daemon with `require-sigs` makes for non-CA paths.
pub fn verify(info: &PathInfo, keys: &[PublicKey]) -> bool {
    let Ok(fp) = fingerprint(info) else {
        return false;
    };
    info.signatures
        .iter()
        .any(|sig| keys.iter().any(|k| k.verify_fingerprint(&fp, sig)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::{Sha256Hash, StorePath};

    fn info() -> PathInfo {
        let p = |n: &str| StorePath::parse(&format!("/nix/store/{}-{n}", "a".repeat(32))).unwrap();
        let q = |n: &str| StorePath::parse(&format!("/nix/store/{}-{n}", "b".repeat(32))).unwrap();
        PathInfo {
            path: p("x"),
            deriver: None,
            nar_hash: Sha256Hash::digest(b""),
            references: [q("z"), p("y")].into_iter().collect(),
            registration_time: 0,
            nar_size: 120,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        }
    }

    #[test]
    fn fingerprint_has_nix_layout() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        assert_eq!(
            fingerprint(&info()).unwrap(),
            format!(
                "1;/nix/store/{a}-x;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;120;/nix/store/{a}-y,/nix/store/{b}-z"
            )
        );
        let mut zero = info();
        zero.nar_size = 0;
        assert!(fingerprint(&zero).is_err());
    }

    #[test]
    fn sign_verify_and_text_round_trip() {
        let sk = SecretKey::from_seed("test-1", [7; 32]).unwrap();
        let again = SecretKey::parse(&format!("{}\n", sk.to_text())).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
        let pk = PublicKey::parse(&sk.public_key().to_string()).unwrap();
        let mut i = info();
        assert!(!verify(&i, std::slice::from_ref(&pk)));
        i.signatures.insert(sk.sign(&i).unwrap());
        assert!(verify(&i, std::slice::from_ref(&pk)));
        i.nar_size += 1;
        assert!(
            !verify(&i, std::slice::from_ref(&pk)),
            "a changed path fails"
        );
        let other = SecretKey::from_seed("test-1", [8; 32])
            .unwrap()
            .public_key();
        i.nar_size -= 1;
        assert!(
            !verify(&i, &[other]),
            "the same name with another key fails"
        );
        assert!(!format!("{sk:?}").contains(&sk.to_text()[7..20]));
    }

    #[test]
    fn malformed_text_is_a_clear_error() {
        let sk = SecretKey::from_seed("k", [1; 32]).unwrap().to_text();
        let cases: &[(&str, &str)] = &[
            ("", "non-empty name"),
            ("nocolon", "non-empty name"),
            (":AAAA", "non-empty name"),
            ("k:!!!", "not valid base64"),
            ("k:AAAA", "3 bytes"),
        ];
        for (text, want) in cases {
            let e = SecretKey::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            let e = PublicKey::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // Flip a byte of the public half.
        let mut bytes = BASE64.decode(&sk.as_bytes()[2..]).unwrap();
        bytes[40] ^= 1;
        let bad = format!("k:{}", BASE64.encode(&bytes));
        assert!(matches!(
            SecretKey::parse(&bad),
            Err(KeyError::Mismatch { .. })
        ));
        assert!(SecretKey::from_seed("a:b", [0; 32]).is_err());
    }
}
