//! The test vectors of §8.3, through the encoder, the decoder and the
//! unpacker.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use super::*;

/// The 120-byte NAR of a file containing `hello\n`.
const HELLO_NAR: &str = "0d000000000000006e69782d617263686976652d31000000\
    01000000000000002800000000000000\
    04000000000000007479706500000000\
    0700000000000000726567756c617200\
    0800000000000000636f6e74656e7473\
    060000000000000068656c6c6f0a0000\
    01000000000000002900000000000000";

fn encode(path: &Path) -> (Vec<u8>, NarStats) {
    let mut out = Vec::new();
    let stats = dump(path, &mut out).unwrap();
    (out, stats)
}

/// Checks size and hash through every producer and the decoder.
fn check(path: &Path, size: u64, nix32: &str) {
    let (nar, stats) = encode(path);
    assert_eq!(stats.size, size, "{}", path.display());
    assert_eq!(nar.len() as u64, size);
    assert_eq!(stats.sha256.to_nix32(), nix32, "{}", path.display());
    assert_eq!(hash_path(path).unwrap(), stats);
    assert_eq!(validate(&nar[..]).unwrap(), stats);
    for chunk_size in [1, 7, 8, 100] {
        let mut enc = NarEncoder::with_chunk_size(path, chunk_size).unwrap();
        let chunks: Vec<_> = (&mut enc).map(Result::unwrap).collect();
        assert_eq!(chunks.concat(), nar);
        assert_eq!(enc.stats(), Some(stats));
        // Without the hash: the same bytes and size, no stats.
        let mut enc = NarEncoder::with_chunk_size(path, chunk_size)
            .unwrap()
            .without_hash();
        let chunks: Vec<_> = (&mut enc).map(Result::unwrap).collect();
        assert_eq!(chunks.concat(), nar);
        assert_eq!((enc.stats(), enc.size()), (None, Some(size)));
    }
}

#[test]
fn hello_file_bytes_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hello");
    fs::write(&p, "hello\n").unwrap();
    let (nar, stats) = encode(&p);
    assert_eq!(data_encoding::HEXLOWER.encode(&nar), HELLO_NAR);
    assert_eq!(
        stats.sha256.to_hex(),
        "1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13"
    );
    check(
        &p,
        120,
        "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
    );
}

#[test]
fn table_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("empty"), "").unwrap();
    check(
        &d.join("empty"),
        112,
        "0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p",
    );

    fs::write(d.join("exe"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(d.join("exe"), fs::Permissions::from_mode(0o700)).unwrap();
    check(
        &d.join("exe"),
        160,
        "0m35wabrvlzjvv71f2xvca3vd91gh9mwvh4mm38h7yb0h9kc30v2",
    );

    symlink("hello.txt", d.join("link")).unwrap();
    check(
        &d.join("link"),
        128,
        "11v3yzm8yb6akfgzr810di17aym5h5p3794gqvni9gl5g0ysiy01",
    );

    fs::create_dir(d.join("emptydir")).unwrap();
    check(
        &d.join("emptydir"),
        96,
        "0sjjj9z1dhilhpc8pq4154czrb79z9cm044jvn75kxcjv6v5l2m5",
    );

    fs::create_dir(d.join("ab")).unwrap();
    fs::write(d.join("ab/b"), "a").unwrap();
    fs::write(d.join("ab/A"), "c").unwrap();
    check(
        &d.join("ab"),
        480,
        "04b499md996y8yh8np8cydw25n9f1lqnw4wn8g76sb47y1l2w7ga",
    );
}

#[test]
fn group_exec_bit_alone_is_not_executable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    fs::write(&p, "").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o655)).unwrap();
    check(
        &p,
        112,
        "0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p",
    );
}

#[test]
fn decoder_events_of_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f"), "xyz").unwrap();
    symlink("f", d.join("l")).unwrap();
    let (nar, _) = encode(&d);
    let mut r = NarReader::new(&nar[..]);
    assert_eq!(r.next().unwrap(), Some(Event::Directory { name: vec![] }));
    let file = Event::File {
        name: b"f".to_vec(),
        executable: false,
        size: 3,
    };
    assert_eq!(r.next().unwrap(), Some(file));
    let mut contents = String::new();
    std::io::Read::read_to_string(&mut r.contents(), &mut contents).unwrap();
    assert_eq!(contents, "xyz");
    let link = Event::Symlink {
        name: b"l".to_vec(),
        target: b"f".to_vec(),
    };
    assert_eq!(r.next().unwrap(), Some(link));
    assert_eq!(r.next().unwrap(), Some(Event::EndDirectory));
    assert_eq!(r.next().unwrap(), None);
    assert_eq!(r.stats().unwrap().size, nar.len() as u64);
}

#[test]
fn reader_stops_exactly_at_the_end_of_the_nar() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hello");
    fs::write(&p, "hello\n").unwrap();
    let (mut stream, stats) = encode(&p);
    stream.extend_from_slice(b"next protocol message");
    let mut rest = &stream[..];
    let mut r = NarReader::new(&mut rest);
    while r.next().unwrap().is_some() {}
    assert_eq!(r.stats(), Some(stats));
    drop(r);
    assert_eq!(rest, b"next protocol message");
}
