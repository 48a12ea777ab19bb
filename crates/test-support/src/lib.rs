//! Helpers shared by the integration tests and benchmarks: the real Nix
//! versions we test against (`tests/peers/*`), throwaway stores under `/tmp`
//! and fixture closures built with `nix-build` from `tests/fixtures/`.
//! Test code only: these helpers panic with a clear message instead of
//! returning errors.

pub mod flake;
pub mod timing;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support has two parents")
        .to_path_buf()
}

/// The inputs of a coverage-guided fuzzer's committed corpus
/// (`fuzz/corpus/TARGET`, grown by `scripts/fuzz`), with their paths.
pub fn fuzz_corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = repo_root().join("fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fuzz)", dir.display()));
    let inputs: Vec<_> = entries
        .map(|e| e.expect("a corpus entry").path())
        .map(|p| {
            let data = std::fs::read(&p).expect("a corpus file");
            (p, data)
        })
        .collect();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// Whether we run under CI, where a missing peer is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1")
}

/// A real Nix installation to test against: a wrapper script in
/// `tests/peers/` that runs a Nix command with that version. Paths under
/// `/tmp` mean the same inside every peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's name, e.g. `nix-2.8`.
    pub name: String,
    wrapper: PathBuf,
}

/// Every peer whose Nix runs on this machine. Outside CI a peer that is not
/// set up is skipped with a message; under CI it panics.
pub fn peers() -> Vec<Peer> {
    let dir = repo_root().join("tests/peers");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for wrapper in names {
        let name = wrapper.file_name().unwrap().to_string_lossy().into_owned();
        let peer = Peer { name, wrapper };
        match peer.command("nix-store").arg("--version").output() {
            Ok(o) if o.status.success() => out.push(peer),
            other => {
                let msg = format!(
                    "peer {} is not usable ({other:?}): run scripts/setup-test-machine",
                    peer.name
                );
                assert!(!in_ci(), "{msg}");
                eprintln!("skipping {msg}");
            }
        }
    }
    out
}

/// What every peer's Nix runs with: no substituters, as the test nodes'
/// nix.conf says too (this machine is offline: a daemon asked what its
/// caches have would retry cache.nixos.org for seconds).
const PEER_CONFIG: &str = "substituters =";

impl Peer {
    /// A command running `program` with this peer's Nix.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(&self.wrapper);
        c.arg(program).env("NIX_CONFIG", PEER_CONFIG);
        c
    }

    /// The same as [`Peer::command`], for tokio.
    pub fn tokio_command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.wrapper);
        c.arg(program).env("NIX_CONFIG", PEER_CONFIG);
        c
    }
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// An empty chroot store in a temporary directory under `/tmp`, removed on drop.
pub struct TempStore {
    dir: tempfile::TempDir,
}

impl TempStore {
    /// Creates an empty store directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nix-deploy-store-")
            .tempdir_in("/tmp")
            .expect("temp dir in /tmp");
        Self { dir }
    }

    /// The store's root: its store lives at `<root>/nix/store`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `nix-daemon --stdio` serving this store, run by `peer`.
    pub fn daemon_command(&self, peer: &Peer) -> tokio::process::Command {
        let mut c = peer.tokio_command("nix-daemon");
        c.arg("--stdio").arg("--store").arg(self.root());
        c
    }

    /// Runs `nix-store --verify --check-contents` with `peer` on this store,
    /// returning its combined output; panics if it fails or reports damage.
    pub fn verify(&self, peer: &Peer) -> String {
        let out = peer
            .command("nix-store")
            .arg("--store")
            .arg(self.root())
            .args(["--verify", "--check-contents"])
            .output()
            .expect("spawn nix-store --verify");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success() && !text.contains("modified") && !text.contains("error"),
            "nix-store --verify --check-contents failed on {} with {}: {text}",
            self.root().display(),
            peer.name
        );
        text
    }

    /// The closure of `path` in this store, as `nix-store -qR` prints it.
    pub fn closure(&self, peer: &Peer, path: &str) -> BTreeSet<String> {
        lines(&run(peer
            .command("nix-store")
            .arg("--store")
            .arg(self.root())
            .args(["-qR", path])))
    }
}

impl Default for TempStore {
    fn default() -> Self {
        Self::new()
    }
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

/// A closure built in the local store from `tests/fixtures/closure.nix`.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The root path; its closure is `n + 1` paths.
    pub root: String,
    /// Every path of the closure (`nix-store -qR root`), sorted.
    pub closure: BTreeSet<String>,
}

/// Builds (or finds, when already built) the fixture closure of `n` paths
/// plus a root, with file contents of `kib` KiB each (the letter x, which
/// compresses to nothing); `seed` picks a disjoint family of paths.
pub fn fixture_closure(n: usize, seed: &str, kib: usize) -> Fixture {
    build_fixture(n, seed, kib, false)
}

/// [`fixture_closure`] with random file contents: no compressor shrinks
/// them, so copying it takes as long as its bytes take on the link.
pub fn fixture_closure_random(n: usize, seed: &str, kib: usize) -> Fixture {
    build_fixture(n, seed, kib, true)
}

