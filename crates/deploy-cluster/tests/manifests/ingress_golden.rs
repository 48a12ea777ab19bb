//! Golden files for the ingress manifests (`tests/golden/ingress/`), for
//! the original note's chart versions and the inventory's defaults, plus
//! the typed errors and the YAML quoting of user values.
//!
//! `UPDATE_GOLDEN=1 cargo test -p deploy-cluster --release --test manifests ingress_golden`
//! rewrites the golden files from the current output; review the diff.

use crate::ingress_support;

use std::path::Path;

use deploy_cluster::ingress::{self, IngressError, IngressWarning, KubeVersion, Manifest};
use ingress_support::{cluster, documents, pairs, render, K3S_VERSION};
use proptest::prelude::*;

/// Compares `actual` with the golden file `path`, or writes it.
fn check_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered output from line {} on; rendered:\n{actual}\n(UPDATE_GOLDEN=1 rewrites it)",
            path.display(),
            line + 1
        );
    }
}

#[test]
fn golden_manifests() {
    let golden = ingress_support::crate_dir().join("tests/golden/ingress");
    for pair in pairs() {
        let dir = golden.join(pair.name);
        let stack = render(&pair, &[]);
        let mut expected_files = vec!["warnings.txt".to_string()];
        for manifest in &stack.manifests {
            check_golden(&dir.join(&manifest.file_name), &manifest.content);
            expected_files.push(manifest.file_name.clone());
        }
        let warnings: String = stack.warnings.iter().map(|w| format!("{w}\n")).collect();
        check_golden(&dir.join("warnings.txt"), &warnings);
        // No stale golden files left behind.
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        expected_files.sort();
        assert_eq!(present, expected_files, "{}", dir.display());
    }
}

#[test]
fn file_names_are_ours_and_workloads_follow() {
    let pair = &pairs()[1];
    let app = ingress_support::example_app();
    let stack = render(pair, std::slice::from_ref(&app));
    let names: Vec<&str> = stack
        .manifests
        .iter()
        .map(|m| m.file_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "nix-deploy-traefik.yaml",
            "nix-deploy-cert-manager.yaml",
            "nix-deploy-cluster-issuers.yaml",
            "app-ingress.yaml"
        ]
    );
    assert_eq!(stack.manifests[3], app);
}

#[test]
fn warnings_for_the_original_pair() {
    let stack = render(&pairs()[0], &[]);
    let kubernetes = KubeVersion::parse(K3S_VERSION).unwrap();
    assert!(stack
        .warnings
        .contains(&IngressWarning::CertManagerUnsupportedKubernetes {
            cert_manager: "v1.13.3".into(),
            kubernetes,
            supported: (21, 27),
        }));
    // The defaults support 1.35: only the placeholder email is left.
    let defaults = render(&pairs()[1], &[]);
    assert!(defaults
        .warnings
        .iter()
        .all(|w| matches!(w, IngressWarning::PlaceholderAcmeEmail { .. })));
    let unknown = ingress::render(
        &cluster("39.0.5", "v1.99.0", "ops@nix-deploy.dev"),
        kubernetes,
        &[],
    )
    .unwrap();
    assert!(matches!(
        unknown.warnings[..],
        [IngressWarning::CertManagerSupportUnknown { .. }]
    ));
}

/// The error of rendering with these settings and workloads.
fn error(traefik: &str, cert_manager: &str, email: &str, workloads: &[Manifest]) -> IngressError {
    let kube = KubeVersion::parse(K3S_VERSION).unwrap();
    ingress::render(&cluster(traefik, cert_manager, email), kube, workloads).unwrap_err()
}

#[test]
fn typed_errors_name_the_field() {
    let ok = "ops@nix-deploy.dev";
    assert_eq!(
        error("39.0.5", "v1.20.0", "  ", &[]),
        IngressError::MissingAcmeEmail
    );
    for bad in [
        "ops",
        "ops@localhost",
        "a b@c.io",
        "@c.io",
        "a@b@c.io",
        "a@.io",
    ] {
        let e = error("39.0.5", "v1.20.0", bad, &[]);
        assert!(
            matches!(e, IngressError::InvalidAcmeEmail { .. }),
            "{bad}: {e}"
        );
        assert!(e.to_string().contains("cluster.acmeEmail"), "{e}");
    }
    let e = error("latest", "v1.20.0", ok, &[]);
    assert!(
        e.to_string().contains("cluster.ingress.traefikChart"),
        "{e}"
    );
    let e = error("39.0.5", "1.20", ok, &[]);
    assert!(e.to_string().contains("cluster.ingress.certManager"), "{e}");
    assert!(matches!(
        error("24.0.0", "v1.20.0", ok, &[]),
        IngressError::TraefikChartTooOld { .. }
    ));
    assert!(matches!(
        error("40.0.0", "v1.20.0", ok, &[]),
        IngressError::TraefikChartTooNew { .. }
    ));
    assert!(matches!(
        error("39.0.5", "v0.16.1", ok, &[]),
        IngressError::CertManagerTooOld { .. }
    ));
    assert!(KubeVersion::parse("k3s").is_err());
}

#[test]
fn workload_names_are_checked() {
    let ok = "ops@nix-deploy.dev";
    let workload = |name: &str, content: &str| Manifest {
        file_name: name.into(),
        content: content.into(),
    };
    for name in [
        "../etc/x.yaml",
        "x.txt",
        "traefik.yaml",
        "nix-deploy-traefik.yaml",
    ] {
        let e = error("39.0.5", "v1.20.0", ok, &[workload(name, "kind: X\n")]);
        assert!(
            matches!(e, IngressError::WorkloadName { .. }),
            "{name}: {e}"
        );
    }
    let twins = [
        workload("app.yaml", "a: 1\n"),
        workload("app.yml", "a: 1\n"),
    ];
    assert!(matches!(
        error("39.0.5", "v1.20.0", ok, &twins),
        IngressError::WorkloadName { .. }
    ));
    assert!(matches!(
        error("39.0.5", "v1.20.0", ok, &[workload("app.yaml", " \n")]),
        IngressError::EmptyWorkload { .. }
    ));
}

/// Emails accepted by the check, with characters YAML cares about.
fn tricky_email() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9'\"#:{}\\[\\],&*!|>%@`?-]{1,12}",
        "[a-z0-9-]{1,8}",
        prop::sample::select(vec!["io", "org", "dev"]),
    )
        .prop_map(|(local, domain, tld)| format!("{}@{domain}.{tld}", local.replace('@', "_")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the address, the ClusterIssuers read back with exactly it.
    #[test]
    fn emails_read_back_exactly(email in tricky_email()) {
        let kube = KubeVersion::parse(K3S_VERSION).unwrap();
        let stack = ingress::render(&cluster("39.0.5", "v1.20.0", &email), kube, &[]).unwrap();
        let issuers = &stack.manifests[2];
        for doc in documents(&issuers.content) {
            prop_assert_eq!(doc["spec"]["acme"]["email"].as_str(), Some(email.as_str()));
        }
    }
}
