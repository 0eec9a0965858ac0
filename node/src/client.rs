//! Typed HTTP client for the rackd API, used by the CLI (and usable by tests and tools).
//! Request and response bodies are the shared `rackd-types` definitions.

use std::time::Duration;

use rackd_types::{ApiError, ErrorBody, ErrorCode, Page};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status}: {} ({:?})", .error.message, .error.code)]
    Api { status: u16, error: ApiError },
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
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        Self {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("HTTP client builds"),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{}", self.base, path);
        let mut rb = self.http.request(method, &url);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        (url, rb)
    }

    async fn send<T: DeserializeOwned>(
        url: String,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = rb.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_str::<ErrorBody>(&body) {
                Ok(b) => ClientError::Api {
                    status,
                    error: b.error,
                },
                Err(_) => ClientError::Api {
                    status,
                    error: ApiError::new(ErrorCode::Internal, body),
                },
            });
        }
        let text = if body.is_empty() {
            "null"
        } else {
            body.as_str()
        };
        serde_json::from_str(text).map_err(|_| ClientError::Decode { url, status, body })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, rb) = self.req(reqwest::Method::GET, path);
        Self::send(url, rb).await
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

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (url, rb) = self.req(reqwest::Method::POST, path);
        Self::send(url, rb.json(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        if_match: Option<u64>,
    ) -> Result<T, ClientError> {
        let (url, mut rb) = self.req(reqwest::Method::PATCH, path);
        if let Some(v) = if_match {
            rb = rb.header("If-Match", v.to_string());
        }
        Self::send(url, rb.json(body)).await
    }

    pub async fn delete(&self, path: &str, if_match: Option<u64>) -> Result<(), ClientError> {
        let (url, mut rb) = self.req(reqwest::Method::DELETE, path);
        if let Some(v) = if_match {
            rb = rb.header("If-Match", v.to_string());
        }
        Self::send::<serde_json::Value>(url, rb).await.map(|_| ())
    }
}
