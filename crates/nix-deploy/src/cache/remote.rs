//! Where a binary cache lives and how to talk to it: its URL (`http://`,
//! `https://`, or Nix's `s3://bucket?region=…&endpoint=…&scheme=…`), the
//! credentials for writing (read by the caller from the environment, never
//! from the inventory), and the two requests a push needs: does this file
//! exist (HEAD), and put this file (PUT, with its length). HTTP caches take
//! a plain PUT (e.g. nginx with WebDAV); S3 requests are presigned by
//! rusty-s3.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Body, Method, RequestBuilder, StatusCode, Url};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::CacheError;

/// How long a presigned S3 request stays valid (it is sent at once).
const PRESIGN_FOR: Duration = Duration::from_secs(3600);

/// How long a small request (a HEAD, a narinfo) may take by default: a
/// cache that accepts connections and never answers fails the push within
/// it, instead of holding the deploy.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The slowest upload rate a NAR's PUT is given time for, besides the
/// small request's time: 64 KiB/s shared by the push's 4 uploads.
const MIN_UPLOAD_RATE: u64 = 16 * 1024;

/// How long connecting to the cache may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials for writing to a cache.
#[derive(Clone, Default)]
pub struct CacheCredentials {
    /// S3 access key id, secret and optional session token.
    pub s3: Option<(String, String, Option<String>)>,
    /// A bearer token for HTTP(S) caches (`Authorization: Bearer …`).
    pub bearer: Option<String>,
}

impl std::fmt::Debug for CacheCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCredentials")
            .field("s3", &self.s3.as_ref().map(|(id, _, _)| id))
            .field("bearer", &self.bearer.as_ref().map(|_| "…"))
            .finish()
    }
}

impl CacheCredentials {
    /// From the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN` for S3 (the names every S3 tool reads), and
    /// `NIX_DEPLOY_CACHE_TOKEN` for HTTP(S).
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            s3: var("AWS_ACCESS_KEY_ID")
                .zip(var("AWS_SECRET_ACCESS_KEY"))
                .map(|(id, secret)| (id, secret, var("AWS_SESSION_TOKEN"))),
            bearer: var("NIX_DEPLOY_CACHE_TOKEN"),
        }
    }
}

/// A binary cache to push to.
#[derive(Clone)]
pub struct BinaryCache {
    /// The URL as the inventory gives it (no secrets in it).
    url: String,
    kind: Kind,
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for BinaryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinaryCache")
            .field("url", &self.url)
            .finish()
    }
}

#[derive(Clone)]
enum Kind {
    Http {
        base: Url,
        bearer: Option<String>,
    },
    S3 {
        bucket: Box<Bucket>,
        credentials: Option<Credentials>,
    },
}

