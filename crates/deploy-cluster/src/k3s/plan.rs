//! What the k3s stage does on one node, as data: the install script's
//! environment and arguments for the node's role, the files written, the
//! waits. The stage runs exactly these commands; `--dry-run` prints them.

use sha2::{Digest, Sha256};

use deploy_remote::quote;
use nix_deploy::inventory::Role;

/// The k3s server's join token (k3s writes it on first start).
pub const SERVER_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
/// Where a joining node keeps the token (mode 0600), named to the install
/// script by `K3S_TOKEN_FILE`, so the token is in no argv and no unit.
pub const TOKEN_FILE: &str = "/etc/rancher/k3s/nix-deploy-token";
/// What the last successful install on the node was made from.
pub const STATE_FILE: &str = "/var/lib/nix-deploy/k3s-install";
/// The supervisor and Kubernetes API port.
pub const API_PORT: u16 = 6443;

/// One k3s node, as the stage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sNode {
    /// The inventory name; also the Kubernetes node name (`--node-name`).
    pub name: String,
    /// Server or agent.
    pub role: Role,
    /// Addresses the server's certificate must hold (`--tls-san`): the
    /// inventory hostname and the SSH host, without duplicates.
    pub addresses: Vec<String>,
    /// The profile on the node, whose `bin/k3s` and
    /// `share/k3s/install.sh` are used.
    pub profile_path: String,
    /// Extra flags from the inventory.
    pub extra_flags: Vec<String>,
}

/// How one node's k3s gets installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The node.
    pub node: String,
    /// Server or agent.
    pub role: Role,
    /// The systemd unit the script writes (`k3s` or `k3s-agent`).
    pub service: &'static str,
    /// The profile path on the node.
    pub profile_path: String,
    /// Environment of the install script (no secret: the token is a file).
    pub env: Vec<(String, String)>,
    /// Arguments of the install script (`server|agent`, then flags).
    pub args: Vec<String>,
    /// The server URL this node joins, if it joins one.
    pub join: Option<String>,
}

impl InstallPlan {
    /// The plan for `node`; `join` is the URL of the server it joins
    /// (agents, and servers after the first in an HA cluster), and
    /// `cluster_init` starts an HA cluster's embedded etcd.
    pub fn new(node: &K3sNode, join: Option<&str>, cluster_init: bool) -> Self {
        let bin = format!("{}/bin", node.profile_path);
        let mut env = vec![
            ("INSTALL_K3S_SKIP_DOWNLOAD".to_owned(), "true".to_owned()),
            ("INSTALL_K3S_BIN_DIR".to_owned(), bin.clone()),
            (
                "INSTALL_K3S_BIN_DIR_READ_ONLY".to_owned(),
                "true".to_owned(),
            ),
            // The stage restarts the unit itself, and only on change.
            ("INSTALL_K3S_SKIP_START".to_owned(), "true".to_owned()),
        ];
        if let Some(url) = join {
            env.push(("K3S_URL".to_owned(), url.to_owned()));
            env.push(("K3S_TOKEN_FILE".to_owned(), TOKEN_FILE.to_owned()));
        }
        let mut args = vec![
            node.role.as_str().to_owned(),
            "--node-name".to_owned(),
            node.name.clone(),
        ];
        if node.role == Role::Server {
            // Traefik comes from our own HelmChart (the ingress stage).
            args.extend(["--disable".to_owned(), "traefik".to_owned()]);
            for a in &node.addresses {
                args.extend(["--tls-san".to_owned(), a.clone()]);
            }
            if cluster_init {
                args.push("--cluster-init".to_owned());
            }
        }
        args.extend(node.extra_flags.iter().cloned());
        InstallPlan {
            node: node.name.clone(),
            role: node.role,
            service: match node.role {
                Role::Server => "k3s",
                Role::Agent => "k3s-agent",
            },
            profile_path: node.profile_path.clone(),
            env,
            args,
            join: join.map(str::to_owned),
        }
    }

    /// The install script in the profile.
    pub fn script(&self) -> String {
        format!("{}/share/k3s/install.sh", self.profile_path)
    }

    /// `PATH=…` putting the profile's `bin` first, as a shell prefix.
    pub fn path_prefix(&self) -> String {
        format!(
            "PATH={}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            quote(&self.profile_path)
        )
    }

    /// The shell command running the install script with a clean
    /// environment (nothing of the SSH session's leaks into the unit).
    pub fn install_command(&self) -> String {
        let mut cmd = format!("env -i {}", self.path_prefix());
        for (k, v) in &self.env {
            cmd += &format!(" {k}={}", quote(v));
        }
        cmd += &format!(" sh {}", quote(&self.script()));
        for a in &self.args {
            cmd += &format!(" {}", quote(a));
        }
        cmd
    }

    /// `kubectl` of the profile's k3s, as a shell word sequence.
    pub fn kubectl(&self) -> String {
        format!("{}/bin/k3s kubectl", quote(&self.profile_path))
    }

    /// What the installed state is made from: the plan and the store paths
    /// of the k3s binary and the script. Equal fingerprints mean a rerun
    /// would install and restart nothing.
    pub fn fingerprint(&self, k3s_binary: &str, script: &str) -> String {
        let mut h = Sha256::new();
        for part in [k3s_binary, script, self.service] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (k, v) in &self.env {
            h.update(format!("{k}={v}").as_bytes());
            h.update([0]);
        }
        for a in &self.args {
            h.update(a.as_bytes());
            h.update([0]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: Role) -> K3sNode {
        K3sNode {
            name: "n1".into(),
            role,
            addresses: vec!["203.0.113.10".into()],
            profile_path: "/nix/var/nix/profiles/nix-deploy".into(),
            extra_flags: vec!["--node-label".into(), "tier=web".into()],
        }
    }

    #[test]
    fn a_server_disables_traefik_and_names_its_address() {
        let p = InstallPlan::new(&node(Role::Server), None, false);
        assert_eq!(p.service, "k3s");
        assert_eq!(
            p.args.join(" "),
            "server --node-name n1 --disable traefik --tls-san 203.0.113.10 --node-label tier=web"
        );
        assert!(p.env.iter().all(|(k, _)| !k.starts_with("K3S_")));
    }

    #[test]
    fn an_agent_joins_with_a_token_file_and_no_token() {
        let p = InstallPlan::new(&node(Role::Agent), Some("https://10.0.0.1:6443"), false);
        assert_eq!(p.service, "k3s-agent");
        assert_eq!(
            p.args.join(" "),
            "agent --node-name n1 --node-label tier=web"
        );
        let cmd = p.install_command();
        assert!(cmd.starts_with("env -i PATH=/nix/var/nix/profiles/nix-deploy/bin:"));
        assert!(cmd.contains(
            " K3S_URL=https://10.0.0.1:6443 K3S_TOKEN_FILE=/etc/rancher/k3s/nix-deploy-token "
        ));
        assert!(cmd.contains(" sh /nix/var/nix/profiles/nix-deploy/share/k3s/install.sh agent "));
    }

    #[test]
    fn the_fingerprint_follows_binary_and_flags() {
        let a = InstallPlan::new(&node(Role::Server), None, false);
        let mut b = node(Role::Server);
        b.extra_flags.push("--debug".into());
        let b = InstallPlan::new(&b, None, false);
        assert_eq!(a.fingerprint("/k", "/s"), a.fingerprint("/k", "/s"));
        assert_ne!(a.fingerprint("/k", "/s"), a.fingerprint("/k2", "/s"));
        assert_ne!(a.fingerprint("/k", "/s"), b.fingerprint("/k", "/s"));
    }
}
