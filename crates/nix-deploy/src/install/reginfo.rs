//! The registration text `nix-store --load-db` reads on stdin, as the
//! official installer's `.reginfo` (what `nix-store --dump-db` writes):
//! per path, one line each for the path, its NAR hash (SHA-256 in base 16,
//! no `sha256:` prefix), its NAR size, its deriver (empty if unknown), the
//! number of references, then one line per reference. `--load-db` takes the
//! hash as given (it neither rehashes nor canonicalises: the unpacked files
//! must already be as Nix leaves them) and registers every path in one
//! transaction, references before referrers. Signatures, content addresses
//! and the `ultimate` flag are not part of the format.

use nix_wire::daemon::PathInfo;

/// The `.reginfo` text of `infos`, in their order.
pub fn reginfo<'a>(infos: impl IntoIterator<Item = &'a PathInfo>) -> String {
    let mut out = String::new();
    for info in infos {
        out.push_str(&info.path.to_absolute());
        out.push('\n');
        out.push_str(&info.nar_hash.to_hex());
        out.push('\n');
        out.push_str(&info.nar_size.to_string());
        out.push('\n');
        if let Some(deriver) = &info.deriver {
            out.push_str(&deriver.to_absolute());
        }
        out.push('\n');
        out.push_str(&info.references.len().to_string());
        out.push('\n');
        for r in &info.references {
            out.push_str(&r.to_absolute());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use nix_wire::{Sha256Hash, StorePath};

    use super::*;

    fn path(name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", "0".repeat(32))).unwrap()
    }

    #[test]
    fn one_record_per_path_as_dump_db_writes_it() {
        let info = PathInfo {
            path: path("nix"),
            deriver: Some(path("nix.drv")),
            nar_hash: Sha256Hash([0xab; 32]),
            references: BTreeSet::from([path("libs"), path("nix")]),
            registration_time: 0,
            nar_size: 1234,
            ultimate: false,
            signatures: BTreeSet::new(),
            ca: None,
        };
        let leaf = PathInfo {
            path: path("libs"),
            deriver: None,
            references: BTreeSet::new(),
            ..info.clone()
        };
        let z = "0".repeat(32);
        assert_eq!(
            reginfo([&leaf, &info]),
            format!(
                "/nix/store/{z}-libs\n{h}\n1234\n\n0\n\
                 /nix/store/{z}-nix\n{h}\n1234\n/nix/store/{z}-nix.drv\n2\n\
                 /nix/store/{z}-libs\n/nix/store/{z}-nix\n",
                h = "ab".repeat(32)
            )
        );
    }
}