fn build_fixture(n: usize, seed: &str, kib: usize, random: bool) -> Fixture {
    let expr = repo_root().join("tests/fixtures/closure.nix");
    let _one_at_a_time = build_lock();
    let root = run(Command::new("nix-build")
        .arg(&expr)
        .args(["--no-out-link", "--option", "substituters", ""])
        .args(["--arg", "n", &n.to_string()])
        .args(["--argstr", "seed", seed, "--arg", "kib", &kib.to_string()])
        .args(["--arg", "random", if random { "true" } else { "false" }]))
    .trim()
    .to_owned();
    let closure = lines(&run(Command::new("nix-store").args(["-qR", &root])));
    Fixture { root, closure }
}

/// A profile `name` whose closure is the union of `parts` (store paths of
/// the local store): it references each of them.
pub fn fixture_profile(name: &str, parts: &[&str]) -> Fixture {
    let parts: Vec<String> = parts
        .iter()
        .map(|p| format!("(builtins.storePath \"{p}\")"))
        .collect();
    let expr = format!(
        "derivation {{ name = \"{name}\"; system = builtins.currentSystem; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo $parts > $out\" ]; parts = [ {} ]; }}",
        parts.join(" ")
    );
    let _one_at_a_time = build_lock();
    let root = run(Command::new("nix-build").args([
        "--no-out-link",
        "--option",
        "substituters",
        "",
        "-E",
        &expr,
    ]))
    .trim()
    .to_owned();
    let closure = lines(&run(Command::new("nix-store").args(["-qR", &root])));
    Fixture { root, closure }
}

/// Holds a lock that lets one local `nix-build` of the tests run at a time,
/// across test threads and test binaries: on a fresh single-user store,
/// concurrent builds fail with "SQLite database is busy" (Nix 2.8 does not
/// retry every statement).
pub fn build_lock() -> std::fs::File {
    let path = Path::new("/tmp/nix-deploy-tests-build.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    file
}

/// The `nix-deploy-receive` program (built by cargo for this test run's
/// profile, if it is not already) as a package in the local store
/// (`<path>/bin/nix-deploy-receive`); returns the store path.
pub fn receiver_package() -> String {
    static PACKAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKAGE
        .get_or_init(|| cargo_package("deploy-receive", "nix-deploy-receive"))
        .clone()
}

/// The `nix-deploy-relay` program (built by cargo for this test run's
/// profile, if it is not already) as a package in the local store
/// (`<path>/bin/nix-deploy-relay`); returns the store path.
pub fn relay_package() -> String {
    static PACKAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKAGE
        .get_or_init(|| cargo_package("deploy-relay", "nix-deploy-relay"))
        .clone()
}

/// Builds `bin` of crate `krate` with cargo and adds it to the local store
/// as a package `bin` holding `bin/<bin>`. Under `scripts/test`,
/// `NIX_DEPLOY_TEST_PROGRAMS` names the directory where the suite's own
/// `cargo test --workspace` put it (the crate has integration tests, so
/// that build makes its binary): taken as it is, which spares the suite a
/// second build of its dependencies with another feature set.
fn cargo_package(krate: &str, bin: &str) -> String {
    if let Some(dir) = std::env::var_os("NIX_DEPLOY_TEST_PROGRAMS") {
        let file = PathBuf::from(dir).join(bin);
        if let Ok(program) = std::fs::read(&file) {
            return package_holding(bin, bin, &program, true);
        }
    }
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(repo_root())
        .args(["build", "-q", "-p", krate, "--bin", bin]);
    if release {
        build.arg("--release");
    }
    run(&mut build);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let file = target
        .join(if release { "release" } else { "debug" })
        .join(bin);
    let program = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    package_holding(bin, bin, &program, true)
}

/// A package `name` in the local store holding `bin/nix-deploy-receive`
/// with these bytes (executable or not), for receivers that can't run.
pub fn package_with_program(name: &str, program: &[u8], executable: bool) -> String {
    package_holding(name, "nix-deploy-receive", program, executable)
}

/// A package `name` in the local store holding `bin/<bin>` with these
/// bytes; returns its store path.
fn package_holding(name: &str, bin: &str, program: &[u8], executable: bool) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_bin = dir.path().join(name).join("bin");
    std::fs::create_dir_all(&dir_bin).expect("mkdir bin");
    let file = dir_bin.join(bin);
    std::fs::write(&file, program).expect("write the program");
    let mode = if executable { 0o555 } else { 0o444 };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let _one_at_a_time = build_lock();
    run(Command::new("nix-store")
        .arg("--add")
        .arg(dir.path().join(name)))
    .trim()
    .to_owned()
}

/// A socket daemon (`nix-daemon`, this machine's Nix) serving the local
/// store on a private socket path (`NIX_DAEMON_SOCKET_PATH`), so tests do
/// not depend on a system daemon. Killed on drop.
pub struct SocketDaemon {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl SocketDaemon {
    /// Starts the daemon and waits (up to 10 s) until its socket exists.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nix-deploy-socket-")
            .tempdir_in("/tmp")
            .expect("temp dir in /tmp");
        let socket = dir.path().join("socket");
        let child = Command::new("nix-daemon")
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn nix-daemon");
        let daemon = Self { child, dir };
        for _ in 0..200 {
            if socket.exists() {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("nix-daemon did not create {}", socket.display());
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("socket")
    }
}

impl Drop for SocketDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
