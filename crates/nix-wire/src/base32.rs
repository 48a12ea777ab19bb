//! Nix's own base-32 ("nixbase32"): the alphabet and bit order of store path
//! hash parts and of `sha256:<nix32>` hashes. This is not RFC 4648 base32: the
//! bytes are read as one little-endian integer and written most significant
//! digit first, so no existing crate produces it.

/// The 32 characters of the alphabet (no `e`, `o`, `u`, `t`).
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a string is not valid nixbase32 for the expected byte length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base32Error {
    /// The string has the wrong number of characters.
    #[error("nixbase32 string has {got} characters, expected {expected}")]
    Length {
        /// Characters expected for the byte length.
        expected: usize,
        /// Characters found.
        got: usize,
    },
    /// A character outside the alphabet.
    #[error("invalid nixbase32 character {0:?}")]
    Character(char),
    /// Bits set beyond the byte length (the first digit is too large).
    #[error("nixbase32 value overflows {0} bytes")]
    Overflow(usize),
}

/// Number of characters that encode `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len * 8 - 1) / 5 + 1
    }
}

/// Encodes bytes into nixbase32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for k in (0..len).rev() {
        let bit = k * 5;
        let (i, j) = (bit / 8, bit % 8);
        let lo = bytes[i] as u16 >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes a nixbase32 string that must encode exactly `len` bytes.
pub fn decode(s: &str, len: usize) -> Result<Vec<u8>, Base32Error> {
    let mut out = vec![0u8; len];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

/// Decodes nixbase32 text into `out`, whose length fixes the expected size.
pub fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), Base32Error> {
    let expected = encoded_len(out.len());
    if s.len() != expected {
        return Err(Base32Error::Length {
            expected,
            got: s.len(),
        });
    }
    out.fill(0);
    for (n, &c) in s.iter().rev().enumerate() {
        let digit = digit(c).ok_or(Base32Error::Character(c as char))? as u16;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < out.len() {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Base32Error::Overflow(out.len()));
        }
    }
    Ok(())
}

/// Whether a byte is in the alphabet.
pub fn is_valid_char(c: u8) -> bool {
    digit(c).is_some()
}

fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector_sha256_of_hello_nar() {
        let hex = "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13";
        let bytes = data_encoding::HEXLOWER.decode(hex.as_bytes()).unwrap();
        assert_eq!(
            encode(&bytes),
            "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            decode("e0000000000000000000000000000000", 20),
            Err(Base32Error::Character('e'))
        ));
        assert!(matches!(decode("00", 20), Err(Base32Error::Length { .. })));
        // 52 chars for 32 bytes: 260 bits, the top 4 bits must be zero.
        let over = format!("z{}", "0".repeat(51));
        assert_eq!(decode(&over, 32), Err(Base32Error::Overflow(32)));
    }

    proptest! {
        #[test]
        fn roundtrip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = encode(&bytes);
            prop_assert_eq!(s.len(), encoded_len(bytes.len()));
            prop_assert_eq!(decode(&s, bytes.len()).unwrap(), bytes);
        }

        #[test]
        fn decode_never_panics(s in "[0-9a-z]{0,60}", len in 0usize..40) {
            let _ = decode(&s, len);
        }
    }
}
