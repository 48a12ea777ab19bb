//! Test helpers: throwaway OpenSSH sshd instances on 127.0.0.1 (run as
//! root, each with its own host key, authorized_keys and random port), key
//! generation with `ssh-keygen`, an `ssh-agent`, and options pointing at a
//! temporary home. Test code: panics with a message instead of returning
//! errors.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_ssh::{Agent, ConfigFile, SshOptions, Target};

/// A temporary directory for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("deploy-ssh-test")
        .tempdir()
        .expect("creating a temp dir")
}

/// Generates a key pair at `path` (and `path.pub`) with `ssh-keygen`.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) -> PathBuf {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "test", "-f"])
        .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen");
    assert!(status.success(), "ssh-keygen -t {kind} failed");
    path.to_path_buf()
}

/// The contents of `path.pub`.
pub fn public_key(path: &Path) -> String {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(PathBuf::from(p)).expect("reading a .pub file")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// A running sshd, killed on drop.
pub struct Sshd {
    pub port: u16,
    pub dir: PathBuf,
    pub host_key: PathBuf,
    pub authorized_keys: PathBuf,
    child: Child,
}

impl Sshd {
    /// Starts sshd in `dir` with a fresh ed25519 host key, accepting the
    /// public halves of `client_keys`.
    pub fn start(dir: &Path, client_keys: &[&Path]) -> Sshd {
        Self::spawn(dir, client_keys, &["ed25519"], "VERBOSE")
    }

    /// As [`Sshd::start`] with `LogLevel DEBUG1`, whose log shows signature
    /// algorithms and forwarding targets (sshd then also sends debug lines
    /// to the client's stderr).
    pub fn start_debug(dir: &Path, client_keys: &[&Path]) -> Sshd {
        Self::spawn(dir, client_keys, &["ed25519"], "DEBUG1")
    }

    /// As [`Sshd::start`] with host keys of the given types; the first is
    /// the one [`Sshd::known_hosts_line`] shows.
    pub fn start_with_host_keys(
        dir: &Path,
        client_keys: &[&Path],
        host_key_kinds: &[&str],
    ) -> Sshd {
        Self::spawn(dir, client_keys, host_key_kinds, "VERBOSE")
    }

    fn spawn(dir: &Path, client_keys: &[&Path], host_key_kinds: &[&str], log_level: &str) -> Sshd {
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let dir = dir.join(format!("sshd-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("creating the sshd dir");
        let host_keys: Vec<PathBuf> = host_key_kinds
            .iter()
            .map(|kind| keygen(&dir.join(format!("host_key_{kind}")), kind, ""))
            .collect();
        let host_key = host_keys.first().expect("at least one host key").clone();
        let host_key_lines: String = host_keys
            .iter()
            .map(|k| format!("HostKey {}\n", k.display()))
            .collect();
        let authorized_keys = dir.join("authorized_keys");
        let keys: String = client_keys.iter().map(|k| public_key(k)).collect();
        std::fs::write(&authorized_keys, keys).expect("writing authorized_keys");
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\n{host_key_lines}AuthorizedKeysFile {}\n\
                     PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     AllowTcpForwarding yes\nLogLevel {log_level}\n",
                    authorized_keys.display()
                ),
            )
            .expect("writing sshd_config");
            let log = std::fs::File::create(dir.join("sshd.log")).expect("creating sshd.log");
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting /usr/sbin/sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        port,
                        dir,
                        host_key,
                        authorized_keys,
                        child,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start; its log:\n{log}");
    }

    /// The known_hosts line for this server's host key.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, public_key(&self.host_key))
    }

    /// `root@127.0.0.1:PORT`.
    pub fn target(&self) -> Target {
        Target::parse(&format!("root@127.0.0.1:{}", self.port)).expect("a valid target")
    }

    /// The processes sshd started for its connections (all descendants),
    /// read from /proc.
    pub fn connection_pids(&self) -> Vec<u32> {
        let parent_of: Vec<(u32, u32)> = std::fs::read_dir("/proc")
            .expect("reading /proc")
            .filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // "pid (comm) state ppid ...": comm may hold spaces.
                let ppid = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut found = Vec::new();
        let mut parents = vec![self.child.id()];
        while let Some(parent) = parents.pop() {
            for (pid, _) in parent_of.iter().filter(|(_, ppid)| *ppid == parent) {
                found.push(*pid);
                parents.push(*pid);
            }
        }
        found
    }

    /// sshd's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options isolated in `home`: no config file, no agent, known_hosts at
/// `home/known_hosts`, the given key files, user root, short timeouts.
pub fn options(home: &Path, keys: &[&Path]) -> SshOptions {
    SshOptions {
        home: home.to_path_buf(),
        config_file: ConfigFile::None,
        known_hosts_files: vec![home.join("known_hosts")],
        agent: Agent::Disabled,
        identity_files: keys.iter().map(|k| k.to_path_buf()).collect(),
        default_user: Some("root".to_string()),
        connect_timeout: Duration::from_secs(10),
        ..SshOptions::default()
    }
}

/// Writes `lines` as `home/known_hosts`.
pub fn write_known_hosts(home: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{}\n", l.trim())).collect();
    std::fs::write(home.join("known_hosts"), text).expect("writing known_hosts");
}

/// A client key plus a server accepting it, with the host key known.
pub struct Fixture {
    pub home: tempfile::TempDir,
    pub key: PathBuf,
    pub sshd: Sshd,
}

impl Fixture {
    pub fn new() -> Fixture {
        let home = tempdir();
        let key = keygen(&home.path().join("id_ed25519"), "ed25519", "");
        let sshd = Sshd::start(home.path(), &[&key]);
        write_known_hosts(home.path(), &[sshd.known_hosts_line()]);
        Fixture { home, key, sshd }
    }

    pub fn options(&self) -> SshOptions {
        options(self.home.path(), &[&self.key])
    }
}

/// An ssh-agent on its own socket, killed on drop.
pub struct SshAgent {
    pub socket: PathBuf,
    child: Child,
}

impl SshAgent {
    pub fn start(dir: &Path) -> SshAgent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent socket did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        SshAgent { socket, child }
    }

    /// `ssh-add KEY` (unencrypted keys only: no passphrase prompt).
    pub fn add(&self, key: &Path) {
        let status = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running ssh-add");
        assert!(status.success(), "ssh-add {} failed", key.display());
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `SHA256:...` fingerprint `ssh-keygen -lf` shows for a key file.
pub fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key)
        .output()
        .expect("running ssh-keygen -lf");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected ssh-keygen -lf output: {text}"))
        .to_string()
}

impl SshAgent {
    /// `ssh-add KEY` for a passphrase-protected key, the passphrase given
    /// through an askpass script (never on a command line).
    pub fn add_encrypted(&self, key: &Path, passphrase: &str) {
        let script = self.socket.with_file_name("askpass.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho '{passphrase}'\n"))
            .expect("writing askpass");
        let status = Command::new("chmod")
            .arg("700")
            .arg(&script)
            .status()
            .expect("chmod");
        assert!(status.success());
        let status = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS", &script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running ssh-add");
        assert!(status.success(), "ssh-add {} failed", key.display());
    }
}
