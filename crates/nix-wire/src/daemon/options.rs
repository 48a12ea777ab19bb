//! SetOptions (reference §4.2): per-connection settings of the daemon worker.

use std::collections::BTreeMap;

use tokio::io::AsyncWrite;

use crate::wire::{self, WireError};

/// The settings SetOptions sends: twelve fixed fields and a map of
/// overrides (`nix.conf` names and values). Untrusted clients can only
/// change a few of them (e.g. `substituters`), the rest is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Keep build directories of failed builds.
    pub keep_failed: bool,
    /// Keep going after a build fails.
    pub keep_going: bool,
    /// Build from source when substitution fails.
    pub try_fallback: bool,
    /// Verbosity the daemon logs at (0 Error … 7 Vomit).
    pub verbosity: u64,
    /// Maximum number of parallel builds.
    pub max_build_jobs: u64,
    /// Seconds of build silence before a build is killed (0 = none).
    pub max_silent_time: u64,
    /// Send build logs verbatim.
    pub verbose_build: bool,
    /// Cores per build (0 = all).
    pub build_cores: u64,
    /// Whether the daemon may use substitutes.
    pub use_substitutes: bool,
    /// Further settings by name.
    pub overrides: BTreeMap<String, String>,
}

impl Default for ClientOptions {
    /// Nix's defaults for a client: log errors only, one build job.
    fn default() -> Self {
        Self {
            keep_failed: false,
            keep_going: false,
            try_fallback: false,
            verbosity: 0,
            max_build_jobs: 1,
            max_silent_time: 0,
            verbose_build: false,
            build_cores: 0,
            use_substitutes: true,
            overrides: BTreeMap::new(),
        }
    }
}

impl ClientOptions {
    /// Disables substitution completely: `use_substitutes = false` and
    /// `substituters = ""`, so an offline daemon does not spend seconds
    /// retrying remote caches (allowed for untrusted clients too).
    pub fn without_substituters(mut self) -> Self {
        self.use_substitutes = false;
        self.overrides.insert("substituters".into(), String::new());
        self
    }

    /// Writes the request body (without the op code).
    pub(crate) async fn write<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        w: &mut W,
    ) -> Result<(), WireError> {
        wire::write_bool(w, self.keep_failed).await?;
        wire::write_bool(w, self.keep_going).await?;
        wire::write_bool(w, self.try_fallback).await?;
        wire::write_u64(w, self.verbosity).await?;
        wire::write_u64(w, self.max_build_jobs).await?;
        wire::write_u64(w, self.max_silent_time).await?;
        wire::write_u64(w, 1).await?; // useBuildHook (obsolete)
                                      // verboseBuild: the daemon sets it when this word is 0 (lvlError).
        wire::write_u64(w, if self.verbose_build { 0 } else { 7 }).await?;
        wire::write_u64(w, 0).await?; // logType (obsolete)
        wire::write_u64(w, 0).await?; // printBuildTrace (obsolete)
        wire::write_u64(w, self.build_cores).await?;
        wire::write_bool(w, self.use_substitutes).await?;
        wire::write_u64(w, self.overrides.len() as u64).await?;
        for (k, v) in &self.overrides {
            wire::write_bytes(w, k.as_bytes()).await?;
            wire::write_bytes(w, v.as_bytes()).await?;
        }
        Ok(())
    }
}
