//! Schema check of every manifest the ingress stack renders, for both
//! version pairs, and of `examples/app-ingress.yaml`: each YAML document
//! is validated against the JSON schema of its kind (`tests/schemas/`),
//! and each HelmChart's `valuesContent` against its chart's values.
//!
//! - Kubernetes kinds (Namespace, Deployment, Service, Ingress): the
//!   upstream schemas for 1.35 in their strict form (unknown fields are
//!   errors), bundled from the PyPI package kubernetes-validate by
//!   `tests/schemas/bundle-kubernetes.py`;
//! - HelmChart and ClusterIssuer: schemas derived from their CRDs (see the
//!   `$comment` in each file);
//! - Traefik values: the chart's values.schema.json (charts 34 to 39) or
//!   its template's rules (25 to 33); cert-manager values: the two CRD
//!   options. Other charts' values are only parsed.
//!
//! Everything is in the repository, so the test runs offline.

use crate::ingress_support;

use ingress_support::{documents, example_app, pairs, render, schema_file};
use jsonschema::Validator;
use serde_json::{json, Value};

/// The compiled schemas.
struct Schemas {
    kubernetes: Value,
    helm_chart: Validator,
    cluster_issuer: Validator,
    traefik_25_33: Validator,
    traefik_34_39: Validator,
    cert_manager_values: Validator,
}

fn compile(schema: &Value) -> Validator {
    jsonschema::validator_for(schema).expect("a valid schema")
}

impl Schemas {
    fn load() -> Schemas {
        Schemas {
            kubernetes: schema_file("kubernetes-1.35.json"),
            helm_chart: compile(&schema_file("helm.cattle.io-v1-helmchart.json")),
            cluster_issuer: compile(&schema_file("cert-manager.io-v1-clusterissuer.json")),
            traefik_25_33: compile(&schema_file("traefik-values-25-33.json")),
            traefik_34_39: compile(&schema_file("traefik-values-34-39.json")),
            cert_manager_values: compile(&schema_file("cert-manager-values.json")),
        }
    }

    /// The validator for a Kubernetes kind (`v1/Namespace`,
    /// `apps/v1/Deployment`), if the bundle has it.
    fn kubernetes_kind(&self, key: &str) -> Option<Validator> {
        let mut schema = self.kubernetes["kinds"].get(key)?.clone();
        schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        schema["$defs"] = self.kubernetes["$defs"].clone();
        Some(compile(&schema))
    }

    /// Every problem with one document (empty: valid).
    fn check(&self, doc: &Value) -> Vec<String> {
        let api = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        match (api, kind) {
            ("helm.cattle.io/v1", "HelmChart") => {
                let mut errors = problems(&self.helm_chart, doc);
                errors.extend(self.check_values(doc));
                errors
            }
            ("cert-manager.io/v1", "ClusterIssuer") => problems(&self.cluster_issuer, doc),
            _ => match self.kubernetes_kind(&format!("{api}/{kind}")) {
                Some(validator) => problems(&validator, doc),
                None => vec![format!("no schema for apiVersion {api:?} kind {kind:?}")],
            },
        }
    }

    /// Problems with a HelmChart's `spec.valuesContent`.
    fn check_values(&self, chart: &Value) -> Vec<String> {
        let Some(text) = chart["spec"]["valuesContent"].as_str() else {
            return vec![];
        };
        let values: Value = match serde_yaml_ng::from_str(text) {
            Ok(values) => values,
            Err(e) => return vec![format!("valuesContent is not YAML: {e}")],
        };
        let major = chart["spec"]["version"].as_str().and_then(|v| {
            v.trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        });
        let validator = match (chart["spec"]["chart"].as_str(), major) {
            (Some("traefik"), Some(25..=33)) => &self.traefik_25_33,
            (Some("traefik"), Some(34..=39)) => &self.traefik_34_39,
            (Some("traefik"), _) => return vec!["no values schema for this Traefik chart".into()],
            (Some("cert-manager"), _) => &self.cert_manager_values,
            _ => return vec![],
        };
        problems(validator, &values)
            .into_iter()
            .map(|e| format!("valuesContent: {e}"))
            .collect()
    }
}

