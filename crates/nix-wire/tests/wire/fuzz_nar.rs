//! Property tests beside the coverage-guided fuzzing of `fuzz/`:
//! (a) arbitrary bytes and mutations of valid NARs never make the decoder or
//! the unpacker panic, and whatever they accept is canonical;
//! (b) random trees encode → decode → unpack → encode identically and match
//! a tiny reference encoder.
//!
//! Case counts default to 64 per property; set `PROPTEST_CASES` to change.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use nix_wire::nar::{self, Event, NarReader};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Node {
    File { contents: Vec<u8>, executable: bool },
    Symlink(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, Node>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9._ -]{1,8}".prop_map(String::into_bytes),
        prop::collection::vec(1u8..=255, 1..12),
    ]
    .prop_filter("valid name", |n| {
        n != b"." && n != b".." && !n.contains(&b'/')
    })
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..300), any::<bool>()).prop_map(
            |(contents, executable)| Node::File {
                contents,
                executable
            }
        ),
        prop::collection::vec(1u8..=255, 1..40).prop_map(Node::Symlink),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop::collection::btree_map(name(), inner, 0..6).prop_map(Node::Dir)
    })
}

fn write_tree(node: &Node, path: &Path) {
    match node {
        Node::File {
            contents,
            executable,
        } => {
            fs::write(path, contents).unwrap();
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(target) => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path).unwrap()
        }
        Node::Dir(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                write_tree(child, &path.join(std::ffi::OsStr::from_bytes(name)));
            }
        }
    }
}

/// The reference encoder: the grammar of §8.1, written directly.
fn model_nar(node: &Node) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    fn n(out: &mut Vec<u8>, node: &Node) {
        s(out, b"(");
        s(out, b"type");
        match node {
            Node::File {
                contents,
                executable,
            } => {
                s(out, b"regular");
                if *executable {
                    s(out, b"executable");
                    s(out, b"");
                }
                s(out, b"contents");
                s(out, contents);
            }
            Node::Symlink(t) => {
                s(out, b"symlink");
                s(out, b"target");
                s(out, t);
            }
            Node::Dir(entries) => {
                s(out, b"directory");
                for (name, child) in entries {
                    for t in [&b"entry"[..], b"(", b"name", name, b"node"] {
                        s(out, t);
                    }
                    n(out, child);
                    s(out, b")");
                }
            }
        }
        s(out, b")");
    }
    let mut out = Vec::new();
    s(&mut out, b"nix-archive-1");
    n(&mut out, node);
    out
}

fn encode(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    nar::dump(path, &mut out).unwrap();
    out
}

/// A valid NAR with every node kind, the seed for mutations.
fn seed() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        let mut entries = BTreeMap::new();
        entries.insert(b"a".to_vec(), Node::Symlink(b"/etc".to_vec()));
        let file = Node::File {
            contents: b"hello world, some contents".to_vec(),
            executable: true,
        };
        let sub = BTreeMap::from([
            (b"f".to_vec(), file),
            (b"g".to_vec(), Node::Dir(BTreeMap::new())),
        ]);
        entries.insert(b"b".to_vec(), Node::Dir(sub));
        entries.insert(
            b"c".to_vec(),
            Node::File {
                contents: vec![],
                executable: false,
            },
        );
        model_nar(&Node::Dir(entries))
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrites an 8-aligned word (lengths live there) with a value.
    Word(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), prop_oneof![0u64..300, any::<u64>()])
            .prop_map(|(i, v)| Mutation::Word(i, v)),
    ]
}

fn mutate(nar: &mut Vec<u8>, m: &Mutation) {
    let len = nar.len();
    match m {
        Mutation::Flip(i, x) => nar[i % len] ^= x,
        Mutation::Truncate(i) => nar.truncate(i % len),
        Mutation::Insert(i, b) => {
            let at = i % len;
            nar.splice(at..at, b.iter().copied());
        }
        Mutation::Word(_, _) if len < 8 => {}
        Mutation::Word(i, v) => {
            let at = (i % (len / 8)) * 8;
            nar[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Decodes with the event API, reading some contents and skipping others.
fn walk(input: &[u8]) {
    let mut r = NarReader::new(input);
    let mut buf = [0u8; 5];
    let mut reading = true;
    while let Ok(Some(ev)) = r.next() {
        if matches!(ev, Event::File { .. }) {
            reading = !reading;
            if reading {
                while let Ok(n) = r.read_contents(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
        }
    }
}

/// Feeds `input` to every consumer; anything accepted must be canonical and
/// nothing may appear outside the unpack destination.
fn check_input(input: &[u8]) {
    walk(input);
    let validated = nar::validate(input);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let unpacked = nar::unpack(input, &dest);
    assert_eq!(
        validated.is_ok(),
        unpacked.is_ok(),
        "{validated:?} vs {unpacked:?}"
    );
    let outside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(outside.len() <= 1, "{outside:?}");
    if let Ok(stats) = validated {
        assert_eq!(unpacked.unwrap(), stats);
        assert!(encode(&dest) == input, "accepted NAR is not canonical");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_input(&bytes);
        let mut with_magic = seed()[..24].to_vec();
        with_magic.extend_from_slice(&bytes);
        check_input(&with_magic);
    }

    #[test]
    fn mutated_nars_never_panic(ms in prop::collection::vec(mutation(), 1..4)) {
        let mut input = seed().to_vec();
        for m in &ms {
            if !input.is_empty() {
                mutate(&mut input, m);
            }
        }
        check_input(&input);
    }

    #[test]
    fn random_trees_round_trip(root in node()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&root, &src);
        let bytes = encode(&src);
        prop_assert!(bytes == model_nar(&root), "encoder differs from the model");
        let stats = nar::validate(&bytes[..]).unwrap();
        prop_assert_eq!(stats.size, bytes.len() as u64);
        prop_assert_eq!(nar::hash_path(&src).unwrap(), stats);
        let dest = tmp.path().join("dest");
        prop_assert_eq!(nar::unpack(&bytes[..], &dest).unwrap(), stats);
        prop_assert!(encode(&dest) == bytes, "unpack → encode differs");
    }
}
