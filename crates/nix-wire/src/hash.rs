//! SHA-256 digests in every text form Nix uses: lowercase base16 (the worker
//! protocol), `sha256:<nixbase32>` (narinfo, fingerprints, `nix path-info`) and
//! SRI `sha256-<base64>` (`nix hash path`).

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use sha2::{Digest, Sha256};

use crate::base32;

/// Why a string is not a SHA-256 digest Nix would accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 hash {text:?}: {reason}")]
pub struct HashParseError {
    /// The text that failed to parse (truncated to 120 bytes).
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A SHA-256 digest, such as a NAR hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Hashes a byte slice.
    pub fn digest(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Lowercase base16 without prefix, as the worker protocol sends it.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// nixbase32 without prefix.
    pub fn to_nix32(&self) -> String {
        base32::encode(&self.0)
    }

    /// `sha256:<nixbase32>`, as in `nix path-info --json` and narinfo files.
    pub fn to_nix32_prefixed(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// SRI form `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", BASE64.encode(&self.0))
    }

    /// Parses any form Nix's `Hash::parseAny` accepts for SHA-256: an optional
    /// `sha256:` prefix followed by base16 (64), nixbase32 (52) or base64 (44)
    /// characters, or SRI `sha256-<base64>`.
    pub fn parse(text: &str) -> Result<Self, HashParseError> {
        let err = |reason| HashParseError {
            text: text.chars().take(120).collect(),
            reason,
        };
        if let Some(b64) = text.strip_prefix("sha256-") {
            return Self::from_base64(b64).ok_or_else(|| err("bad SRI base64 digest"));
        }
        let body = match text.split_once(':') {
            Some(("sha256", body)) => body,
            Some(_) => return Err(err("only sha256 is supported")),
            None => text,
        };
        let mut out = [0u8; 32];
        match body.len() {
            64 => HEXLOWER_PERMISSIVE
                .decode_mut(body.as_bytes(), &mut out)
                .map_err(|_| err("bad base16 digit"))?,
            52 => {
                base32::decode_into(body.as_bytes(), &mut out)
                    .map_err(|_| err("bad nixbase32 digest"))?;
                0
            }
            44 => return Self::from_base64(body).ok_or_else(|| err("bad base64 digest")),
            _ => return Err(err("wrong length for a sha256 digest")),
        };
        Ok(Self(out))
    }

    fn from_base64(b64: &str) -> Option<Self> {
        let bytes = BASE64.decode(b64.as_bytes()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Display for Sha256Hash {
    /// Displays as `sha256:<nixbase32>`, the form Nix shows people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_prefixed())
    }
}

impl FromStr for Sha256Hash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";
    const NIX32: &str = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    #[test]
    fn every_form_parses_to_the_same_digest() {
        let h = Sha256Hash::parse(HEX).unwrap();
        assert_eq!(h.to_hex(), HEX);
        assert_eq!(h.to_nix32(), NIX32);
        for form in [
            format!("sha256:{NIX32}"),
            NIX32.to_string(),
            HEX.to_uppercase(),
            h.to_sri(),
            format!("sha256:{}", &h.to_sri()[7..]),
        ] {
            assert_eq!(Sha256Hash::parse(&form).unwrap(), h, "{form}");
        }
    }

    #[test]
    fn empty_string_digest() {
        assert_eq!(
            Sha256Hash::digest(b"").to_nix32(),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(Sha256Hash::parse("md5:abc").is_err());
        assert!(Sha256Hash::parse("sha256-AAAA").is_err());
        assert!(Sha256Hash::parse(&"g".repeat(64)).is_err());
        assert!(Sha256Hash::parse("").is_err());
    }
}
