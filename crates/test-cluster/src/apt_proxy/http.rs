//! The HTTP side of the apt proxy: reading request heads off a client
//! connection, and turning a proxy request (`GET http://host/path HTTP/1.1`,
//! as apt sends it to a proxy) into the request its origin server expects
//! (`GET /path HTTP/1.1` with `Host: host`). Only `GET` and `HEAD` without a
//! body, to port 80 of an allowed host: what apt needs from a Debian mirror.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A request to forward to its origin server.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Request {
    /// The origin server's host name, lowercase; its port is 80.
    pub host: String,
    /// The head to send it, in origin form.
    pub head: Vec<u8>,
    /// The client's request line, for the log.
    pub line: String,
}

/// Why a request is refused, told to the client as an HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The status, e.g. `403 Forbidden`.
    pub status: &'static str,
    /// What is wrong, the response's body.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `status` and `reason`.
    pub fn new(status: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    /// The full response, closing the connection.
    pub fn response(&self) -> Vec<u8> {
        let body = format!("apt proxy: {}\n", self.reason);
        format!(
            "HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Reads the next request head (up to and with its empty line) from `r`,
/// keeping what follows it in `buf` for the next call; `None` at the end of
/// the stream before a whole head.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        // Empty lines before a request line are to be ignored (RFC 9112 2.2).
        let blank = buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        buf.drain(..blank);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf.drain(..end + 4).collect()));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        if r.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Checks a proxy request's head and rewrites it for its origin server,
/// one of `allowed` (lowercase host names).
pub(super) fn parse(head: &[u8], allowed: &[String]) -> Result<Request, Refusal> {
    let bad = |reason: &str| Refusal::new("400 Bad Request", reason);
    let text = std::str::from_utf8(head).map_err(|_| bad("the request head is not UTF-8"))?;
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let line = lines.next().ok_or_else(|| bad("empty request"))?;
    let [method, target, version] = line.split(' ').collect::<Vec<_>>()[..] else {
        return Err(bad("malformed request line"));
    };
    if !matches!(method, "GET" | "HEAD") {
        return Err(Refusal::new(
            "405 Method Not Allowed",
            format!("{method}: only GET and HEAD are forwarded"),
        ));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(bad("only HTTP/1.x"));
    }
    let rest = target
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &target[7..])
        .ok_or_else(|| bad("only absolute http:// URLs are forwarded"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let host = match authority.rsplit_once(':') {
        Some((host, "80")) => host,
        Some(_) => return Err(Refusal::new("403 Forbidden", "only port 80")),
        None => authority,
    }
    .to_ascii_lowercase();
    if !allowed.contains(&host) {
        return Err(Refusal::new(
            "403 Forbidden",
            format!("{host} is not a host of the node's apt sources"),
        ));
    }
    let mut out = format!("{method} {path} {version}\r\nHost: {host}\r\n");
    for header in lines {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| bad("malformed header"))?;
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "host" | "proxy-connection" | "proxy-authorization" => {}
            "transfer-encoding" => return Err(bad("request bodies are not forwarded")),
            "content-length" if value.trim() != "0" => {
                return Err(bad("request bodies are not forwarded"))
            }
            _ => {
                out.push_str(header);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("\r\n");
    Ok(Request {
        host,
        head: out.into_bytes(),
        line: line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["deb.debian.org".to_owned()]
    }

    #[test]
    fn rewrites_a_proxy_request_to_origin_form() {
        let head = b"GET http://deb.debian.org:80/debian/dists/trixie/InRelease HTTP/1.1\r\n\
                     Host: deb.debian.org:80\r\nProxy-Connection: keep-alive\r\n\
                     User-Agent: Debian APT-HTTP/1.3 (3.0.3)\r\n\r\n";
        let r = parse(head, &allowed()).unwrap();
        assert_eq!(r.host, "deb.debian.org");
        assert_eq!(
            String::from_utf8(r.head).unwrap(),
            "GET /debian/dists/trixie/InRelease HTTP/1.1\r\nHost: deb.debian.org\r\n\
             User-Agent: Debian APT-HTTP/1.3 (3.0.3)\r\n\r\n"
        );
        let r = parse(b"HEAD http://DEB.debian.org HTTP/1.0\r\n\r\n", &allowed()).unwrap();
        assert_eq!(r.head, b"HEAD / HTTP/1.0\r\nHost: deb.debian.org\r\n\r\n");
    }

    #[test]
    fn refuses_what_apt_does_not_need() {
        let status = |head: &[u8]| parse(head, &allowed()).unwrap_err().status;
        assert_eq!(
            status(b"GET http://example.org/ HTTP/1.1\r\n\r\n"),
            "403 Forbidden"
        );
        assert_eq!(
            status(b"GET http://deb.debian.org:8080/ HTTP/1.1\r\n\r\n"),
            "403 Forbidden"
        );
        assert_eq!(
            status(b"CONNECT deb.debian.org:443 HTTP/1.1\r\n\r\n"),
            "405 Method Not Allowed"
        );
        assert_eq!(status(b"GET /debian HTTP/1.1\r\n\r\n"), "400 Bad Request");
        assert_eq!(
            status(b"GET http://deb.debian.org/ HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
            "400 Bad Request"
        );
        let refusal = Refusal::new("403 Forbidden", "no");
        let text = String::from_utf8(refusal.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\napt proxy: no\n"), "{text}");
    }

    #[tokio::test]
    async fn reads_pipelined_heads_one_at_a_time() {
        let mut input: &[u8] =
            b"\r\nGET http://a/1 HTTP/1.1\r\n\r\nGET http://a/2 HTTP/1.1\r\nX: y\r\n\r\nGET";
        let mut buf = Vec::new();
        let first = read_head(&mut input, &mut buf).await.unwrap().unwrap();
        assert_eq!(first, b"GET http://a/1 HTTP/1.1\r\n\r\n");
        let second = read_head(&mut input, &mut buf).await.unwrap().unwrap();
        assert_eq!(second, b"GET http://a/2 HTTP/1.1\r\nX: y\r\n\r\n");
        assert_eq!(read_head(&mut input, &mut buf).await.unwrap(), None);
    }
}
