//! A secret read from a node (the k3s join token): it never shows in
//! `Debug` or `Display`, so it can't slip into a log line, an error or
//! `--json` output; its bytes are only handed to a node's stdin.

use std::fmt;

/// A secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` (surrounding whitespace dropped).
    pub fn new(value: &str) -> Self {
        Secret(value.trim().to_owned())
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value, for writing it to a node's stdin only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new(" K10abc::server:def\n");
        assert_eq!(s.expose(), "K10abc::server:def");
        assert!(!format!("{s} {s:?} {s:#?}").contains("K10abc"));
    }
}
