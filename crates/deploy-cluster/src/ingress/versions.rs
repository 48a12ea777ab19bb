//! Version numbers: chart versions from the inventory, the cluster's
//! Kubernetes minor, and cert-manager's published Kubernetes support.

use std::fmt;

use super::IngressError;

/// A chart version's numeric core (`25.0.0`, `v1.13.3`; any pre-release
/// or build suffix after `-` or `+` is ignored for comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChartVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl ChartVersion {
    /// Parses `[v]MAJOR.MINOR.PATCH[-pre][+build]`; `field` names the
    /// inventory field for the error.
    pub fn parse(field: &'static str, text: &str) -> Result<ChartVersion, IngressError> {
        let bad = || IngressError::ChartVersion {
            field,
            value: text.to_string(),
        };
        let core = text.strip_prefix('v').unwrap_or(text);
        let core = core.split(['-', '+']).next().unwrap_or("");
        let parts: Vec<u64> = core
            .split('.')
            .map(|p| number(p).ok_or_else(bad))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [major, minor, patch] => Ok(ChartVersion {
                major,
                minor,
                patch,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ChartVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A decimal number without sign or leading `+` (what `u64::from_str`
/// would also accept).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A Kubernetes `MAJOR.MINOR`, e.g. from the k3s version `v1.35.6+k3s1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u64,
    /// Minor version, e.g. 35.
    pub minor: u64,
}

impl KubeVersion {
    /// Parses `1.35`, `1.35.6`, `v1.35.6+k3s1` or `1.35.6-rc1+k3s1`.
    pub fn parse(text: &str) -> Result<KubeVersion, IngressError> {
        let bad = || IngressError::KubernetesVersion(text.to_string());
        let core = text.strip_prefix('v').unwrap_or(text);
        let core = core.split(['-', '+']).next().unwrap_or("");
        let mut parts = core.split('.');
        let major = parts.next().and_then(number).ok_or_else(bad)?;
        let minor = parts.next().and_then(number).ok_or_else(bad)?;
        match (parts.next().map(number), parts.next()) {
            (None | Some(Some(_)), None) => Ok(KubeVersion { major, minor }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A release line, `(major, minor)`, e.g. `(1, 20)`.
pub type Line = (u64, u64);

/// Kubernetes minors `1.min` to `1.max`, inclusive.
pub type MinorRange = (u64, u64);

/// Kubernetes minors (inclusive range, all `1.x`) each cert-manager
/// release line supports.
///
/// Source: the cert-manager website's "Supported Releases" page
/// (`cert-manager/website` `content/docs/releases/README.md`): the
/// "Old cert-manager releases" table for 1.0 to 1.17 (revision of
/// 2025), and its PR #2007 (Mar 10 2026) for 1.18 (1.29–1.33),
/// 1.19 (1.31–1.35) and 1.20 (1.32–1.35). A line missing here gives
/// [`super::IngressWarning::CertManagerSupportUnknown`].
pub const CERT_MANAGER_SUPPORT: &[(Line, MinorRange)] = &[
    ((1, 0), (11, 21)),
    ((1, 1), (11, 21)),
    ((1, 2), (16, 21)),
    ((1, 3), (16, 21)),
    ((1, 4), (16, 21)),
    ((1, 5), (16, 22)),
    ((1, 6), (17, 22)),
    ((1, 7), (18, 23)),
    ((1, 8), (19, 24)),
    ((1, 9), (20, 24)),
    ((1, 10), (20, 26)),
    ((1, 11), (21, 27)),
    ((1, 12), (22, 32)),
    ((1, 13), (21, 27)),
    ((1, 14), (24, 31)),
    ((1, 15), (25, 32)),
    ((1, 16), (25, 32)),
    ((1, 17), (29, 32)),
    ((1, 18), (29, 33)),
    ((1, 19), (31, 35)),
    ((1, 20), (32, 35)),
];

/// The Kubernetes minors (`1.min` to `1.max`) a cert-manager version's
/// line supports, if the table knows the line.
pub fn cert_manager_support(version: ChartVersion) -> Option<MinorRange> {
    CERT_MANAGER_SUPPORT
        .iter()
        .find(|(line, _)| *line == (version.major, version.minor))
        .map(|(_, range)| *range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_versions() {
        let v = ChartVersion::parse("f", "v1.13.3").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 13, 3));
        assert!(ChartVersion::parse("f", "25.0.0-rc.1+meta").is_ok());
        for bad in [
            "", "25", "25.0", "25.0.0.1", "x.1.2", "1.-2.3", "+1.2.3", "1..3",
        ] {
            assert!(ChartVersion::parse("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kube_versions() {
        for text in ["1.35", "1.35.6", "v1.35.6+k3s1", "1.35.6-rc1+k3s1"] {
            let v = KubeVersion::parse(text).unwrap();
            assert_eq!((v.major, v.minor), (1, 35), "{text}");
        }
        for bad in ["", "1", "1.x", "1.35.x", "1.35.6.7", "k3s"] {
            assert!(KubeVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn support_table_matches_the_reference() {
        let v = |s| ChartVersion::parse("f", s).unwrap();
        assert_eq!(cert_manager_support(v("v1.13.3")), Some((21, 27)));
        assert_eq!(cert_manager_support(v("v1.20.0")), Some((32, 35)));
        assert_eq!(cert_manager_support(v("v1.99.0")), None);
    }
}
