//! The ingress stack as k3s auto-deploy manifests: Traefik, cert-manager
//! (with its CRDs) and the Let's Encrypt ClusterIssuers, rendered from the
//! inventory's cluster settings, plus the flake's workload manifests.
//!
//! This module owns what goes into k3s's manifests directory
//! ([`MANIFEST_DIR`]): it renders text, purely (no SSH, no files, no
//! output), and [`stage`] writes it on the servers. k3s's embedded helm-controller installs the charts from
//! the `HelmChart` objects, so no helm binary is needed, and k3s retries a
//! failed file every 15 s, so the ClusterIssuers apply once cert-manager's
//! CRDs and webhook are up.
//!
//! - [`traefik`]: the Traefik chart with an HTTP to HTTPS redirect that
//!   lets ACME HTTP-01 challenges through, values per chart version;
//! - [`cert_manager`]: namespace and chart, CRDs per chart version;
//! - [`issuers`]: `letsencrypt-prod` and `letsencrypt-staging`;
//! - [`versions`]: version parsing and cert-manager's Kubernetes support;
//! - workload manifests: name checks (see [`render`]).

use nix_deploy::inventory::ClusterSettings;

pub mod cert_manager;
mod error;
mod helm;
pub mod issuers;
pub mod stage;
pub mod traefik;
pub mod versions;
mod workloads;
mod yaml;

pub use error::{IngressError, IngressWarning};
pub use versions::{ChartVersion, KubeVersion};

/// k3s's auto-deploy directory on server nodes.
pub const MANIFEST_DIR: &str = "/var/lib/rancher/k3s/server/manifests";

/// Prefix of our own manifests' file names; workload manifests may not
/// use it, so the two never collide.
pub const FILE_PREFIX: &str = "nix-deploy-";

/// One file for [`MANIFEST_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The file name, without directory (e.g. `nix-deploy-traefik.yaml`;
    /// never `traefik.yaml`, which k3s deletes under `--disable traefik`).
    pub file_name: String,
    /// The file's content (YAML, or JSON for `.json` workloads).
    pub content: String,
}

/// The rendered stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressStack {
    /// Our manifests, then the workloads in the order given. They go to
    /// [`MANIFEST_DIR`] on every server: with `cluster.k3s.ha`, on each
    /// one, since k3s does not sync that directory between servers.
    pub manifests: Vec<Manifest>,
    /// What the operator should hear about; the library never prints.
    pub warnings: Vec<IngressWarning>,
}

/// The first lines of each of our files.
const HEADER: &str = "# Written by nix-deploy from the flake's deploy.cluster settings;\n# the next deploy overwrites changes made here.\n";

/// Renders the stack for `cluster` on a cluster running Kubernetes
/// `kubernetes` (e.g. `KubeVersion::parse("v1.35.6+k3s1")`), followed by
/// the `workloads` from the flake, whose names must be plain file names
/// ending in `.yaml`, `.yml` or `.json`, must not start with
/// [`FILE_PREFIX`] or reuse a k3s packaged component's name, and whose
/// part before the first dot (k3s's AddOn name) must be unique and a
/// lowercase RFC 1123 label.
pub fn render(
    cluster: &ClusterSettings,
    kubernetes: KubeVersion,
    workloads: &[Manifest],
) -> Result<IngressStack, IngressError> {
    let mut warnings = Vec::new();
    warnings.extend(issuers::check_email(&cluster.acme_email)?);
    let traefik = traefik::helm_chart(&cluster.ingress.traefik_chart)?;
    let (cert_manager, warning) = cert_manager::render(&cluster.ingress.cert_manager, kubernetes)?;
    warnings.extend(warning);
    workloads::check(workloads)?;

    let ours = [
        ("traefik", vec![traefik]),
        ("cert-manager", cert_manager),
        (
            "cluster-issuers",
            issuers::cluster_issuers(&cluster.acme_email),
        ),
    ];
    let mut manifests: Vec<Manifest> = ours
        .into_iter()
        .map(|(name, docs)| Manifest {
            file_name: format!("{FILE_PREFIX}{name}.yaml"),
            content: yaml::documents(HEADER, &docs),
        })
        .collect();
    manifests.extend_from_slice(workloads);
    Ok(IngressStack {
        manifests,
        warnings,
    })
}
