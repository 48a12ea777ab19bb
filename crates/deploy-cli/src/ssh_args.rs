//! The SSH flags every command that reaches nodes shares.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use deploy_ssh::{Agent, ConfigFile, SshOptions};

/// How to reach nodes over SSH (defaults follow OpenSSH's).
#[derive(Args, Debug, Clone)]
pub struct SshArgs {
    /// ssh_config file to read instead of ~/.ssh/config ("none" for none).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Private key file to try (repeatable), after ssh-agent and ssh_config's.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// known_hosts file to use instead of ~/.ssh/known_hosts (repeatable).
    #[arg(long = "known-hosts", value_name = "FILE")]
    pub known_hosts: Vec<PathBuf>,
    /// Accept and record the host key of a node not yet in known_hosts. A
    /// changed host key is always refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Do not use ssh-agent.
    #[arg(long)]
    pub no_agent: bool,
    /// Seconds to wait for a node's SSH connection and login.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout: u64,
}

impl SshArgs {
    /// The transport options these flags describe.
    pub fn options(&self) -> SshOptions {
        let config_file = match &self.ssh_config {
            None => ConfigFile::Default,
            Some(p) if p.as_os_str() == "none" => ConfigFile::None,
            Some(p) => ConfigFile::Path(p.clone()),
        };
        let defaults = SshOptions::default();
        SshOptions {
            config_file,
            identity_files: self.identities.clone(),
            known_hosts_files: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            agent: if self.no_agent {
                Agent::Disabled
            } else {
                defaults.agent.clone()
            },
            connect_timeout: Duration::from_secs(self.connect_timeout),
            ..defaults
        }
    }
}
