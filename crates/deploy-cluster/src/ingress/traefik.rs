//! Traefik from its Helm chart, in `kube-system`, with an HTTP to HTTPS
//! redirect that still lets cert-manager's HTTP-01 challenges through.
//!
//! The redirect's values changed twice (checked in the chart's templates
//! and release notes, `traefik/traefik-helm-chart`): up to 24 a string
//! `ports.web.redirectTo: websecure` with no priority; 25 to 33
//! `ports.web.redirectTo.{port,priority}` (PR #934); 34 to 39
//! `ports.web.redirections.entryPoint.{to,scheme,permanent,priority}`
//! (the 34 template fails on `redirectTo`); 40 moved entry-point settings
//! under `ports.<name>.http`, which this module does not write yet.

use super::helm::HelmChart;
use super::versions::ChartVersion;
use super::yaml::{map, s, Node};
use super::IngressError;

/// The Helm release (and HelmChart object) name. Not `traefik`: k3s's
/// own packaged add-on uses that name and `--disable traefik` removes it.
pub const RELEASE: &str = "ingress-traefik";

/// The IngressClass the chart creates, which the ClusterIssuers' HTTP-01
/// solver and applications name (`ingressClassName: traefik`).
pub const INGRESS_CLASS: &str = "traefik";

/// Priority of the entry-point redirect router. Traefik's default is
/// the highest possible, so the redirect would beat the solver Ingress
/// that cert-manager creates for `/.well-known/acme-challenge/…`; with a
/// low priority every Ingress router (priority = rule length) wins
/// (chart PR #934). Consequence: an Ingress attached to the `web` entry
/// point is served over plain HTTP, so applications attach to
/// `websecure` only (`traefik.ingress.kubernetes.io/router.entrypoints`).
pub const REDIRECT_PRIORITY: i64 = 10;

/// The chart repository.
pub const REPO: &str = "https://traefik.github.io/charts";

/// Which layout of the redirect values a chart version takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirect {
    /// Charts 25 to 33: `ports.web.redirectTo`.
    RedirectTo,
    /// Charts 34 to 39: `ports.web.redirections.entryPoint`.
    Redirections,
}

/// The redirect layout for `version` (`value` as the inventory gives it).
fn layout(version: ChartVersion, value: &str) -> Result<Redirect, IngressError> {
    match version.major {
        0..=24 => Err(IngressError::TraefikChartTooOld {
            value: value.to_string(),
        }),
        25..=33 => Ok(Redirect::RedirectTo),
        34..=39 => Ok(Redirect::Redirections),
        _ => Err(IngressError::TraefikChartTooNew {
            value: value.to_string(),
        }),
    }
}

/// The chart values for `layout`.
fn values(layout: Redirect) -> Node {
    let redirect = match layout {
        Redirect::RedirectTo => (
            "redirectTo",
            map([
                ("port", s("websecure")),
                ("priority", Node::Int(REDIRECT_PRIORITY)),
            ]),
        ),
        Redirect::Redirections => (
            "redirections",
            map([(
                "entryPoint",
                map([
                    ("to", s("websecure")),
                    ("scheme", s("https")),
                    ("permanent", Node::Bool(true)),
                    ("priority", Node::Int(REDIRECT_PRIORITY)),
                ]),
            )]),
        ),
    };
    map([
        (
            "ingressClass",
            map([
                ("enabled", Node::Bool(true)),
                ("isDefaultClass", Node::Bool(true)),
                ("name", s(INGRESS_CLASS)),
            ]),
        ),
        ("ports", map([("web", map([redirect]))])),
    ])
}

/// The Traefik HelmChart for chart `version` (as the inventory gives it).
pub(crate) fn helm_chart(version: &str) -> Result<Node, IngressError> {
    let parsed = ChartVersion::parse("traefikChart", version)?;
    let chart = HelmChart {
        name: RELEASE,
        repo: REPO,
        chart: "traefik",
        version,
        target_namespace: "kube-system",
        values: values(layout(parsed, version)?),
    };
    Ok(chart.to_node())
}
