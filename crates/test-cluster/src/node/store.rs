//! Looking at a node's Nix store from the host, for test assertions.

use std::collections::BTreeSet;

use super::Node;
use crate::error::{ClusterError, Result};

impl Node {
    /// Runs `nix-store --verify --check-contents` on the node; an error
    /// unless it exits 0 and reports nothing wrong.
    pub fn verify_store(&self) -> Result<()> {
        let out = self.run("nix-store --verify --check-contents 2>&1")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !text.contains("error") && !text.contains("modified") {
            return Ok(());
        }
        Err(ClusterError::Node {
            node: self.name().to_owned(),
            detail: format!("nix-store --verify --check-contents: {text}"),
        })
    }

    /// The closure of `path` in the node's store (`nix-store -qR`).
    pub fn store_closure(&self, path: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .run_ok(&format!("nix-store -qR {path}"))?
            .lines()
            .map(str::to_owned)
            .collect())
    }
}
