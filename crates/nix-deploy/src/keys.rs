//! The deployer's own signing key: an Ed25519 key in Nix's format (the
//! file `nix-store --generate-binary-cache-key` writes), generated on first
//! use and kept private (mode 0600). Nodes list its public key in
//! `trusted-public-keys` (see [`crate::trust`]) so that a non-root SSH user
//! can import what the deployer signed.
//!
//! The key is only ever read from its file: never from arguments or the
//! environment, and it is never written to logs or the Nix store.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix_wire::signing::{KeyError, SecretKey};

/// Why the signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Neither `XDG_CONFIG_HOME` nor `HOME` is set.
    #[error(
        "cannot find a place for the signing key: set XDG_CONFIG_HOME or HOME, or pass its path"
    )]
    NoConfigDir,
    /// Reading, creating or writing failed.
    #[error("signing key {}: {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What we were doing.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the key.
    #[error(
        "signing key {} is accessible by group or others (mode {mode:04o}); it must be private: \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a Nix secret key.
    #[error("signing key {}: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: KeyError,
    },
}

/// `$XDG_CONFIG_HOME/nix-deploy/signing-key`, else
/// `~/.config/nix-deploy/signing-key`.
pub fn default_key_path() -> Result<PathBuf, KeyFileError> {
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    let config = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME").ok_or(KeyFileError::NoConfigDir)?).join(".config"),
    };
    Ok(config.join("nix-deploy").join("signing-key"))
}

/// The name given to generated keys: `nix-deploy-<hostname>-1`.
pub fn default_key_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("nix-deploy-{host}-1")
}

/// Reads the secret key at `path`, refusing a file group or others can
/// access.
pub fn load(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io = |action| {
        move |source| KeyFileError::Io {
            path: path.to_owned(),
            action,
            source,
        }
    };
    let mut file = std::fs::File::open(path).map_err(io("opening"))?;
    let mode = file
        .metadata()
        .map_err(io("reading metadata"))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::NotPrivate {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io("reading"))?;
    SecretKey::parse(&text).map_err(|source| KeyFileError::Malformed {
        path: path.to_owned(),
        source,
    })
}

/// Reads the key at `path`, generating it (named `name`, mode 0600, its
/// directory 0700) when the file does not exist. Returns whether it was
/// generated.
pub fn load_or_generate(path: &Path, name: &str) -> Result<(SecretKey, bool), KeyFileError> {
    if path.exists() {
        return load(path).map(|k| (k, false));
    }
    let io = |p: &Path, action| {
        let p = p.to_owned();
        move |source| KeyFileError::Io {
            path: p,
            action,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir, "creating its directory"))?;
    }
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io(Path::new("/dev/urandom"), "reading random bytes"))?;
    let key = SecretKey::from_seed(name, seed).map_err(|source| KeyFileError::Malformed {
        path: path.to_owned(),
        source,
    });
    seed.fill(0);
    let key = key?;
    // Write a private temporary file, then link it into place: a key
    // generated concurrently by another run wins and is used instead.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{}\n", key.to_text()).as_bytes())?;
        f.sync_all()
    };
    let written = write().map_err(io(&tmp, "writing"));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(path, "creating")(e)),
        _ => Ok(()),
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    load(path).map(|k| (k, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/signing-key");
        let (key, new) = load_or_generate(&path, "test-1").unwrap();
        assert!(new);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let (again, new) = load_or_generate(&path, "other-1").unwrap();
        assert!(!new);
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.name(), "test-1");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        load_or_generate(&path, "t-1").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0644"), "{e}");
    }

    #[test]
    fn garbage_is_a_clear_error_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "secretstuff").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("name:base64") && !e.contains("secretstuff"),
            "{e}"
        );
    }

    #[test]
    fn names_are_valid_key_names() {
        let n = default_key_name();
        assert!(n.starts_with("nix-deploy-") && !n.contains(':'), "{n}");
    }
}
