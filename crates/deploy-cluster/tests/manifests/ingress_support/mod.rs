//! What the ingress tests share: the two version pairs to render (the
//! original note's and the inventory's defaults, read from
//! `nix/inventory.nix` so the golden files follow the defaults), and
//! reading the manifests back as YAML documents.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use deploy_cluster::ingress::{self, IngressStack, KubeVersion, Manifest};
use nix_deploy::inventory::{ClusterK3s, ClusterSettings, IngressSettings};

/// The k3s of the pinned nixpkgs (shared/reference/k3s-ingress.md, section 6).
pub const K3S_VERSION: &str = "v1.35.6+k3s1";

/// One set of chart versions, named like its golden directory.
pub struct Pair {
    /// Directory under `tests/golden/ingress/`.
    pub name: &'static str,
    /// `cluster.ingress.traefikChart`.
    pub traefik: String,
    /// `cluster.ingress.certManager`.
    pub cert_manager: String,
    /// `cluster.acmeEmail`.
    pub email: String,
}

/// The crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's top directory.
pub fn repo_dir() -> PathBuf {
    crate_dir().join("../..")
}

/// The string value of `NAME ? "VALUE"` or `NAME = "VALUE";` in a Nix file.
fn nix_default(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("{name} ="))
        .or_else(|| text.find(&format!("{name} ?")))
        .unwrap_or_else(|| panic!("no {name} in nix/inventory.nix"));
    let rest = &text[start..];
    let open = rest.find('"').expect("a quoted default") + 1;
    let len = rest[open..].find('"').expect("closing quote");
    rest[open..open + len].to_string()
}

/// The original note's versions, and the inventory's defaults.
pub fn pairs() -> Vec<Pair> {
    let inventory = std::fs::read_to_string(repo_dir().join("nix/inventory.nix")).unwrap();
    let email = nix_default(&inventory, "acmeEmail");
    vec![
        Pair {
            name: "original",
            traefik: "25.0.0".into(),
            cert_manager: "v1.13.3".into(),
            email: email.clone(),
        },
        Pair {
            name: "defaults",
            traefik: nix_default(&inventory, "traefikChart"),
            cert_manager: nix_default(&inventory, "certManager"),
            email,
        },
    ]
}

/// Cluster settings with these versions.
pub fn cluster(traefik: &str, cert_manager: &str, email: &str) -> ClusterSettings {
    ClusterSettings {
        name: "k8s".into(),
        acme_email: email.into(),
        ingress: IngressSettings {
            traefik_chart: traefik.into(),
            cert_manager: cert_manager.into(),
        },
        k3s: ClusterK3s::default(),
        manifests: Default::default(),
        cache: None,
    }
}

/// Renders `pair` for [`K3S_VERSION`] with `workloads`.
pub fn render(pair: &Pair, workloads: &[Manifest]) -> IngressStack {
    let kube = KubeVersion::parse(K3S_VERSION).unwrap();
    let cluster = cluster(&pair.traefik, &pair.cert_manager, &pair.email);
    ingress::render(&cluster, kube, workloads).unwrap()
}

/// `examples/app-ingress.yaml` as a workload manifest.
pub fn example_app() -> Manifest {
    let path = repo_dir().join("examples/app-ingress.yaml");
    Manifest {
        file_name: "app-ingress.yaml".into(),
        content: std::fs::read_to_string(path).unwrap(),
    }
}

/// Every YAML document in `text`, as JSON values (empty documents skipped).
pub fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .filter(|doc: &serde_json::Value| !doc.is_null())
        .collect()
}

/// Reads a JSON file under `tests/schemas/`.
pub fn schema_file(name: &str) -> serde_json::Value {
    let path: &Path = &crate_dir().join("tests/schemas").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
