//! `--sign` / `--signing-key FILE`, shared by `deploy copy` and the deploy
//! itself, and `deploy public-key`. Signing is off unless asked for: with
//! it, every pushed path carries the deployer key's signature, so a node
//! listing the public key in `trusted-public-keys` accepts it from a
//! non-root SSH user that is not in `trusted-users`. The key is read from
//! its file only (never from the command line) and generated on first use.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use nix_deploy::keys::{self, KeyFileError};
use nix_wire::signing::SecretKey;

/// Signing options.
#[derive(Args, Debug, Clone)]
pub struct SigningArgs {
    /// Sign what is pushed with the deployer's key
    /// (~/.config/nix-deploy/signing-key, generated on first use), so a node
    /// trusting it accepts paths from a non-root, non-trusted SSH user.
    #[arg(long)]
    sign: bool,
    /// The signing key file (Nix's secret key format, as written by
    /// `nix-store --generate-binary-cache-key`; mode 0600; generated if
    /// missing). Implies --sign.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

impl SigningArgs {
    /// The key file: `--signing-key`, else the default path.
    fn path(&self) -> Result<PathBuf, KeyFileError> {
        match &self.signing_key {
            Some(p) => Ok(p.clone()),
            None => keys::default_key_path(),
        }
    }

    /// Loads (or generates, saying so on stderr) the key if signing is on.
    pub fn load(&self) -> Result<Option<Arc<SecretKey>>, KeyFileError> {
        if !self.sign && self.signing_key.is_none() {
            return Ok(None);
        }
        self.load_always().map(Some)
    }

    /// Loads (or generates) the key whether or not signing is on: the
    /// narinfos pushed to a binary cache are always signed.
    pub fn load_always(&self) -> Result<Arc<SecretKey>, KeyFileError> {
        load_or_generate(&self.path()?).map(Arc::new)
    }
}

fn load_or_generate(path: &std::path::Path) -> Result<SecretKey, KeyFileError> {
    let (key, generated) = keys::load_or_generate(path, &keys::default_key_name())?;
    if generated {
        eprintln!(
            "deploy: generated the signing key {}; nodes must trust its public key {} \
             (trusted-public-keys in their /etc/nix/nix.conf)",
            path.display(),
            key.public_key()
        );
    }
    Ok(key)
}

/// Arguments of `deploy public-key`.
#[derive(Args, Debug)]
pub struct PublicKeyArgs {
    /// The signing key file (default ~/.config/nix-deploy/signing-key;
    /// generated if missing).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

/// Prints the deployer key's public half, for nodes' `trusted-public-keys`.
pub fn public_key(args: PublicKeyArgs) -> Result<ExitCode, KeyFileError> {
    let path = match args.signing_key {
        Some(p) => p,
        None => keys::default_key_path()?,
    };
    println!("{}", load_or_generate(&path)?.public_key());
    Ok(ExitCode::SUCCESS)
}
