//! Renders path infos as `nix path-info --json` does (Nix 2.8's layout: an
//! array sorted by path, SRI narHash, optional fields left out when empty,
//! `{"path": …, "valid": false}` for paths that are not in the store).

use nix_wire::daemon::PathInfo;
use nix_wire::StorePath;
use serde::Serialize;

/// One element of the output array.
#[derive(Serialize)]
#[serde(untagged)]
pub enum PathInfoJson {
    /// A valid path, fields in the order Nix writes them.
    #[serde(rename_all = "camelCase")]
    Valid {
        path: String,
        nar_hash: String,
        nar_size: u64,
        references: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        deriver: Option<String>,
        #[serde(skip_serializing_if = "is_zero")]
        registration_time: i64,
        #[serde(skip_serializing_if = "is_false")]
        ultimate: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        signatures: Vec<String>,
    },
    /// A path that is not valid in the store.
    Invalid { path: String, valid: bool },
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl PathInfoJson {
    /// The JSON element for `path`, given what the daemon knows of it.
    pub fn new(path: &StorePath, info: Option<&PathInfo>) -> Self {
        match info {
            None => Self::Invalid {
                path: path.to_string(),
                valid: false,
            },
            Some(info) => Self::Valid {
                path: info.path.to_string(),
                nar_hash: info.nar_hash.to_sri(),
                nar_size: info.nar_size,
                references: info.references.iter().map(ToString::to_string).collect(),
                ca: info.ca.clone(),
                deriver: info.deriver.as_ref().map(ToString::to_string),
                registration_time: info.registration_time,
                ultimate: info.ultimate,
                signatures: info.signatures.iter().cloned().collect(),
            },
        }
    }
}
