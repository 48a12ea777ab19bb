//! k3s's `HelmChart` resource (`helm.cattle.io/v1`), which the embedded
//! helm-controller installs with a Helm job: no helm binary needed.

use super::yaml::{map, s, Node};

/// Where k3s's HelmChart objects live by convention.
pub(crate) const HELM_CHART_NAMESPACE: &str = "kube-system";

/// A chart from a repository, installed into `target_namespace` with the
/// given values (rendered to `spec.valuesContent`).
pub(crate) struct HelmChart<'a> {
    /// The object's name, which is also the Helm release name.
    pub name: &'a str,
    /// The chart repository URL (`--repo`).
    pub repo: &'a str,
    /// The chart's name in the repository.
    pub chart: &'a str,
    /// The chart version, as the inventory gives it (`--version`).
    pub version: &'a str,
    /// The namespace the release goes to (`--namespace`).
    pub target_namespace: &'a str,
    /// The chart values.
    pub values: Node,
}

impl HelmChart<'_> {
    /// The object as a YAML node.
    pub(crate) fn to_node(&self) -> Node {
        map([
            ("apiVersion", s("helm.cattle.io/v1")),
            ("kind", s("HelmChart")),
            (
                "metadata",
                map([
                    ("name", s(self.name)),
                    ("namespace", s(HELM_CHART_NAMESPACE)),
                ]),
            ),
            (
                "spec",
                map([
                    ("repo", s(self.repo)),
                    ("chart", s(self.chart)),
                    ("version", s(self.version)),
                    ("targetNamespace", s(self.target_namespace)),
                    ("valuesContent", s(super::yaml::document(&self.values))),
                ]),
            ),
        ])
    }
}
