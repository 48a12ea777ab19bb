//! The `.narinfo` file of Nix's binary-cache format: what a cache says of
//! one store path (where its compressed NAR is, the NAR's hash and size,
//! references, signatures). Only writing: a cache is asked whether it has
//! a path with a HEAD request, never parsed.
//!
//! Layout (as Nix's `NarInfo::to_string` writes it): one `Key: value` per
//! line; references and deriver as base names; hashes `sha256:<nix32>`.

use std::fmt::Write;

use crate::daemon::PathInfo;
use crate::Sha256Hash;

/// The `.narinfo` key of a store path in a cache: `<hash part>.narinfo`.
pub fn key(info: &PathInfo) -> String {
    format!("{}.narinfo", info.path.hash_part())
}

/// Where the compressed NAR of a path lives in a cache, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarFile {
    /// Path relative to the cache's root, e.g. `nar/<filehash>.nar.zst`.
    pub url: String,
    /// Nix's name of the compression: `zstd`, `xz`, `none`, ...
    pub compression: &'static str,
    /// SHA-256 of the compressed file.
    pub file_hash: Sha256Hash,
    /// Size of the compressed file in bytes.
    pub file_size: u64,
}

impl NarFile {
    /// The conventional file name for a compressed NAR: `nar/<nix32 file
    /// hash>.nar<extension>` (`extension` e.g. `.zst`, or empty).
    pub fn conventional_url(file_hash: &Sha256Hash, extension: &str) -> String {
        format!("nar/{}.nar{extension}", file_hash.to_nix32())
    }
}

/// The text of `info`'s `.narinfo`, with its NAR at `file` and the
/// signatures `sigs` (each `keyname:base64`).
pub fn render<'a>(
    info: &PathInfo,
    file: &NarFile,
    sigs: impl IntoIterator<Item = &'a String>,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "StorePath: {}", info.path.to_absolute());
    let _ = writeln!(out, "URL: {}", file.url);
    let _ = writeln!(out, "Compression: {}", file.compression);
    let _ = writeln!(out, "FileHash: {}", file.file_hash.to_nix32_prefixed());
    let _ = writeln!(out, "FileSize: {}", file.file_size);
    let _ = writeln!(out, "NarHash: {}", info.nar_hash.to_nix32_prefixed());
    let _ = writeln!(out, "NarSize: {}", info.nar_size);
    let refs: Vec<&str> = info.references.iter().map(|r| r.base_name()).collect();
    let _ = writeln!(out, "References: {}", refs.join(" "));
    if let Some(deriver) = &info.deriver {
        let _ = writeln!(out, "Deriver: {}", deriver.base_name());
    }
    for sig in sigs {
        let _ = writeln!(out, "Sig: {sig}");
    }
    if let Some(ca) = &info.ca {
        let _ = writeln!(out, "CA: {ca}");
    }
    out
}

/// The cache's `nix-cache-info`: a cache of `/nix/store` that answers
/// many queries at once cheaply, tried before cache.nixos.org (Nix asks
/// lower priorities first; cache.nixos.org says 40).
pub const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorePath;
    use std::collections::BTreeSet;

    fn path(s: &str) -> StorePath {
        StorePath::from_base_name(s).expect("test store path")
    }

    #[test]
    fn renders_every_field_nix_reads_in_its_order() {
        let info = PathInfo {
            path: path("7rjj86a15146cq1d3qy068lml7n8ykzm-hello-2.12"),
            deriver: Some(path("1f6d2aaq0vjv8nfsfnyix6y5n4k1p5lk-hello-2.12.drv")),
            nar_hash: Sha256Hash::digest(b"nar"),
            references: BTreeSet::from([
                path("7rjj86a15146cq1d3qy068lml7n8ykzm-hello-2.12"),
                path("0ff5kxjv3q6jyzyq3dbbcywwd7h5z5rr-glibc-2.40"),
            ]),
            registration_time: 0,
            nar_size: 1234,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        };
        let file = NarFile {
            url: NarFile::conventional_url(&Sha256Hash::digest(b"file"), ".zst"),
            compression: "zstd",
            file_hash: Sha256Hash::digest(b"file"),
            file_size: 99,
        };
        let sig = "k:c2ln".to_owned();
        let text = render(&info, &file, [&sig]);
        let expected = format!(
            "StorePath: /nix/store/7rjj86a15146cq1d3qy068lml7n8ykzm-hello-2.12\n\
             URL: nar/{f}.nar.zst\n\
             Compression: zstd\n\
             FileHash: sha256:{f}\n\
             FileSize: 99\n\
             NarHash: {n}\n\
             NarSize: 1234\n\
             References: 0ff5kxjv3q6jyzyq3dbbcywwd7h5z5rr-glibc-2.40 \
             7rjj86a15146cq1d3qy068lml7n8ykzm-hello-2.12\n\
             Deriver: 1f6d2aaq0vjv8nfsfnyix6y5n4k1p5lk-hello-2.12.drv\n\
             Sig: k:c2ln\n",
            f = Sha256Hash::digest(b"file").to_nix32(),
            n = Sha256Hash::digest(b"nar").to_nix32_prefixed(),
        );
        assert_eq!(text, expected);
        assert_eq!(key(&info), "7rjj86a15146cq1d3qy068lml7n8ykzm.narinfo");
    }
}
