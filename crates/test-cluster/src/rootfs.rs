//! A node's file systems and users: the namespace holder process that owns
//! its mounts, and the keys and accounts written into its root.
//!
//! The holder is `ip netns exec <ns> unshare --mount --uts --pid --fork
//! --kill-child --propagation private sh -c SCRIPT`: the script runs as the
//! node's init (pid 1 of its own pid namespace), mounts the node's file systems
//! (with a /proc of that pid namespace) in its private mount namespace, sets the
//! hostname and becomes `sleep infinity` (chrooted for the template kinds),
//! printing `ready` only once it is in its final root. The mounts never appear
//! in the host's mount table; killing the holder kills the init, which ends
//! every process of the node and its mounts. The host reaches the node's files
//! through `/proc/<init>/root` and enters it with `nsenter --target <init>`.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::cmd::{child_of, cmd, describe, run};
use crate::error::{io, ClusterError, Result};
use crate::spec::{NodeKind, TEMPLATE_STAMP};

/// Mounts a template node: $1 template, $2 upper, $3 work, $4 merged root, $5 hostname.
const TEMPLATE_SCRIPT: &str = r#"set -e
r=$4
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$r"
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount -t tmpfs -o mode=755,size=16m tmpfs "$r/dev"
mknod -m 666 "$r/dev/null" c 1 3
mknod -m 666 "$r/dev/zero" c 1 5
mknod -m 666 "$r/dev/full" c 1 7
mknod -m 666 "$r/dev/random" c 1 8
mknod -m 666 "$r/dev/urandom" c 1 9
mknod -m 666 "$r/dev/tty" c 5 0
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$r/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t tmpfs -o mode=755 tmpfs "$r/run"
mkdir -m 755 "$r/run/sshd"
hostname "$5"
exec chroot "$r" /bin/sh -c 'echo ready && exec sleep infinity >/dev/null'
"#;

/// Mounts a local-Nix node over the host's root: $1 private /nix, $2 /etc
/// upper, $3 /etc work, $4 /var upper, $5 /var work, $6 hostname.
const LOCAL_SCRIPT: &str = r#"set -e
mount -t proc proc /proc
mount --bind "$1" /nix
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$2,workdir=$3" /etc
mount -t overlay overlay -o "lowerdir=/var,upperdir=$4,workdir=$5" /var
mount -t tmpfs -o mode=700 tmpfs /root
mount -t tmpfs -o mode=755 tmpfs /home
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -m 755 /run/sshd
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname "$6"
echo ready
exec sleep infinity >/dev/null
"#;

/// The Nix settings of a local-Nix node: root works on the store directly.
const LOCAL_NIX_CONF: &str = "build-users-group =\nsandbox = false\nsubstituters =\n";

/// A node's namespace holder.
#[derive(Debug)]
pub(crate) struct Holder {
    /// The `unshare` process; killing it kills the init.
    pub child: Child,
    /// The node's init, as the host numbers it.
    pub init: u32,
}

/// Creates the node's directories under `dir` and starts its holder in `netns`.
pub(crate) fn start_holder(kind: NodeKind, name: &str, netns: &str, dir: &Path) -> Result<Holder> {
    let mkdir = |sub: &str| -> Result<String> {
        let p = dir.join(sub);
        fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        Ok(p.to_string_lossy().into_owned())
    };
    let mut holder = cmd(
        "ip",
        ["netns", "exec", netns, "unshare", "--mount", "--uts"],
    );
    holder.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
    ]);
    holder.args(["sh", "-c"]);
    match kind.template() {
        Some(template) => {
            let template = template.to_string_lossy().into_owned();
            let (upper, work, root) = (mkdir("upper")?, mkdir("work")?, mkdir("root")?);
            holder.args([TEMPLATE_SCRIPT, "sh", &template, &upper, &work, &root, name]);
        }
        None => {
            let (nix, upper, work) = (mkdir("nix/store")?, mkdir("etc-upper")?, mkdir("etc-work")?);
            let (var_upper, var_work) = (mkdir("var-upper")?, mkdir("var-work")?);
            let nix = nix.trim_end_matches("/store");
            holder.args([
                LOCAL_SCRIPT,
                "sh",
                nix,
                &upper,
                &work,
                &var_upper,
                &var_work,
                name,
            ]);
        }
    }
    let log = dir.join("holder.log");
    let log_file = fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let mut child = holder
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(io(format!("running `{}`", describe(&holder))))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let init = child_of(child.id());
    let Some(init) = init.filter(|_| line.trim() == "ready") else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = fs::read_to_string(&log).unwrap_or_default();
        return Err(ClusterError::Node {
            node: name.to_owned(),
            detail: format!("mounting its file systems failed: {}", stderr.trim()),
        });
    };
    Ok(Holder { child, init })
}

