//! Binary caches for tests, served by real servers on the host for a
//! cluster's nodes to substitute from (on the host's address on the
//! cluster's bridge, [`crate::Node::host_ip`]):
//!
//! - [`CacheServer::nginx`]: Debian's nginx serving a directory over HTTP,
//!   taking `PUT` (WebDAV, chunked bodies too, no size limit), `GET` and
//!   `HEAD`: an HTTP binary cache that Nix can upload to and substitute from;
//! - [`CacheServer::s3`]: moto's S3 server with one bucket whose objects
//!   anyone may read and write: nodes substitute from its plain-HTTP,
//!   path-style URL [`CacheServer::bucket_url`] (Debian's Nix has no S3).
//!
//! A [`CacheServer`] owns its server process (a child of this process, in
//! its process group, so a Ctrl-C of the test run ends it too) and a
//! directory under the system's temporary directory holding the server's
//! configuration, temporary files and log ([`CacheServer::log`]); dropping
//! it kills the process and removes that directory (an nginx's served
//! directory is the caller's and stays). Both programs come with
//! `scripts/setup-test-machine`; the tests run as root.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cmd::{descendants, describe, kill};
use crate::error::{io, ClusterError, Result};

/// How long a server may take to answer once started (moto takes about 0.6 s).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How many ports are tried when the free one picked is taken meanwhile.
const ATTEMPTS: usize = 3;

/// How long connecting to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a request's writes and reads may each take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a response kept (responses here are small).
const MAX_RESPONSE: u64 = 1 << 20;

