//! The Let's Encrypt ClusterIssuers `letsencrypt-prod` and
//! `letsencrypt-staging`, solving HTTP-01 challenges through Traefik.
//!
//! Fields as in cert-manager v1.13.3's `ACMEIssuer` (also present in
//! every later release); deliberately no `profile`, which newer
//! examples add but the 1.13 CRDs do not know.

use super::traefik::INGRESS_CLASS;
use super::yaml::{map, s, Node};
use super::{IngressError, IngressWarning};

/// Issuer name and ACME directory, production first.
pub const ISSUERS: [(&str, &str); 2] = [
    (
        "letsencrypt-prod",
        "https://acme-v02.api.letsencrypt.org/directory",
    ),
    (
        "letsencrypt-staging",
        "https://acme-staging-v02.api.letsencrypt.org/directory",
    ),
];

/// Domains reserved for documentation (RFC 2606), which Let's Encrypt
/// refuses as contact addresses.
const EXAMPLE_DOMAINS: &[&str] = &["example.com", "example.org", "example.net", "example"];

/// Checks `cluster.acmeEmail`; a reserved example domain only warns.
pub(crate) fn check_email(email: &str) -> Result<Option<IngressWarning>, IngressError> {
    let invalid = |reason| IngressError::InvalidAcmeEmail {
        value: email.to_string(),
        reason,
    };
    if email.trim().is_empty() {
        return Err(IngressError::MissingAcmeEmail);
    }
    if email.len() > 254 {
        return Err(invalid("longer than 254 characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains white space or control characters"));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err(invalid("no @"));
    };
    if local.is_empty() || domain.contains('@') {
        return Err(invalid("it needs exactly one @ with a name before it"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return Err(invalid("the domain needs a dot and no empty parts"));
    }
    let domain = domain.to_ascii_lowercase();
    let placeholder = EXAMPLE_DOMAINS
        .iter()
        .any(|d| domain == *d || domain.ends_with(&format!(".{d}")));
    Ok(placeholder.then(|| IngressWarning::PlaceholderAcmeEmail {
        email: email.to_string(),
    }))
}

/// One ClusterIssuer.
fn issuer(name: &str, server: &str, email: &str) -> Node {
    let solver = map([(
        "http01",
        map([("ingress", map([("ingressClassName", s(INGRESS_CLASS))]))]),
    )]);
    map([
        ("apiVersion", s("cert-manager.io/v1")),
        ("kind", s("ClusterIssuer")),
        ("metadata", map([("name", s(name))])),
        (
            "spec",
            map([(
                "acme",
                map([
                    ("server", s(server)),
                    ("email", s(email)),
                    ("privateKeySecretRef", map([("name", s(name))])),
                    ("solvers", Node::Seq(vec![solver])),
                ]),
            )]),
        ),
    ])
}

/// Both ClusterIssuers for `email` (already checked).
pub(crate) fn cluster_issuers(email: &str) -> Vec<Node> {
    ISSUERS
        .iter()
        .map(|(name, server)| issuer(name, server, email))
        .collect()
}
