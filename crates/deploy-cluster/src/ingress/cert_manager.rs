//! cert-manager from the Jetstack chart, in its own namespace, with its
//! CRDs installed by the chart; and the check of its Kubernetes support.

use super::helm::HelmChart;
use super::versions::{cert_manager_support, ChartVersion, KubeVersion};
use super::yaml::{map, s, Node};
use super::{IngressError, IngressWarning};

/// The namespace (and Helm release name).
pub const NAMESPACE: &str = "cert-manager";

/// The chart repository.
pub const REPO: &str = "https://charts.jetstack.io";

/// The first release whose chart has `crds.enabled` (and `crds.keep`),
/// replacing `installCRDs`: cert-manager 1.15, "Add new `crds.keep` and
/// `crds.enabled` Helm options which will replace the `installCRDs`
/// option" (PR #6760), per the 1.15 release notes
/// (`cert-manager/website`
/// `content/docs/releases/release-notes/release-notes-1.15.md`).
const CRDS_ENABLED_SINCE: (u64, u64) = (1, 15);

/// The chart values that install the CRDs with the chart. From 1.15 the
/// chart keeps them on uninstall (`crds.keep`), so removing the release
/// does not delete every Certificate; before, `installCRDs` did delete
/// them on uninstall.
fn values(version: ChartVersion) -> Node {
    if (version.major, version.minor) >= CRDS_ENABLED_SINCE {
        map([(
            "crds",
            map([("enabled", Node::Bool(true)), ("keep", Node::Bool(true))]),
        )])
    } else {
        map([("installCRDs", Node::Bool(true))])
    }
}

/// The Namespace and the HelmChart for cert-manager `version` (as the
/// inventory gives it), and the warning if it does not support
/// `kubernetes`.
pub(crate) fn render(
    version: &str,
    kubernetes: KubeVersion,
) -> Result<(Vec<Node>, Option<IngressWarning>), IngressError> {
    let parsed = ChartVersion::parse("certManager", version)?;
    if parsed.major < 1 {
        return Err(IngressError::CertManagerTooOld {
            value: version.to_string(),
        });
    }
    let namespace = map([
        ("apiVersion", s("v1")),
        ("kind", s("Namespace")),
        ("metadata", map([("name", s(NAMESPACE))])),
    ]);
    let chart = HelmChart {
        name: NAMESPACE,
        repo: REPO,
        chart: "cert-manager",
        version,
        target_namespace: NAMESPACE,
        values: values(parsed),
    };
    Ok((
        vec![namespace, chart.to_node()],
        support_warning(version, parsed, kubernetes),
    ))
}

/// A warning unless cert-manager `parsed` is known to support `kubernetes`.
fn support_warning(
    version: &str,
    parsed: ChartVersion,
    kubernetes: KubeVersion,
) -> Option<IngressWarning> {
    let cert_manager = version.to_string();
    match cert_manager_support(parsed) {
        None => Some(IngressWarning::CertManagerSupportUnknown {
            cert_manager,
            kubernetes,
        }),
        Some((min, max))
            if kubernetes.major != 1 || kubernetes.minor < min || kubernetes.minor > max =>
        {
            Some(IngressWarning::CertManagerUnsupportedKubernetes {
                cert_manager,
                kubernetes,
                supported: (min, max),
            })
        }
        Some(_) => None,
    }
}
