//! [`Receiver`]: the `nix-deploy-receive` package in the local store, what
//! machine it runs on (from its ELF header), and the commands that run it
//! on a node.

use std::io::Read;

use nix_wire::StorePath;

use deploy_remote::quote;

/// Why a package can't serve as the receiver.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The program could not be read.
    #[error("{path}: {source} (build the nix-deploy-receive package first)")]
    Read {
        /// The program's path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program is not a Linux ELF executable we know.
    #[error("{path} is not an ELF executable for a known machine")]
    NotElf {
        /// The program's path.
        path: String,
    },
}

/// The node-side receiver of zstd copies, as a package in the local store
/// (`<package>/bin/nix-deploy-receive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    package: StorePath,
    machine: &'static str,
}

impl Receiver {
    /// Reads the program's ELF header to learn which machine it is for.
    pub fn from_package(package: StorePath) -> Result<Self, ReceiverError> {
        let path = format!("{}/{}", package.to_absolute(), deploy_receive::PROGRAM);
        let mut header = [0u8; 20];
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(|source| ReceiverError::Read {
                path: path.clone(),
                source,
            })?;
        let machine = elf_machine(&header).ok_or(ReceiverError::NotElf { path })?;
        Ok(Self { package, machine })
    }

    /// The package's store path (its closure goes to the node first).
    pub fn package(&self) -> &StorePath {
        &self.package
    }

    /// The machine it runs on, as `uname -m` names it (`x86_64`, `aarch64`, …).
    pub fn machine(&self) -> &str {
        self.machine
    }

    /// Whether it runs on a node whose `uname -m` printed `machine`.
    pub fn runs_on(&self, machine: &str) -> bool {
        normalize(machine) == self.machine
    }

    /// The program's absolute path (the same in every store).
    pub fn program(&self) -> String {
        format!("{}/{}", self.package.to_absolute(), deploy_receive::PROGRAM)
    }

    /// Whether `stdout` of [`Receiver::version_command`] says this is a
    /// receiver we can use.
    pub fn answers(stdout: &[u8]) -> bool {
        String::from_utf8_lossy(stdout).trim() == deploy_receive::version_line()
    }

    /// The node-side command that prints the receiver's version line.
    pub fn version_command(&self) -> String {
        format!("exec {} --version", quote(&self.program()))
    }

    /// The receiver's arguments that run `program` (with its own
    /// arguments after it) with its stdin decompressed, the stream coming
    /// over `stripes` channels that meet at `rendezvous` (see
    /// [`rendezvous_name`]).
    pub fn lead_args(stripes: usize, rendezvous: &str) -> Vec<String> {
        let mut args = vec!["zstd".to_owned()];
        if stripes > 1 {
            args.extend([
                "--stripes".to_owned(),
                stripes.to_string(),
                "--rendezvous".to_owned(),
                rendezvous.to_owned(),
            ]);
        }
        args.push("--".to_owned());
        args
    }

    /// The receiver's arguments that make a channel stripe `k` of the
    /// stream meeting at `rendezvous`.
    pub fn join_args(rendezvous: &str, k: usize) -> Vec<String> {
        vec!["join".to_owned(), rendezvous.to_owned(), k.to_string()]
    }

    /// The node-side command that runs `daemon_command` (a shell command,
    /// e.g. `nix-daemon --stdio`) with its stdin decompressed, the stream
    /// over `stripes` channels meeting at `rendezvous`.
    pub fn command(&self, daemon_command: &str, stripes: usize, rendezvous: &str) -> String {
        let args: Vec<String> = Self::lead_args(stripes, rendezvous)
            .iter()
            .map(|a| quote(a))
            .collect();
        format!(
            "exec {} {} /bin/sh -c {}",
            quote(&self.program()),
            args.join(" "),
            quote(daemon_command)
        )
    }

    /// The node-side command of stripe `k` of the stream meeting at
    /// `rendezvous`.
    pub fn join_command(&self, rendezvous: &str, k: usize) -> String {
        let args: Vec<String> = Self::join_args(rendezvous, k)
            .iter()
            .map(|a| quote(a))
            .collect();
        format!("exec {} {}", quote(&self.program()), args.join(" "))
    }
}

/// A fresh rendezvous name for a striped stream (32 hex digits).
pub fn rendezvous_name() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The machine of an ELF header (its first 20 bytes), as `uname -m` says it.
fn elf_machine(h: &[u8; 20]) -> Option<&'static str> {
    if h[..4] != *b"\x7fELF" {
        return None;
    }
    let little = h[5] == 1;
    let machine = if little {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    Some(match machine {
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0x03 => "i686",
        0x28 => "arm",
        0xf3 => "riscv64",
        0x15 if little => "ppc64le",
        0x15 => "ppc64",
        _ => return None,
    })
}

/// `uname -m` names several machines per ELF machine.
fn normalize(uname: &str) -> &str {
    match uname.trim() {
        "i386" | "i486" | "i586" | "i686" => "i686",
        m if m.starts_with("armv") => "arm",
        "arm64" => "aarch64",
        "amd64" => "x86_64",
        m => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class_data: u8, machine: [u8; 2]) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = class_data;
        h[18..20].copy_from_slice(&machine);
        h
    }

    #[test]
    fn machines_from_elf_headers() {
        assert_eq!(elf_machine(&header(1, [0x3e, 0])), Some("x86_64"));
        assert_eq!(elf_machine(&header(1, [0xb7, 0])), Some("aarch64"));
        assert_eq!(elf_machine(&header(2, [0, 0x15])), Some("ppc64"));
        assert_eq!(elf_machine(&header(1, [0x99, 0])), None);
        let mut script = [0u8; 20];
        script[..11].copy_from_slice(b"#!/bin/sh\ne");
        assert_eq!(elf_machine(&script), None);
    }

    #[test]
    fn uname_spellings_match() {
        let r = Receiver {
            package: StorePath::parse("/nix/store/00000000000000000000000000000000-r").unwrap(),
            machine: "i686",
        };
        assert!(r.runs_on("i586\n"));
        assert!(!r.runs_on("x86_64"));
        assert_eq!(normalize("armv7l"), "arm");
    }

    #[test]
    fn this_test_binary_is_for_this_machine() {
        let exe = std::env::current_exe().unwrap();
        let mut h = [0u8; 20];
        std::fs::File::open(exe)
            .unwrap()
            .read_exact(&mut h)
            .unwrap();
        assert_eq!(elf_machine(&h), Some(std::env::consts::ARCH));
    }
}
