//! Typed HTTP client for the rackd API, shared by the CLI, join (phase 1 and 2) and the test
//! harness. Request and response bodies are the shared `rackd-types` definitions.
//!
//! Elections are not errors to the user: reads and writes answered `503 Unavailable` (no
//! leader, no quorum, outcome unknown) or sent without an answer are retried for a bounded
//! time (`with_retry`, default 30 s), waiting what the server's `Retry-After` says. Every write
//! ([`Client::post`], [`Client::patch`], [`Client::delete`]) carries one `Idempotency-Key` for all
//! its attempts, so a retried write is applied at most once. The `_once` variants send once,
//! without a key, for the few requests that take none (join, member removal).
//!
//! Leaf module: no crate imports.

use std::time::Duration;

use rackd_types::{ApiError, ErrorBody, ErrorCode, Page};
use reqwest::Method;
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status}: {} ({:?})", .error.message, .error.code)]
    Api {
        status: u16,
        error: ApiError,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    #[error("cannot reach {url}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from {url} (status {status})")]
    Decode {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot encode the request body: {0}")]
    Encode(#[from] serde_json::Error),
    /// A local file could not be read or written, or a download was not what it claimed.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The API error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// Worth retrying (with the same key, for a write): no leader or quorum, or a request
    /// sent without an answer; a connection that could not be opened only when asked.
    fn retryable(&self, unreachable_too: bool) -> bool {
        match self {
            ClientError::Api { status, .. } => *status == 503,
            ClientError::Transport { source, .. } => unreachable_too || !source.is_connect(),
            ClientError::Decode { .. } | ClientError::Encode(_) | ClientError::Local(_) => false,
        }
    }
}

/// Whether a request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempts {
    /// Once, as it is.
    Once,
    /// Until it is answered other than 503, or the retry time is over (reads).
    Retry,
    /// Like `Retry`, with one `Idempotency-Key` for every attempt (writes).
    RetryKeyed,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    /// Every endpoint given (`--server A,B,C`; empty: `base` only) and the one in use: a
    /// node that refuses connections hands the request to the next.
    endpoints: std::sync::Arc<Vec<String>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    token: Option<String>,
    http: reqwest::Client,
    retry_for: Duration,
    retry_unreachable: bool,
    timeout: Option<Duration>,
}

impl Client {
    /// A client of the node at `base` (`host:port` or a URL), with its own connection pool.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self::with_http(base, token, http).with_timeout(Duration::from_secs(60))
    }

    /// A client of the node at `base` that trusts only the CA certificate `ca_pem` (PEM).
    pub fn with_ca(base: &str, token: Option<String>, ca_pem: &[u8]) -> Result<Self, ClientError> {
        let ca =
            reqwest::Certificate::from_pem(ca_pem).map_err(|source| ClientError::Transport {
                url: base.to_string(),
                source,
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(Self::with_http(base, token, http).with_timeout(Duration::from_secs(60)))
    }

    /// A client that shares an existing connection pool. `base` may list several endpoints
    /// of one cluster, comma-separated: requests go to the first that accepts connections.
    pub fn with_http(base: &str, token: Option<String>, http: reqwest::Client) -> Self {
        let norm = |b: &str| {
            let b = b.trim().trim_end_matches('/');
            if b.starts_with("http://") || b.starts_with("https://") {
                b.to_string()
            } else {
                format!("http://{b}")
            }
        };
        let all: Vec<String> = base
            .split(',')
            .filter(|b| !b.trim().is_empty())
            .map(norm)
            .collect();
        let base = all.first().cloned().unwrap_or_else(|| norm(base));
        Self {
            base,
            endpoints: std::sync::Arc::new(if all.len() > 1 { all } else { Vec::new() }),
            current: std::sync::Arc::default(),
            token,
            http,
            retry_for: Duration::from_secs(30),
            retry_unreachable: false,
            timeout: None,
        }
    }

    /// How long 503s and failed connections are retried (zero: never).
    pub fn with_retry(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Also retry when the node cannot be reached (a node that is restarting); by default a
    /// refused connection is answered at once.
    pub fn retry_unreachable(mut self) -> Self {
        self.retry_unreachable = true;
        self
    }

    /// Time limit of each attempt.
    pub fn with_timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The endpoint requests go to now.
    pub fn base(&self) -> String {
        match self.endpoints.len() {
            0 => self.base.clone(),
            n => {
                let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % n;
                self.endpoints[i].clone()
            }
        }
    }

    /// After a refused connection: move to the next endpoint. Whether one is left that this
    /// request (which started at `first`) has not tried.
    fn next_endpoint(&self, first: usize) -> bool {
        let n = self.endpoints.len();
        if n < 2 {
            return false;
        }
        let now = self
            .current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        (now - first) < n
    }

    /// The same client (token, connection pool, settings) for another node at `addr`
    /// (`host:port` takes this client's scheme).
    pub fn at(&self, addr: &str) -> Self {
        let addr = addr.trim_end_matches('/');
        let base = if addr.contains("://") {
            addr.to_string()
        } else {
            let scheme = self.base.split("://").next().unwrap_or("http");
            format!("{scheme}://{addr}")
        };
        Self {
            base,
            endpoints: std::sync::Arc::new(Vec::new()),
            current: std::sync::Arc::default(),
            ..self.clone()
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_match: Option<u64>,
        attempts: Attempts,
    ) -> Result<T, ClientError> {
        let key = (attempts == Attempts::RetryKeyed)
            .then(|| format!("client-{:032x}", rand::random::<u128>()));
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(200);
        let mut first = self.current.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            let r = self
                .send(method.clone(), path, body.clone(), if_match, key.as_deref())
                .await;
            // A refused connection never reached the node: another endpoint gets the same
            // request (with the same key) at once, whatever the attempts allow.
            if let Err(ClientError::Transport { source, .. }) = &r {
                if source.is_connect() && self.next_endpoint(first) {
                    continue;
                }
            }
            first = self.current.load(std::sync::atomic::Ordering::Relaxed);
            let e = match r {
                Err(e) if attempts != Attempts::Once && e.retryable(self.retry_unreachable) => e,
                other => return other,
            };
            let wait = match &e {
                ClientError::Api {
                    retry_after: Some(d),
                    ..
                } => *d,
                _ => backoff,
            }
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
            backoff = (backoff * 2).min(Duration::from_secs(2));
            if tokio::time::Instant::now() + wait > deadline {
                return Err(e);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_match: Option<u64>,
        key: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base(), path);
        let mut rb = self.http.request(method, &url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(d) = self.timeout {
            rb = rb.timeout(d);
        }
        if let Some(v) = if_match {
            rb = rb.header("If-Match", v.to_string());
        }
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/json").body(b);
        }
        let resp = rb.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(api_error(resp).await);
        }
        let body = resp.text().await.unwrap_or_default();
        let text = if body.is_empty() {
            "null"
        } else {
            body.as_str()
        };
        serde_json::from_str(text).map_err(|_| ClientError::Decode { url, status, body })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None, None, Attempts::Retry)
            .await
    }

    /// Fetch every page of a collection (`path` may already carry a query string).
    pub async fn get_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ClientError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let p = match &cursor {
                None => path.to_string(),
                Some(c) => format!("{path}{sep}cursor={c}"),
            };
            let page: Page<T> = self.get(&p).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// POST with an `Idempotency-Key`, retried through elections.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)?;
        self.call(Method::POST, path, Some(body), None, Attempts::RetryKeyed)
            .await
    }

    /// POST once, without a key (for requests that take none, such as join).
    pub async fn post_once<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)?;
        self.call(Method::POST, path, Some(body), None, Attempts::Once)
            .await
    }

    /// PATCH with an `Idempotency-Key`, retried through elections.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        if_match: Option<u64>,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)?;
        self.call(
            Method::PATCH,
            path,
            Some(body),
            if_match,
            Attempts::RetryKeyed,
        )
        .await
    }

    /// DELETE with an `Idempotency-Key`, retried through elections.
    pub async fn delete(&self, path: &str, if_match: Option<u64>) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::DELETE, path, None, if_match, Attempts::RetryKeyed)
            .await
            .map(|_| ())
    }

    /// DELETE once, without a key (member removal: a retry of an applied removal would answer
    /// 404 and hide the success).
    pub async fn delete_once(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::DELETE, path, None, None, Attempts::Once)
            .await
            .map(|_| ())
    }
}

impl Client {
    /// Send `rb` (a request to `url` built on this client's pool) with the client's token; a
    /// non-2xx answer is its API error. For requests whose body or answer is streamed (no
    /// per-request time limit here: callers bound what they must).
    pub(crate) async fn send_raw(
        &self,
        mut rb: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        Ok(resp)
    }
}

/// The error a non-2xx answer carries (its JSON error body, or the text as an internal error).
async fn api_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let error = match serde_json::from_str::<ErrorBody>(&body) {
        Ok(b) => b.error,
        Err(_) => ApiError::new(ErrorCode::Internal, body),
    };
    ClientError::Api {
        status,
        error,
        retry_after,
    }
}

pub mod backup;
pub mod blobs;
pub mod follow;
pub mod sse;
pub use blobs::digest_file;
pub use follow::{EventStream, Followed};

#[cfg(test)]
mod tests;
