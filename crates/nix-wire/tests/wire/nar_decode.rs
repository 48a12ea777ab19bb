//! Decoder and unpacker rejections: every malformed input gives a precise
//! error, never a panic or a huge allocation, and unpacking never writes
//! outside its destination.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix_wire::nar::{self, NarError};

/// A NAR is a sequence of strings: u64 length, bytes, zero padding.
fn strs(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

/// [`strs`] of space-separated tokens; `''` is the empty string.
fn toks(spec: &str) -> Vec<u8> {
    let parts: Vec<&[u8]> = spec
        .split(' ')
        .map(|t| if t == "''" { &b""[..] } else { t.as_bytes() })
        .collect();
    strs(&parts)
}

fn dir_with(entries: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
    for name in entries {
        parts.extend([&b"entry"[..], b"(", b"name", name, b"node"]);
        parts.extend([
            &b"("[..],
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
            b")",
        ]);
    }
    parts.push(b")");
    strs(&parts)
}

fn symlink_to(target: &[u8]) -> Vec<u8> {
    strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"symlink",
        b"target",
        target,
        b")",
    ])
}

/// A small NAR with every node kind, built by our encoder.
fn sample() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir_all(d.join("sub/inner")).unwrap();
    fs::write(d.join("file"), "hello world").unwrap();
    fs::write(d.join("sub/exe"), "#!").unwrap();
    fs::set_permissions(d.join("sub/exe"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("file", d.join("link")).unwrap();
    let mut out = Vec::new();
    nar::dump(&d, &mut out).unwrap();
    out
}

fn invalid(nar: &[u8]) -> String {
    match nar::validate(nar) {
        Err(e @ NarError::Invalid { .. }) => e.to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn valid_handmade_nars_pass() {
    assert!(
        nar::validate(&dir_with(&[b"B", b"Z", b"_x", b"a", b"a-b", b"a.b", b"a0"])[..]).is_ok()
    );
    assert!(nar::validate(&symlink_to(b"/etc")[..]).is_ok());
    assert!(nar::validate(&sample()[..]).is_ok());
}

#[test]
fn bad_magic() {
    let e = invalid(&toks("nix-archive-2 ( type symlink"));
    assert!(
        e.contains("at byte 0, root: expected 'nix-archive-1'"),
        "{e}"
    );
}

#[test]
fn non_zero_padding() {
    let mut n = symlink_to(b"abc");
    let target_pad = n.len() - 16 - 5; // "abc" + 5 padding bytes before ")"
    n[target_pad] = 1;
    assert!(invalid(&n).contains("non-zero padding"));
    let mut n = symlink_to(b"abc");
    n[8 + 13] = b'!'; // padding after "nix-archive-1"
    assert!(invalid(&n).contains("at byte 21, root: non-zero padding"));
}

#[test]
fn truncation_at_every_offset() {
    let full = sample();
    for len in 0..full.len() {
        match nar::validate(&full[..len]) {
            Err(NarError::Truncated { offset }) => assert_eq!(offset, len as u64),
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        let err = nar::unpack(&full[..len], &tmp.path().join("out")).unwrap_err();
        assert_eq!(err.to_string(), format!("truncated NAR at byte {len}"));
    }
}

#[test]
fn trailing_garbage() {
    let mut n = sample();
    let size = n.len() as u64;
    n.push(0);
    assert!(
        matches!(nar::validate(&n[..]), Err(NarError::TrailingData { offset }) if offset == size)
    );
    let tmp = tempfile::tempdir().unwrap();
    let err = nar::unpack(&n[..], &tmp.path().join("out")).unwrap_err();
    assert!(matches!(err, NarError::TrailingData { .. }));
}

#[test]
fn huge_lengths_fail_fast_without_allocating() {
    let huge = (1u64 << 60).to_le_bytes();
    // As a token, a name and a symlink target.
    let mut n = toks("nix-archive-1 (");
    n.extend_from_slice(&huge);
    assert!(invalid(&n).contains("token of 1152921504606846976 bytes exceeds the limit of 64"));
    let mut n = toks("nix-archive-1 ( type directory entry ( name");
    n.extend_from_slice(&huge);
    assert!(invalid(&n).contains("entry name of 1152921504606846976 bytes"));
    let mut n = toks("nix-archive-1 ( type symlink target");
    n.extend_from_slice(&huge);
    assert!(invalid(&n).contains("symlink target of 1152921504606846976 bytes"));
    // File contents are streamed, so a huge size is merely truncated.
    let mut n = toks("nix-archive-1 ( type regular contents");
    n.extend_from_slice(&huge);
    n.extend_from_slice(b"some bytes");
    let size = n.len() as u64;
    assert!(matches!(nar::validate(&n[..]), Err(NarError::Truncated { offset }) if offset == size));
}

#[test]
fn length_limits() {
    let ok = vec![b'n'; 255];
    assert!(nar::validate(&dir_with(&[&ok])[..]).is_ok());
    let long = vec![b'n'; 256];
    assert!(
        invalid(&dir_with(&[&long])).contains("entry name of 256 bytes exceeds the limit of 255")
    );
    assert!(nar::validate(&symlink_to(&[b'x'; 4095])[..]).is_ok());
    assert!(invalid(&symlink_to(&[b'x'; 4096])).contains("exceeds the limit of 4095"));
}

#[test]
fn bad_names() {
    let cases: [(&[&[u8]], &str); 9] = [
        (&[b"b", b"a"], "entry 'a': names not sorted"),
        (&[b"a", b"B"], "entry 'B': names not sorted"),
        (&[b"a", b"a"], "entry 'a': duplicate entry name"),
        (&[b".."], "'.' or '..'"),
        (&[b"."], "'.' or '..'"),
        (&[b"a/b"], "entry 'a/b': entry name contains '/'"),
        (&[b"/"], "contains '/'"),
        (&[b"a\0b"], "contains NUL"),
        (&[b""], "empty entry name"),
    ];
    for (names, want) in cases {
        let e = invalid(&dir_with(names));
        assert!(e.contains(want), "{names:?}: {e}");
    }
}

#[test]
fn errors_name_the_nested_entry() {
    let n = toks(
        "nix-archive-1 ( type directory \
         entry ( name a node ( type directory \
         entry ( name c node ( type symlink target x ) ) \
         entry ( name b node",
    );
    let e = invalid(&n);
    assert!(e.contains("entry 'a/b': names not sorted"), "{e}");
}

#[test]
fn bad_symlink_targets() {
    assert!(invalid(&symlink_to(b"")).contains("symlink target is empty"));
    assert!(invalid(&symlink_to(b"a\0b")).contains("contains NUL"));
}

#[test]
fn unknown_tokens() {
    let e = invalid(&toks("nix-archive-1 ( type fifo"));
    assert!(
        e.contains("expected 'regular', 'symlink' or 'directory', found 'fifo'"),
        "{e}"
    );
    let e = invalid(&toks("nix-archive-1 ( type directory entries"));
    assert!(
        e.contains("expected 'entry' or ')', found 'entries'"),
        "{e}"
    );
    let e = invalid(&toks("nix-archive-1 ( type regular executable yes"));
    assert!(e.contains("expected '', found 'yes'"), "{e}");
    let e = invalid(&toks("nix-archive-1 ( type regular content"));
    assert!(e.contains("expected 'contents'"), "{e}");
    let e = invalid(&toks("nix-archive-1 ( type regular contents '' x"));
    assert!(e.contains("expected ')', found 'x'"), "{e}");
}

fn nested(depth: usize) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
    for _ in 1..depth {
        parts.extend([
            &b"entry"[..],
            b"(",
            b"name",
            b"d",
            b"node",
            b"(",
            b"type",
            b"directory",
        ]);
    }
    parts.push(b")");
    for _ in 1..depth {
        parts.extend([&b")"[..], b")"]);
    }
    strs(&parts)
}

#[test]
fn nesting_depth_limit() {
    assert!(nar::validate(&nested(nar::decode::MAX_DEPTH)[..]).is_ok());
    let e = invalid(&nested(nar::decode::MAX_DEPTH + 1));
    assert!(e.contains("directories nested deeper than 256"), "{e}");
}

/// Lists a directory's names, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unpack_never_escapes_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path();
    fs::write(parent.join("victim"), "keep").unwrap();
    let evil: Vec<Vec<u8>> = vec![
        dir_with(&[b".."]),
        dir_with(&[b"../victim"]),
        dir_with(&[b"a/../../victim"]),
        dir_with(&[b"victim", b"victim"]),
        // A symlink out, then the same name as a directory.
        toks(
            "nix-archive-1 ( type directory \
             entry ( name a node ( type symlink target .. ) ) \
             entry ( name a node ( type directory \
             entry ( name victim node ( type regular contents pwned ) ) ) ) )",
        ),
    ];
    for (i, n) in evil.iter().enumerate() {
        let dest = parent.join(format!("dest{i}"));
        assert!(nar::unpack(&n[..], &dest).is_err(), "case {i}");
        assert_eq!(fs::read_to_string(parent.join("victim")).unwrap(), "keep");
    }
    let mut expected: Vec<String> = (0..evil.len()).map(|i| format!("dest{i}")).collect();
    expected.push("victim".into());
    assert_eq!(listing(parent), expected);
}

#[test]
fn unpack_refuses_existing_dest_even_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let dest = tmp.path().join("dest");
    std::os::unix::fs::symlink(&outside, &dest).unwrap();
    assert!(nar::unpack(&sample()[..], &dest).is_err());
    assert!(nar::unpack(&dir_with(&[b"f"])[..], &outside).is_err());
    assert!(listing(&outside).is_empty());
    let file_nar = toks("nix-archive-1 ( type regular contents x )");
    assert!(nar::unpack(&file_nar[..], &dest).is_err());
    assert!(listing(&outside).is_empty());
}

#[test]
fn unpack_modes_and_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let n = sample();
    assert_eq!(
        nar::unpack(&n[..], &dest).unwrap(),
        nar::validate(&n[..]).unwrap()
    );
    let mode = |p: &str| {
        fs::symlink_metadata(dest.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("file"), 0o644);
    assert_eq!(mode("sub/exe"), 0o755);
    assert_eq!(mode("sub"), 0o755);
    assert_eq!(
        fs::read_to_string(dest.join("file")).unwrap(),
        "hello world"
    );
    assert_eq!(fs::read_link(dest.join("link")).unwrap(), Path::new("file"));
}
