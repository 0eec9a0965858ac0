//! Blob transfers of the client: uploads streamed from a file (never read into memory, with
//! progress), downloads streamed to a file and verified against their digest before they are
//! renamed into place.
//!
//! Part of the leaf `client` module: no crate imports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rackd_types::{Blob, Digest};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{api_error, Client, ClientError};

const CHUNK: usize = 256 * 1024;

fn local(path: &Path, e: impl std::fmt::Display) -> ClientError {
    ClientError::Local(format!("{}: {e}", path.display()))
}

/// The digest and size of a file, read in chunks (blocking).
pub fn digest_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Digest::from_sha256(&h.finalize().into()), n))
}

/// Reports bytes sent (or received) so far and the total.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

impl Client {
    /// Upload `file` as a blob: its digest is computed first, then the body streams; the
    /// answer comes once enough voters hold it. A 503 (an election, or copies still under
    /// way) is retried for the client's retry time; the node that has the bytes already does
    /// not read them again.
    pub async fn put_blob(&self, file: &Path, progress: Progress) -> Result<Blob, ClientError> {
        let p = file.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || digest_file(&p))
            .await
            .map_err(|e| local(file, e))?
            .map_err(|e| local(file, e))?;
        let url = format!("{}/v1/blobs/{digest}", self.base());
        let deadline = tokio::time::Instant::now() + self.retry_for;
        loop {
            let f = tokio::fs::File::open(file)
                .await
                .map_err(|e| local(file, e))?;
            let progress = progress.clone();
            let chunks = futures::stream::unfold((f, 0u64), move |(mut f, sent)| {
                let progress = progress.clone();
                async move {
                    let mut buf = vec![0u8; CHUNK];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(k) => {
                            buf.truncate(k);
                            let sent = sent + k as u64;
                            progress(sent, size);
                            Some((Ok::<_, std::io::Error>(buf), (f, sent)))
                        }
                        Err(e) => Some((Err(e), (f, sent))),
                    }
                }
            });
            let mut rb = self
                .http
                .put(&url)
                .header("content-type", "application/octet-stream")
                .header("content-length", size)
                .body(reqwest::Body::wrap_stream(chunks));
            if let Some(t) = &self.token {
                rb = rb.bearer_auth(t);
            }
            let resp = rb.send().await.map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                let body = resp.text().await.unwrap_or_default();
                return serde_json::from_str(&body).map_err(|_| ClientError::Decode {
                    url,
                    status,
                    body,
                });
            }
            let e = api_error(resp).await;
            let wait = match &e {
                ClientError::Api {
                    status: 503,
                    retry_after,
                    ..
                } => retry_after.unwrap_or(Duration::from_secs(1)),
                _ => return Err(e),
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(e);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Download blob `digest` into `out` (through `out.part`, renamed only once the bytes
    /// hash to the digest). Returns the size.
    pub async fn get_blob(
        &self,
        digest: &Digest,
        out: &Path,
        progress: Progress,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/v1/blobs/{digest}", self.base());
        let resp = self.send_raw(self.http.get(&url), &url).await?;
        let part = out.with_extension("part");
        let mut h = sha2::Sha256::new();
        let result = async {
            let n = body_to_file(resp, &url, &part, progress, |c| h.update(c)).await?;
            let got = Digest::from_sha256(&h.finalize().into());
            if &got != digest {
                return Err(ClientError::Local(format!(
                    "the download of {digest} hashes to {got}: discarded"
                )));
            }
            tokio::fs::rename(&part, out)
                .await
                .map_err(|e| local(out, e))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result
    }
}

/// Stream `resp`'s body (from `url`) into a new file at `path`, showing each chunk to `seen`
/// and the bytes so far to `progress`, then make it durable; its size.
pub(super) async fn body_to_file(
    resp: reqwest::Response,
    url: &str,
    path: &Path,
    progress: Progress,
    mut seen: impl FnMut(&[u8]),
) -> Result<u64, ClientError> {
    let total = resp.content_length().unwrap_or(0);
    let mut f = tokio::fs::File::create(path)
        .await
        .map_err(|e| local(path, e))?;
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(c) = body.next().await {
        let c = c.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        seen(&c);
        n += c.len() as u64;
        f.write_all(&c).await.map_err(|e| local(path, e))?;
        progress(n, total);
    }
    f.sync_all().await.map_err(|e| local(path, e))?;
    Ok(n)
}