impl BinaryCache {
    /// Parses `url` (`http://`, `https://` or `s3://`) and sets up a
    /// client; `credentials` are used for writing.
    pub fn new(url: &str, credentials: CacheCredentials) -> Result<Self, CacheError> {
        let bad = |reason: String| CacheError::Url {
            url: url.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let kind = match parsed.scheme() {
            "http" | "https" => {
                let mut base = parsed.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                Kind::Http {
                    base,
                    bearer: credentials.bearer,
                }
            }
            "s3" => {
                let name = parsed
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| bad("no bucket: write s3://<bucket>?region=…".into()))?
                    .to_owned();
                if !matches!(parsed.path(), "" | "/") {
                    return Err(bad(
                        "a key prefix is not supported: s3://<bucket> only".into()
                    ));
                }
                if let Some((unknown, _)) = parsed
                    .query_pairs()
                    .find(|(k, _)| !matches!(k.as_ref(), "region" | "endpoint" | "scheme"))
                {
                    return Err(bad(format!(
                        "unknown setting {unknown:?}: s3:// takes region, endpoint and scheme"
                    )));
                }
                let query = |key: &str| {
                    parsed
                        .query_pairs()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.into_owned())
                };
                let region = query("region").unwrap_or_else(|| "us-east-1".to_owned());
                let scheme = query("scheme").unwrap_or_else(|| "https".to_owned());
                let (endpoint, style) = match query("endpoint") {
                    Some(e) if e.contains("://") => (e, UrlStyle::Path),
                    Some(e) => (format!("{scheme}://{e}"), UrlStyle::Path),
                    None => (
                        format!("{scheme}://s3.{region}.amazonaws.com"),
                        UrlStyle::VirtualHost,
                    ),
                };
                let endpoint = Url::parse(&endpoint).map_err(|e| bad(format!("endpoint: {e}")))?;
                let bucket = Bucket::new(endpoint, style, name, region)
                    .map_err(|e| bad(format!("bucket: {e}")))?;
                Kind::S3 {
                    bucket: Box::new(bucket),
                    credentials: credentials.s3.map(|(id, secret, token)| match token {
                        Some(token) => Credentials::new_with_token(id, secret, token),
                        None => Credentials::new(id, secret),
                    }),
                }
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?}: use http://, https:// or s3://"
                )))
            }
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            kind,
            client,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Sets how long a small request may take (a NAR's upload gets that
    /// plus its size at 16 KiB/s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cache's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the cache has the file `key` (a 403 counts as missing, as
    /// Nix counts it: S3 answers so without the right to list).
    pub(crate) async fn has(&self, key: &str) -> Result<bool, CacheError> {
        let response = self
            .request_for(Method::HEAD, key)?
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.request(key, e))?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(false),
            status => Err(self.status(key, "HEAD", status)),
        }
    }

    /// Puts `body` (`len` bytes) as the file `key`.
    async fn put(
        &self,
        key: &str,
        content_type: &str,
        len: u64,
        body: Body,
    ) -> Result<(), CacheError> {
        let response = self
            .request_for(Method::PUT, key)?
            .timeout(self.timeout + Duration::from_secs(len / MIN_UPLOAD_RATE))
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| self.request(key, e))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            status => Err(self.status(key, "PUT", status)),
        }
    }

    /// Puts `bytes` as the file `key`.
    pub(crate) async fn put_bytes(
        &self,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), CacheError> {
        let len = bytes.len() as u64;
        self.put(key, content_type, len, Body::from(bytes)).await
    }

    /// Puts the local file `file` as the file `key`, streamed.
    pub(crate) async fn put_file(
        &self,
        key: &str,
        content_type: &str,
        file: &Path,
    ) -> Result<(), CacheError> {
        let io = |source| CacheError::Spool {
            file: file.to_owned(),
            source,
        };
        let f = tokio::fs::File::open(file).await.map_err(io)?;
        let len = f.metadata().await.map_err(io)?.len();
        self.put(key, content_type, len, Body::from(f)).await
    }

    /// A `method` (HEAD or PUT) request for the file `key`: authorized for
    /// HTTP(S), presigned for S3.
    fn request_for(&self, method: Method, key: &str) -> Result<RequestBuilder, CacheError> {
        Ok(match &self.kind {
            Kind::Http { base, bearer } => {
                let request = self.client.request(method, self.join(base, key)?);
                match bearer {
                    Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
                    None => request,
                }
            }
            Kind::S3 {
                bucket,
                credentials,
            } => {
                let url = match method {
                    Method::PUT => bucket
                        .put_object(credentials.as_ref(), key)
                        .sign(PRESIGN_FOR),
                    _ => bucket
                        .head_object(credentials.as_ref(), key)
                        .sign(PRESIGN_FOR),
                };
                self.client.request(method, url)
            }
        })
    }

    fn join(&self, base: &Url, key: &str) -> Result<Url, CacheError> {
        base.join(key).map_err(|e| CacheError::Url {
            url: self.url.clone(),
            reason: format!("{key}: {e}"),
        })
    }

    fn request(&self, key: &str, source: reqwest::Error) -> CacheError {
        if source.is_timeout() {
            return CacheError::TimedOut {
                cache: self.url.clone(),
                key: key.to_owned(),
            };
        }
        CacheError::Request {
            cache: self.url.clone(),
            key: key.to_owned(),
            source: source.without_url(),
        }
    }

    fn status(&self, key: &str, method: &'static str, status: StatusCode) -> CacheError {
        CacheError::Status {
            cache: self.url.clone(),
            key: key.to_owned(),
            method,
            status: status.as_u16(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_follow_nix_syntax_and_bad_ones_are_named() {
        let c = BinaryCache::new(
            "s3://cache?region=eu-west-1&endpoint=minio.lan:9000&scheme=http",
            CacheCredentials::default(),
        )
        .unwrap();
        let Kind::S3 { bucket, .. } = &c.kind else {
            panic!("an s3 cache")
        };
        assert_eq!(
            bucket.object_url("x.narinfo").as_str(),
            "http://minio.lan:9000/cache/x.narinfo"
        );
        assert_eq!(bucket.region(), "eu-west-1");
        let aws = BinaryCache::new("s3://cache", CacheCredentials::default()).unwrap();
        let Kind::S3 { bucket, .. } = &aws.kind else {
            panic!("an s3 cache")
        };
        assert_eq!(
            bucket.object_url("x").as_str(),
            "https://cache.s3.us-east-1.amazonaws.com/x"
        );
        for bad in [
            "ftp://x",
            "s3://",
            "s3://b/prefix",
            "not a url",
            "s3://b?endpiont=minio:9000",
        ] {
            let e = BinaryCache::new(bad, CacheCredentials::default()).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn http_keys_are_joined_below_the_given_path() {
        let c = BinaryCache::new("http://h:8080/cache", CacheCredentials::default()).unwrap();
        let Kind::Http { base, .. } = &c.kind else {
            panic!("an http cache")
        };
        assert_eq!(
            c.join(base, "nar/a.nar.zst").unwrap().as_str(),
            "http://h:8080/cache/nar/a.nar.zst"
        );
    }

    #[tokio::test]
    async fn a_cache_that_accepts_and_never_answers_times_out_naming_the_file() {
        // The kernel accepts connections on a listening socket nobody reads.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let cache = BinaryCache::new(&url, CacheCredentials::default())
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = cache.has("nix-cache-info").await.unwrap_err();
        assert!(matches!(e, CacheError::TimedOut { .. }), "{e:?}");
        assert!(e.to_string().contains(&url) && e.to_string().contains("nix-cache-info"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = cache
            .put_bytes(
                "x.narinfo",
                "text/x-nix-narinfo",
                b"StorePath: /nix/store/x\n".to_vec(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, CacheError::TimedOut { .. }), "{e:?}");
    }

    #[test]
    fn credentials_are_not_in_debug_output() {
        let c = CacheCredentials {
            s3: Some(("AKID".into(), "SECRET".into(), Some("TOKEN".into()))),
            bearer: Some("BEARER".into()),
        };
        let text = format!("{c:?}");
        assert!(!text.contains("SECRET") && !text.contains("TOKEN") && !text.contains("BEARER"));
    }
}
