//! Checking one node of the inventory (`deploy.nodes.<name>`), field by
//! field, so that every problem names the node and the field.

use std::collections::BTreeMap;

use nix_wire::StorePath;
use serde_json::Value;

use super::validate;
use super::{InventoryError, NodeConfig, NodeK3s, NodeNix, Role};
use crate::install::InstallMethod;
use crate::nix_cli::NixCli;

/// Where profiles live on nodes unless the inventory says otherwise.
pub const DEFAULT_PROFILE_PATH: &str = "/nix/var/nix/profiles/nix-deploy";

/// One node's JSON object, with the node's name for errors.
struct Fields<'a> {
    node: &'a str,
    map: &'a serde_json::Map<String, Value>,
}

impl Fields<'_> {
    /// The error for `field`.
    fn error(&self, field: &'static str, problem: String) -> InventoryError {
        InventoryError::Field {
            node: self.node.to_string(),
            field,
            problem,
        }
    }

    /// A string field; `None` if absent or null.
    fn string(&self, field: &'static str) -> Result<Option<String>, InventoryError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(field, format!("must be a string, not {other}"))),
        }
    }

    /// A string field that must be there and not blank.
    fn required(&self, field: &'static str, hint: &str) -> Result<String, InventoryError> {
        match self.string(field)? {
            None => Err(self.error(field, format!("is missing: {hint}"))),
            Some(s) if s.trim().is_empty() => Err(self.error(field, format!("is empty: {hint}"))),
            Some(s) => Ok(s),
        }
    }
}

/// Checks the node `name` given as `value`; `nix` names the flake for the
/// profile's installable.
pub(super) fn check_node(
    nix: &NixCli,
    name: &str,
    value: &Value,
) -> Result<NodeConfig, InventoryError> {
    let Some(map) = value.as_object() else {
        return Err(InventoryError::Malformed {
            part: format!("nodes.{name}"),
            reason: format!("must be an attribute set, not {value}"),
        });
    };
    let f = Fields { node: name, map };
    validate::node_name(name).map_err(|p| f.error("name", p))?;

    let hostname = f.required("hostname", "set the node's address")?;
    validate::hostname(&hostname).map_err(|p| f.error("hostname", p))?;
    let peer_address = f.string("peerAddress")?;
    if let Some(a) = &peer_address {
        validate::hostname(a).map_err(|p| f.error("peerAddress", p))?;
    }
    let role = match f.string("role")?.as_deref() {
        Some("server") => Role::Server,
        Some("agent") => Role::Agent,
        other => {
            let got = other.map_or("is missing".to_string(), |r| format!("{r:?} is unknown"));
            let allowed = Role::ALLOWED.join("\", \"");
            return Err(f.error("role", format!("{got}: use one of \"{allowed}\"")));
        }
    };
    let port = |field: &'static str| match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| f.error(field, format!("{v} is not a port (1 to 65535)"))),
    };
    let ssh_port = port("sshPort")?.unwrap_or(22);
    let peer_port = port("peerPort")?;
    let ssh_user = f.string("sshUser")?.unwrap_or_else(|| "root".into());
    validate::ssh_user(&ssh_user).map_err(|p| f.error("sshUser", p))?;
    let system = f.string("system")?.unwrap_or_else(|| "x86_64-linux".into());
    let profile = f.required("profile", "give the host's package")?;
    let profile = StorePath::parse(&profile)
        .map_err(|e| f.error("profile", format!("is not a package: {e}")))?;
    let profile_path = f
        .string("profilePath")?
        .unwrap_or_else(|| DEFAULT_PROFILE_PATH.into());
    if !profile_path.starts_with('/') {
        return Err(f.error(
            "profilePath",
            format!("{profile_path:?} is not an absolute path"),
        ));
    }
    let k3s: NodeK3s = match map.get("k3s") {
        None | Some(Value::Null) => NodeK3s::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| f.error("k3s", format!("is not {{ extraFlags = [ \"…\" ]; }}: {e}")))?,
    };
    let nix_settings = check_nix(nix, &f, name)?;
    Ok(NodeConfig {
        name: name.to_string(),
        hostname,
        peer_address,
        peer_port,
        ssh_user,
        ssh_port,
        role,
        system,
        profile,
        profile_installable: nix.installable(&format!("deploy.nodes.{}.profile", attr_name(name))),
        profile_path,
        k3s,
        nix: nix_settings,
    })
}

/// Checks the node's `nix` settings (`{ install = "closure"; package = …; }`).
fn check_nix(nix: &NixCli, f: &Fields<'_>, name: &str) -> Result<NodeNix, InventoryError> {
    let empty = serde_json::Map::new();
    let map = match f.map.get("nix") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(f.error(
                "nix",
                format!("must be {{ install = \"closure\"; package = …; }}, not {other}"),
            ))
        }
    };
    let install = match map.get("install") {
        None | Some(Value::Null) => InstallMethod::default(),
        Some(v) => v.as_str().and_then(InstallMethod::parse).ok_or_else(|| {
            let allowed = InstallMethod::ALLOWED.join("\", \"");
            f.error(
                "nix.install",
                format!("{v} is unknown: use one of \"{allowed}\""),
            )
        })?,
    };
    let package = match map.get("package") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(
            StorePath::parse(p)
                .map_err(|e| f.error("nix.package", format!("is not a package: {e}")))?,
        ),
        Some(other) => {
            return Err(f.error("nix.package", format!("must be a package, not {other}")))
        }
    };
    let settings = match map.get("settings") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => validate::nix_setting(k, s)
                    .map(|()| (k.clone(), s.to_owned()))
                    .map_err(|p| f.error("nix.settings", p)),
                None => Err(f.error(
                    "nix.settings",
                    format!("{k} = {v}: a setting's value must be a string"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(f.error(
                "nix.settings",
                format!("must be an attribute set, not {other}"),
            ))
        }
    };
    Ok(NodeNix {
        install,
        package,
        settings,
        package_installable: nix
            .installable(&format!("deploy.nodes.{}.nix.package", attr_name(name))),
    })
}

/// A node name as one element of a Nix attribute path (quoted if needed).
fn attr_name(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '\'')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::attr_name;

    #[test]
    fn node_names_become_attribute_path_elements() {
        assert_eq!(attr_name("k8s-cluster-main"), "k8s-cluster-main");
        assert_eq!(attr_name("node.example"), "\"node.example\"");
        assert_eq!(attr_name("1st"), "\"1st\"");
    }
}