/// Checks that `root` (the init's `/proc/<pid>/root`) is the node's own root
/// and not the host's, before anything is written through it: a template
/// node's root holds the template's stamp, a local node's `/etc` is an overlay.
pub(crate) fn ensure_isolated(kind: NodeKind, name: &str, root: &Path) -> Result<()> {
    let isolated = match kind {
        NodeKind::Trixie | NodeKind::Bare => root.join(TEMPLATE_STAMP).exists(),
        NodeKind::LocalNix => match (fs::metadata(root.join("etc")), fs::metadata("/etc")) {
            (Ok(node), Ok(host)) => node.dev() != host.dev(),
            _ => false,
        },
    };
    if isolated {
        Ok(())
    } else {
        Err(ClusterError::Node {
            node: name.to_owned(),
            detail: format!("{} is not the node's own root", root.display()),
        })
    }
}

/// Generates the node's ed25519 host key under `root`; returns the public key
/// as `ssh-ed25519 BASE64`.
pub(crate) fn make_host_key(kind: NodeKind, name: &str, root: &Path) -> Result<String> {
    let key = inside(root, kind.host_key());
    for p in [key.clone(), key.with_extension("pub")] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("removing {}", p.display()))(e))
            }
            _ => {}
        }
    }
    let key_str = key.to_string_lossy();
    run(&mut cmd(
        "ssh-keygen",
        ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", &key_str],
    ))?;
    let public = key.with_extension("pub");
    let text = fs::read_to_string(&public).map_err(io(format!("reading {}", public.display())))?;
    let fields: Vec<&str> = text.split_whitespace().take(2).collect();
    match fields.as_slice() {
        [algo, b64] => Ok(format!("{algo} {b64}")),
        _ => Err(ClusterError::Node {
            node: name.to_owned(),
            detail: format!("malformed host key {}", public.display()),
        }),
    }
}

/// Writes the local-Nix node's private Nix settings under `root`.
pub(crate) fn write_local_nix_conf(root: &Path) -> Result<()> {
    let dir = inside(root, "/etc/nix");
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let conf = dir.join("nix.conf");
    fs::write(&conf, LOCAL_NIX_CONF).map_err(io(format!("writing {}", conf.display())))
}

/// The uid, gid and home of `user` in the node's /etc/passwd under `root`.
pub(crate) fn user(root: &Path, node: &str, user: &str) -> Result<(u32, u32, String)> {
    let passwd = inside(root, "/etc/passwd");
    let text = fs::read_to_string(&passwd).map_err(io(format!("reading {}", passwd.display())))?;
    let entry = text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [u, _, uid, gid, _, home, ..] if *u == user => {
                Some((uid.parse().ok()?, gid.parse().ok()?, (*home).to_owned()))
            }
            _ => None,
        }
    });
    entry.ok_or_else(|| ClusterError::Node {
        node: node.to_owned(),
        detail: format!("no user {user} in its /etc/passwd"),
    })
}

/// Adds `public_key` (one authorized_keys line) for the user with `uid`, `gid` and `home` in the node under `root`.
pub(crate) fn authorize(
    root: &Path,
    (uid, gid, home): &(u32, u32, String),
    public_key: &str,
) -> Result<()> {
    let ssh = inside(root, &format!("{home}/.ssh"));
    let what = format!("authorizing a key in {}", ssh.display());
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ssh)
        .map_err(io(&what))?;
    let keys = ssh.join("authorized_keys");
    let mut line = public_key.trim_end().to_owned();
    line.push('\n');
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&keys)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(io(&what))?;
    fs::set_permissions(&keys, fs::Permissions::from_mode(0o600)).map_err(io(&what))?;
    for p in [&ssh, &keys] {
        chown(p, Some(*uid), Some(*gid)).map_err(io(&what))?;
    }
    Ok(())
}

/// The host path of `path` inside the node whose root is `root`.
pub(crate) fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Mounts a tmpfs on `dir` (made if missing), in the host's namespace.
pub(crate) fn mount_tmpfs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let dir = dir.to_string_lossy();
    run(&mut cmd(
        "mount",
        ["-t", "tmpfs", "-o", "mode=755", "tmpfs", &dir],
    ))
    .map(drop)
}

/// Unmounts (lazily) every mount of the host's namespace at or below `dir`.
pub(crate) fn unmount_below(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = run(&mut cmd("umount", ["-l", p]));
    }
}
