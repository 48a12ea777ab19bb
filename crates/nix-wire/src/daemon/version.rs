//! [`ProtocolVersion`]: the worker protocol's version numbers (reference
//! §2.2), shared by the handshake, the STDERR loop and the errors.

use std::fmt;

/// A worker protocol version, `major.minor` (major is always 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major version (1).
    pub major: u8,
    /// Minor version.
    pub minor: u8,
}

impl ProtocolVersion {
    /// Oldest daemon version this client talks to (Nix 2.3).
    pub const MIN_SUPPORTED: Self = Self::new(1, 21);
    /// Newest version this client knows (Nix ≥ 2.24).
    pub const LATEST: Self = Self::new(1, 38);

    /// Builds a version.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }

    /// Decodes the wire form `(major << 8) | minor`; `None` if it does not fit.
    pub fn from_wire(v: u64) -> Option<Self> {
        let major = u8::try_from(v >> 8).ok()?;
        Some(Self::new(major, (v & 0xff) as u8))
    }

    /// The wire form `(major << 8) | minor`.
    pub fn to_wire(self) -> u64 {
        (u64::from(self.major) << 8) | u64::from(self.minor)
    }

    /// Whether this version is at least `1.minor`.
    pub fn at_least(self, minor: u8) -> bool {
        self >= Self::new(1, minor)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
