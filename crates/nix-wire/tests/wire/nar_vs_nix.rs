//! Our encoder against `nix-store --dump` on the edge-case corpus, a 200 MB
//! file and chunk boundaries; and round trips through our unpacker and
//! `nix-store --restore`.

use crate::nar_support;

use std::fs;
use std::io::Write;

use nar_support::*;
use nix_wire::nar::{self, NarEncoder, DEFAULT_CHUNK_SIZE};

fn ours(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let stats = nar::dump(path, &mut out).unwrap();
    assert_eq!(stats.size, out.len() as u64);
    out
}

#[test]
fn corpus_is_byte_identical_to_nix_store_dump() {
    if !have_nix_store() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("corpus");
    build_corpus(&root);
    let reference = nix_dump(&root);
    let mine = ours(&root);
    assert_eq!(mine.len(), reference.len());
    assert!(mine == reference, "NAR differs from nix-store --dump");
    for chunk_size in [1000, 4096, 1 << 20] {
        let mut enc = NarEncoder::with_chunk_size(&root, chunk_size).unwrap();
        let mut all = Vec::new();
        for chunk in &mut enc {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= chunk_size + 4096 + 64, "chunk too big");
            all.extend_from_slice(&chunk);
        }
        assert!(all == reference, "chunk size {chunk_size}");
        assert_eq!(enc.stats().unwrap().size, reference.len() as u64);
    }
    // Every top-level entry on its own, as a root node.
    for entry in fs::read_dir(&root).unwrap() {
        let p = entry.unwrap().path();
        assert!(ours(&p) == nix_dump(&p), "{}", p.display());
    }
}

#[test]
fn roundtrip_through_unpack_and_nix_store_restore() {
    if !have_nix_store() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("corpus");
    build_corpus(&root);
    let nar_bytes = ours(&root);

    let unpacked = tmp.path().join("unpacked");
    let stats = nar::unpack(&nar_bytes[..], &unpacked).unwrap();
    assert_eq!(stats.size, nar_bytes.len() as u64);
    assert!(ours(&unpacked) == nar_bytes, "unpack → encode differs");
    assert!(
        nix_dump(&unpacked) == nar_bytes,
        "nix-store --dump of our unpack differs"
    );

    let restored = tmp.path().join("restored");
    nix_restore(&nar_bytes, &restored);
    assert!(
        ours(&restored) == nar_bytes,
        "nix-store --restore → encode differs"
    );
}

#[test]
fn nar_of_exactly_one_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    for len in [
        DEFAULT_CHUNK_SIZE - 112,
        DEFAULT_CHUNK_SIZE - 111,
        DEFAULT_CHUNK_SIZE - 113,
    ] {
        let p = tmp.path().join(format!("f{len}"));
        fs::write(&p, vec![0xa5; len]).unwrap();
        let chunks: Vec<_> = NarEncoder::new(&p).unwrap().map(Result::unwrap).collect();
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        assert_eq!(total, 112 + len.next_multiple_of(8));
        if len == DEFAULT_CHUNK_SIZE - 112 {
            assert_eq!(chunks.len(), 1);
        }
        if have_nix_store() {
            assert!(chunks.concat() == nix_dump(&p));
        }
    }
}

#[test]
fn file_of_200_mb_matches_nix_store_dump() {
    if !have_nix_store() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("big");
    let mut f = fs::File::create(&p).unwrap();
    let block: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for i in 0..200u8 {
        f.write_all(&[i]).unwrap();
        f.write_all(&block[1..]).unwrap();
    }
    f.write_all(b"odd tail").unwrap();
    drop(f);
    let stats = nar::hash_path(&p).unwrap();
    let (hex, size) = nix_dump_sha256(&p);
    assert_eq!(stats.size, size);
    assert_eq!(stats.sha256.to_hex(), hex);
}

#[test]
fn sockets_and_fifos_are_refused_with_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    let sock = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let err = nar::hash_path(&dir).unwrap_err().to_string();
    assert!(err.contains("sock") && err.contains("socket"), "{err}");
    let err = nar::hash_path(&sock).unwrap_err().to_string();
    assert!(err.contains("socket"), "{err}");

    let fifo = tmp.path().join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let err = nar::hash_path(&fifo).unwrap_err().to_string();
    assert!(err.contains("fifo") && err.contains("FIFO"), "{err}");

    let err = nar::hash_path(std::path::Path::new("/dev/null"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/null") && err.contains("character device"),
        "{err}"
    );
}

#[test]
fn missing_path_is_an_error_naming_it() {
    let err = NarEncoder::new(std::path::Path::new("/nonexistent/xyz"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/xyz"), "{err}");
}
