//! What can stop the ingress stack from rendering, and what it warns about.

use std::fmt;

use super::versions::KubeVersion;

/// Why the ingress manifests could not be rendered; each names the
/// inventory field (or manifest) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// `cluster.acmeEmail` is empty.
    #[error("cluster.acmeEmail is missing: set it to the address Let's Encrypt should write to about expiring certificates")]
    MissingAcmeEmail,
    /// `cluster.acmeEmail` is not an address Let's Encrypt would accept.
    #[error("cluster.acmeEmail = {value:?} is not a valid address ({reason}): set it to e.g. \"ops@your-domain.org\"")]
    InvalidAcmeEmail {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A chart version is not `[v]MAJOR.MINOR.PATCH`.
    #[error("cluster.ingress.{field} = {value:?} is not a chart version: write it as MAJOR.MINOR.PATCH, e.g. \"39.0.5\" or \"v1.20.0\"")]
    ChartVersion {
        /// The field, as spelled in the inventory (`traefikChart`, `certManager`).
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// The Traefik chart predates the redirect syntax that lets ACME
    /// HTTP-01 challenges through.
    #[error("cluster.ingress.traefikChart = {value:?} is older than 25.0.0, whose `ports.web.redirectTo.priority` lets cert-manager's HTTP-01 challenges past the HTTPS redirect: use 25.0.0 or newer")]
    TraefikChartTooOld {
        /// The value given.
        value: String,
    },
    /// The Traefik chart is newer than the value layouts this tool knows.
    #[error("cluster.ingress.traefikChart = {value:?} is newer than the charts whose values nix-deploy knows (25 to 39; chart 40 moved the entry-point settings under `ports.<name>.http`): use a 39.x chart, or teach deploy_cluster::ingress::traefik the new layout")]
    TraefikChartTooNew {
        /// The value given.
        value: String,
    },
    /// cert-manager before 1.0 has no `cert-manager.io/v1` API.
    #[error("cluster.ingress.certManager = {value:?} predates cert-manager 1.0 and its cert-manager.io/v1 ClusterIssuer: use a supported release (see https://cert-manager.io/docs/releases/)")]
    CertManagerTooOld {
        /// The value given.
        value: String,
    },
    /// The cluster's Kubernetes version could not be read.
    #[error("cannot read a Kubernetes version from {0:?}: expected e.g. \"1.35\" or the k3s version \"v1.35.6+k3s1\"")]
    KubernetesVersion(String),
    /// A workload manifest's name is not allowed.
    #[error("workload manifest {name:?}: {reason}")]
    WorkloadName {
        /// The name given.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A workload manifest has no content.
    #[error("workload manifest {name:?} is empty: give it at least one Kubernetes object")]
    EmptyWorkload {
        /// The name given.
        name: String,
    },
}

/// Something worth telling the operator that does not stop the render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressWarning {
    /// The chosen cert-manager does not support the cluster's Kubernetes.
    CertManagerUnsupportedKubernetes {
        /// `cluster.ingress.certManager` as given.
        cert_manager: String,
        /// The cluster's Kubernetes version.
        kubernetes: KubeVersion,
        /// The supported minors, `1.min` to `1.max`.
        supported: (u64, u64),
    },
    /// Our table does not know the chosen cert-manager line.
    CertManagerSupportUnknown {
        /// `cluster.ingress.certManager` as given.
        cert_manager: String,
        /// The cluster's Kubernetes version.
        kubernetes: KubeVersion,
    },
    /// The ACME email is on a reserved example domain, which Let's Encrypt
    /// refuses when registering the account.
    PlaceholderAcmeEmail {
        /// The address.
        email: String,
    },
}

impl fmt::Display for IngressWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IngressWarning::CertManagerUnsupportedKubernetes {
                cert_manager,
                kubernetes,
                supported: (min, max),
            } => write!(
                f,
                "cert-manager {cert_manager} supports Kubernetes 1.{min} to 1.{max}, not the cluster's {kubernetes}: pick a cert-manager line that does (cluster.ingress.certManager; https://cert-manager.io/docs/releases/)"
            ),
            IngressWarning::CertManagerSupportUnknown {
                cert_manager,
                kubernetes,
            } => write!(
                f,
                "cannot tell whether cert-manager {cert_manager} supports Kubernetes {kubernetes} (its line is not in nix-deploy's table): check https://cert-manager.io/docs/releases/"
            ),
            IngressWarning::PlaceholderAcmeEmail { email } => write!(
                f,
                "cluster.acmeEmail = {email:?} is on an example domain, which Let's Encrypt refuses: set a real address before relying on letsencrypt-prod"
            ),
        }
    }
}