/// Numbers the state directories of this process's servers.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A running binary-cache server; dropping it stops it ([`CacheServer::stop`])
/// and removes its state directory.
#[derive(Debug)]
pub struct CacheServer {
    kind: Kind,
    addr: SocketAddrV4,
    /// Configuration, temporary files and the log.
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// What a [`CacheServer`] serves.
#[derive(Debug)]
enum Kind {
    /// nginx, serving this directory.
    Nginx { root: PathBuf },
    /// moto, holding this bucket.
    S3 { bucket: String },
}

impl CacheServer {
    /// Starts nginx serving `root` (made if missing) over HTTP on `bind` and
    /// a free port, and waits until it answers. `GET` and `HEAD` serve the
    /// files below `root` (404 for a missing one); `PUT` of any size, with a
    /// `Content-Length` or a chunked body, writes one, making its parent
    /// directories (201 when new, 204 when replaced; files `rw-r--r--`,
    /// owned by root). `root` must not hold `"`, `\` or `$`.
    pub fn nginx(bind: Ipv4Addr, root: &Path) -> Result<CacheServer> {
        let program = find_program("nginx", &[PathBuf::from("/usr/sbin/nginx")])?;
        quoted(root)?;
        fs::create_dir_all(root).map_err(io(format!("creating {}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(io(format!("resolving {}", root.display())))?;
        let mut server = CacheServer::new(Kind::Nginx { root: root.clone() }, bind, "nginx")?;
        let conf = server.dir.join("nginx.conf");
        server.launch(b"\r\nserver: nginx", |s, addr| {
            let text = nginx_conf(addr, &s.dir, &s.log, &root)?;
            fs::write(&conf, text).map_err(io(format!("writing {}", conf.display())))?;
            let mut c = Command::new(&program);
            c.arg("-e")
                .arg(&s.log)
                .arg("-p")
                .arg(&s.dir)
                .arg("-c")
                .arg(&conf);
            Ok(c)
        })?;
        Ok(server)
    }

    /// Starts moto's S3 server on `bind` and a free port, waits until it
    /// answers, and creates `bucket` (in `us-east-1`, moto's default region)
    /// with a policy letting anyone (anonymous requests included) read and
    /// write its objects, so that `GET` and `HEAD` of
    /// `http://<ip>:<port>/<bucket>/<key>` work without credentials (404 for
    /// a missing key). moto checks no signature: any credentials work for
    /// signed (SigV4) requests. The state lives in the process's memory and
    /// goes with it. `bucket`: 3 to 63 of `a-z`, `0-9`, `.` and `-`.
    pub fn s3(bind: Ipv4Addr, bucket: &str) -> Result<CacheServer> {
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid {
            return Err(ClusterError::Io {
                what: format!("starting an S3 server with bucket {bucket:?}"),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a bucket name is 3 to 63 of a-z, 0-9, '.' and '-'",
                ),
            });
        }
        let program = moto_program()?;
        let kind = Kind::S3 {
            bucket: bucket.to_owned(),
        };
        let mut server = CacheServer::new(kind, bind, "s3")?;
        server.launch(b"\r\nserver: werkzeug", |_, addr| {
            let mut c = Command::new(&program);
            c.arg("-H")
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string())
                .env("PYTHONUNBUFFERED", "1");
            Ok(c)
        })?;
        server.s3_call("PUT", &format!("/{bucket}"), &[], b"")?;
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Anyone","Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::{bucket}/*"}}]}}"#
        );
        server.s3_call(
            "PUT",
            &format!("/{bucket}?policy"),
            &[("Content-Type", "application/json")],
            policy.as_bytes(),
        )?;
        Ok(server)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The server's URL, `http://<ip>:<port>`: for nginx the binary cache's
    /// URL (a substituter), for S3 the endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The S3 bucket, `None` for nginx.
    pub fn bucket(&self) -> Option<&str> {
        match &self.kind {
            Kind::S3 { bucket } => Some(bucket),
            Kind::Nginx { .. } => None,
        }
    }

    /// The bucket's plain-HTTP path-style URL, `http://<ip>:<port>/<bucket>`,
    /// readable without credentials: what nodes substitute from. `None` for
    /// nginx (its [`CacheServer::url`] is that).
    pub fn bucket_url(&self) -> Option<String> {
        self.bucket().map(|b| format!("{}/{b}", self.url()))
    }

    /// The directory nginx serves (absolute, symbolic links resolved); `None` for S3.
    pub fn root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Nginx { root } => Some(root),
            Kind::S3 { .. } => None,
        }
    }

    /// The server's log: what it wrote to stdout and stderr, for nginx its
    /// error log and an access-log line per request, for moto a line per
    /// request. Removed when the server is dropped.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Kills the server (and any process it started) and waits for it;
    /// nothing happens if it is already stopped. Its files stay until drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Until it is reaped by wait(), its pid (and so its children's
        // parent pid) names it alone.
        if let Ok(None) = child.try_wait() {
            let descendants = descendants(child.id());
            let _ = child.kill();
            for pid in descendants {
                kill(pid);
            }
        }
        let _ = child.wait();
    }

    /// A server of `kind` to be launched on `bind`, with a fresh state directory.
    fn new(kind: Kind, bind: Ipv4Addr, label: &str) -> Result<CacheServer> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nd-cache-{label}-{}-{n}", std::process::id()));
        // One left by an earlier process with the same pid.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(CacheServer {
            kind,
            addr: SocketAddrV4::new(bind, 0),
            log: dir.join("server.log"),
            dir,
            child: None,
        })
    }

    /// Picks a free port, spawns the server `command` makes for it and waits
    /// until it answers `GET /` with `marker` (lowercase) in its head, which
    /// tells it from another program that took the port meanwhile; if the
    /// server exits because the port is taken, tries another one. Launches
    /// in this process take turns, so that none is given a port another
    /// picked but has not bound yet.
    fn launch(
        &mut self,
        marker: &[u8],
        command: impl Fn(&CacheServer, SocketAddrV4) -> Result<Command>,
    ) -> Result<()> {
        static TURN: Mutex<()> = Mutex::new(());
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let ip = *self.addr.ip();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .map_err(io(format!("finding a free port on {ip}")))?
                .port();
            self.addr = SocketAddrV4::new(ip, port);
            let mut c = command(&*self, self.addr)?;
            // A fresh log for each attempt, appended to by all its writers.
            match fs::remove_file(&self.log) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io(format!("removing {}", self.log.display()))(e));
                }
                _ => {}
            }
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(io(format!("opening {}", self.log.display())))?;
            let log2 = log
                .try_clone()
                .map_err(io(format!("opening {}", self.log.display())))?;
            let child = c
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(io(format!("running `{}`", describe(&c))))?;
            self.child = Some(child);
            let status = match self.wait_answering(marker) {
                Ok(()) => return Ok(()),
                Err(status) => status,
            };
            self.stop();
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if status.is_some() && log.contains("already in use") && attempt < ATTEMPTS {
                continue;
            }
            let status = status.unwrap_or_else(|| {
                format!(
                    "did not answer on {} within {} s",
                    self.addr,
                    START_TIMEOUT.as_secs()
                )
            });
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(ClusterError::Command {
                command: describe(&c),
                status,
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
    }

    /// Waits until the server answers `GET /` with `marker` in its head;
    /// `Err(Some(status))` if it exited first, `Err(None)` on time out.
    fn wait_answering(&mut self, marker: &[u8]) -> std::result::Result<(), Option<String>> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => return Err(Some(status.to_string())),
                    Err(e) => return Err(Some(format!("unknown status ({e})"))),
                }
            }
            if let Ok((_, response)) = request(self.addr, "GET", "/", &[], b"") {
                let end = response
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(response.len());
                let head = response[..end].to_ascii_lowercase();
                if head.windows(marker.len()).any(|w| w == marker) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends an S3 request to the server; fails unless it answers 200.
    fn s3_call(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let what = format!("{method} {}{target}", self.url());
        let (status, response) =
            request(self.addr, method, target, headers, body).map_err(io(what.clone()))?;
        if status == 200 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&response);
        Err(ClusterError::Command {
            command: what,
            status: format!("HTTP {status}"),
            stderr: text.lines().take(12).collect::<Vec<_>>().join(" | "),
        })
    }
}

impl Drop for CacheServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The configuration of an nginx serving `root` on `addr`, with its pid
/// file, logs and temporary files in `dir` and `log`. It runs as one
/// process in the foreground (no master, no workers), as root: no user to
/// switch to, and the files it writes are root's.
fn nginx_conf(addr: SocketAddrV4, dir: &Path, log: &Path, root: &Path) -> Result<String> {
    let log = quoted(log)?;
    let mut text = format!(
        "# A binary cache for tests (crates/test-cluster/src/cache_server.rs).\n\
         daemon off;\n\
         master_process off;\n\
         user root;\n\
         worker_processes 1;\n\
         pid {pid};\n\
         error_log {log} notice;\n\
         events {{\n    worker_connections 1024;\n}}\n\
         http {{\n\
         \x20   access_log {log};\n",
        pid = quoted(&dir.join("nginx.pid"))?,
    );
    for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(text, "    {temp}_temp_path {};", quoted(&dir.join(temp))?);
    }
    let _ = write!(
        text,
        "    default_type application/octet-stream;\n\
         \x20   sendfile on;\n\
         \x20   server {{\n\
         \x20       listen {addr};\n\
         \x20       root {root};\n\
         \x20       client_max_body_size 0;\n\
         \x20       dav_methods PUT;\n\
         \x20       create_full_put_path on;\n\
         \x20       dav_access user:rw group:r all:r;\n\
         \x20   }}\n\
         }}\n",
        root = quoted(root)?,
    );
    Ok(text)
}

/// `path` as a double-quoted nginx configuration string; refuses what
/// would need escaping or name a variable there (`"`, `\`, `$`, controls).
fn quoted(path: &Path) -> Result<String> {
    match path.to_str() {
        Some(s) if !s.contains(['"', '\\', '$']) && !s.contains(char::is_control) => {
            Ok(format!("\"{s}\""))
        }
        _ => Err(ClusterError::Io {
            what: format!("writing {} into an nginx configuration", path.display()),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path is not UTF-8 or holds '\"', '\\', '$' or a control character",
            ),
        }),
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) to `addr` and returns
/// the response's status code and the response (at most [`MAX_RESPONSE`] bytes).
fn request(
    addr: SocketAddrV4,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)?;
    let status_line = response.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .filter(|line| line.starts_with("HTTP/1."))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP response: {:?}",
                    String::from_utf8_lossy(status_line)
                ),
            )
        })?;
    Ok((status, response))
}

/// The executable `name` on `PATH`, else the first of `fallbacks` that exists.
fn find_program(name: &str, fallbacks: &[PathBuf]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().cloned())
        .find(|p| is_executable(p))
        .ok_or_else(|| ClusterError::Io {
            what: format!("finding {name} (on PATH, or {fallbacks:?})"),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "not installed: run scripts/setup-test-machine",
            ),
        })
}

/// moto's `moto_server`: the one `scripts/setup-test-machine` installs in
/// `$NIX_DEPLOY_CACHE/moto` (default `/var/cache/nix-deploy/moto`), else
/// one on `PATH`, else pyenv's shim in `$HOME/.pyenv/shims`.
fn moto_program() -> Result<PathBuf> {
    let cache = std::env::var_os("NIX_DEPLOY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/nix-deploy"));
    let installed = cache.join("moto/bin/moto_server");
    if is_executable(&installed) {
        return Ok(installed);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    find_program("moto_server", &[home.join(".pyenv/shims/moto_server")])
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_quotes_paths_and_refuses_variables() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 1), 8080);
        let conf = nginx_conf(
            addr,
            Path::new("/tmp/d"),
            Path::new("/tmp/d/server.log"),
            Path::new("/srv/a cache"),
        )
        .unwrap();
        assert!(conf.contains("listen 10.213.0.1:8080;"));
        assert!(conf.contains("root \"/srv/a cache\";"));
        assert!(conf.contains("client_body_temp_path \"/tmp/d/client_body\";"));
        assert!(conf.contains("dav_methods PUT;"));
        assert!(nginx_conf(addr, Path::new("/tmp/d"), Path::new("/l"), Path::new("/$x")).is_err());
    }

    #[test]
    fn descendants_of_a_shell_include_its_sleep() {
        let mut shell = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = descendants(shell.id());
        while found.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            found = descendants(shell.id());
        }
        for pid in &found {
            kill(*pid);
        }
        let _ = shell.kill();
        let _ = shell.wait();
        assert_eq!(found.len(), 1);
    }
}
