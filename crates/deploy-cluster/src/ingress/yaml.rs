//! A small, deterministic YAML writer for the manifests we render.
//!
//! Written by hand rather than with a serde YAML crate: `serde_yaml` is
//! archived, `serde_yml` is archived and flagged unsound (RUSTSEC-2025-0068),
//! and the maintained forks wrap libyaml with their own quoting choices that
//! may change between releases (and so churn the golden files). The shapes
//! we emit are few (maps in a fixed order, lists, strings, integers,
//! booleans), so a short writer with conservative quoting is enough; the
//! tests parse its output with a real YAML parser and compare.
//!
//! Quoting is for YAML 1.1 readers too (Kubernetes' `sigs.k8s.io/yaml`):
//! a string is written plain only when it starts with a letter or `/`, has
//! only `[A-Za-z0-9._/:@-]`, does not end in `:` and is none of the words
//! YAML 1.1 reads as booleans or null; otherwise it is double-quoted with
//! escapes. Multi-line strings become literal blocks when that is exact.

/// A YAML value, with mappings kept in insertion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A string (quoted when needed).
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A mapping, keys in this order.
    Map(Vec<(String, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
}

/// A string node.
pub(crate) fn s(value: impl Into<String>) -> Node {
    Node::Str(value.into())
}

/// A mapping node from `(key, value)` pairs, in order.
pub(crate) fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Node)>) -> Node {
    Node::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// YAML 1.1 words read as booleans or null.
const RESERVED: &[&str] = &[
    "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
];

/// Whether `text` can be written without quotes and still read back as
/// the same string by YAML 1.1 and 1.2 parsers.
fn plain_ok(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c))
        && !text.ends_with(':')
        && !RESERVED.contains(&text.to_ascii_lowercase().as_str())
}

/// `text` as a double-quoted YAML scalar.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A scalar string on one line: plain or double-quoted.
fn scalar(text: &str) -> String {
    if plain_ok(text) {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// Whether `text` reads back exactly as a literal block (`|` or `|-`).
fn literal_ok(text: &str) -> bool {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let first = body.lines().find(|line| !line.is_empty()).unwrap_or("");
    text.contains('\n')
        && !first.is_empty()
        && !body.ends_with('\n')
        && !first.starts_with([' ', '\t'])
        && body.lines().all(|line| line.trim_end() == line)
        && !body.chars().any(|c| {
            (c.is_control() && c != '\n') || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
        })
}

/// Appends `text` as the value after `key:` (the key already written).
fn write_string(out: &mut String, text: &str, indent: usize) {
    if !literal_ok(text) {
        out.push(' ');
        out.push_str(&scalar(text));
        out.push('\n');
        return;
    }
    out.push_str(if text.ends_with('\n') {
        " |\n"
    } else {
        " |-\n"
    });
    for line in text.strip_suffix('\n').unwrap_or(text).lines() {
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// Appends the value of a mapping entry or list item after its key or
/// dash: inline for scalars and empty collections, else on the next lines
/// at `indent`.
fn write_value(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Str(text) => write_string(out, text, indent),
        Node::Int(n) => out.push_str(&format!(" {n}\n")),
        Node::Bool(b) => out.push_str(&format!(" {b}\n")),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(_) | Node::Seq(_) => {
            out.push('\n');
            write_block(out, node, indent);
        }
    }
}

/// Appends a mapping or sequence as block lines at `indent`.
fn write_block(out: &mut String, node: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(&scalar(key));
                out.push(':');
                write_value(out, value, indent + 2);
            }
        }
        Node::Seq(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Node::Map(entries) if !entries.is_empty() => {
                        // The first entry shares the dash's line.
                        let mut nested = String::new();
                        write_block(&mut nested, item, indent + 2);
                        out.push(' ');
                        out.push_str(&nested[indent + 2..]);
                    }
                    _ => write_value(out, item, indent + 2),
                }
            }
        }
        scalar_node => write_value(out, scalar_node, indent),
    }
}

/// One YAML document (a mapping at the top), ending in a newline.
pub(crate) fn document(root: &Node) -> String {
    let mut out = String::new();
    write_block(&mut out, root, 0);
    out
}

/// Several documents separated by `---`, each after an optional comment
/// header (lines already starting with `#`).
pub(crate) fn documents(header: &str, roots: &[Node]) -> String {
    let mut out = String::from(header);
    for root in roots {
        out.push_str("---\n");
        out.push_str(&document(root));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_only_when_unambiguous() {
        for plain in ["traefik", "https://charts.jetstack.io", "v1.13.3", "a@b.io"] {
            assert!(plain_ok(plain), "{plain}");
        }
        for quote in [
            "25.0.0", "yes", "No", "", "1.35", "a b", "-x", "x:", "@a", "é",
        ] {
            assert!(!plain_ok(quote), "{quote}");
        }
    }

    #[test]
    fn escapes_in_double_quotes() {
        assert_eq!(quoted("a\"b\\c\n\u{7}"), r#""a\"b\\c\n\u0007""#);
    }

    /// The JSON value a YAML parser should read back from `node`.
    fn json(node: &Node) -> serde_json::Value {
        match node {
            Node::Str(text) => text.clone().into(),
            Node::Int(n) => (*n).into(),
            Node::Bool(b) => (*b).into(),
            Node::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.clone(), json(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            Node::Seq(items) => items.iter().map(json).collect(),
        }
    }

    /// Strings that stress quoting: YAML indicators, words YAML 1.1 reads
    /// as booleans, numbers, line breaks, controls and non-ASCII.
    fn tricky() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[ a-z0-9:#'\"{}\\[\\],&*!|>%@`?.\n\t-]{0,16}",
            prop::sample::select(vec![
                "yes", "Off", "~", "null", "0x1F", "1e3", "12:30", "-", "? x"
            ])
            .prop_map(String::from),
        ]
    }

    proptest::proptest! {
        /// Whatever the strings, a real YAML parser reads back exactly them.
        #[test]
        fn strings_read_back_exactly(key in tricky(), value in tricky(), item in tricky()) {
            proptest::prop_assume!(key != "list");
            let doc = map([
                (key.clone(), s(value.clone())),
                ("list".to_string(), Node::Seq(vec![s(item), map([(key, s(value))])])),
            ]);
            let text = document(&doc);
            let parsed: serde_json::Value = serde_yaml_ng::from_str(&text)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
            proptest::prop_assert_eq!(parsed, json(&doc), "{}", text);
        }
    }

    #[test]
    fn nested_shapes() {
        let doc = map([
            ("a", map([("b", Node::Int(1)), ("c", Node::Bool(true))])),
            (
                "l",
                Node::Seq(vec![map([("x", s("1")), ("k", s("z"))]), s("w")]),
            ),
            ("e", Node::Map(vec![])),
            ("v", s("k: v\nl2\n")),
        ]);
        let expected =
            "a:\n  b: 1\n  c: true\nl:\n  - x: \"1\"\n    k: z\n  - w\ne: {}\nv: |\n  k: v\n  l2\n";
        assert_eq!(document(&doc), expected);
    }
}