/// The validator's errors for `value`, with where they are.
fn problems(validator: &Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every document of every manifest, for both version pairs, with the
/// example application as a workload.
fn rendered_documents() -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for pair in pairs() {
        for manifest in render(&pair, &[example_app()]).manifests {
            for doc in documents(&manifest.content) {
                all.push((format!("{}/{}", pair.name, manifest.file_name), doc));
            }
        }
    }
    all
}

#[test]
fn every_rendered_manifest_matches_its_schema() {
    let schemas = Schemas::load();
    let docs = rendered_documents();
    let mut kinds: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ClusterIssuer",
            "Deployment",
            "HelmChart",
            "Ingress",
            "Namespace",
            "Service"
        ]
    );
    for (file, doc) in &docs {
        let errors = schemas.check(doc);
        assert!(errors.is_empty(), "{file} ({}): {errors:#?}", doc["kind"]);
    }
}

/// The first rendered document (defaults pair) of `kind`, to break.
fn sample(kind: &str, chart: Option<&str>) -> Value {
    rendered_documents()
        .into_iter()
        .map(|(_, doc)| doc)
        .rev()
        .find(|d| d["kind"] == kind && chart.is_none_or(|c| d["spec"]["chart"] == c))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn broken_manifests_are_rejected() {
    let schemas = Schemas::load();
    let rejected = |what: &str, doc: Value| {
        let errors = schemas.check(&doc);
        assert!(!errors.is_empty(), "{what} was accepted: {doc:#}");
    };

    let mut issuer = sample("ClusterIssuer", None);
    issuer["spec"]["acme"]["profile"] = json!("tlsserver");
    rejected("an ACME profile (unknown to cert-manager 1.13)", issuer);
    let mut issuer = sample("ClusterIssuer", None);
    issuer["spec"]["acme"]["solvers"][0]["http01"]["ingress"]["class"] = json!("traefik");
    rejected("class next to ingressClassName", issuer);
    let mut issuer = sample("ClusterIssuer", None);
    issuer["spec"]["acme"]
        .as_object_mut()
        .unwrap()
        .remove("server");
    rejected("an issuer without server", issuer);

    let mut chart = sample("HelmChart", Some("traefik"));
    chart["spec"]["valuesContent"] = json!({"ports": {}});
    rejected("valuesContent as a mapping", chart);
    let mut chart = sample("HelmChart", Some("traefik"));
    chart["spec"]["valueContent"] = json!("x: 1");
    rejected("a misspelt field", chart);
    let mut chart = sample("HelmChart", Some("traefik"));
    chart["spec"]["valuesContent"] =
        json!("ports:\n  web:\n    redirectTo:\n      port: websecure\n");
    rejected("chart 39 with the 25-33 redirect", chart);
    let mut chart = sample("HelmChart", Some("traefik"));
    chart["spec"]["version"] = json!("25.0.0");
    chart["spec"]["valuesContent"] = json!("ports:\n  web:\n    redirectTo: websecure\n");
    rejected("chart 25 with the string redirect", chart);
    let mut chart = sample("HelmChart", Some("cert-manager"));
    chart["spec"]["valuesContent"] = json!("installCRDs: \"true\"\n");
    rejected("installCRDs as a string", chart);

    let mut namespace = sample("Namespace", None);
    namespace["spec"] = json!({"finalizers": "kubernetes"});
    rejected("finalizers as a string", namespace);
    let mut ingress = sample("Ingress", None);
    let path = &mut ingress["spec"]["rules"][0]["http"]["paths"][0];
    path.as_object_mut().unwrap().remove("pathType");
    rejected("an Ingress path without pathType", ingress);
    let mut deployment = sample("Deployment", None);
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = json!(80);
    rejected("a container with an unknown field", deployment);
    rejected(
        "an unknown kind",
        json!({"apiVersion": "v1", "kind": "Nonsense"}),
    );
}
