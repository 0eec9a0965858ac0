//! `POST /v1/backup` from the client: the backup streamed into a file, with progress. The
//! caller checks the file (the `backup` format) before it renames it into place.
//!
//! Part of the leaf `client` module: no crate imports.

use std::path::Path;

use futures::StreamExt;
use rackd_types::CreateBackup;
use tokio::io::AsyncWriteExt;

use super::blobs::Progress;
use super::{api_error, Client, ClientError};

impl Client {
    /// Ask the node for a backup sealed with `passphrase` and write it to `part` (made
    /// durable); its size. The node needs a while (a linearizable read, then encoding), so
    /// only the connection is timed, not the answer.
    pub async fn download_backup(
        &self,
        passphrase: &str,
        part: &Path,
        progress: Progress,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/v1/backup", self.base);
        let body = serde_json::to_vec(&CreateBackup {
            passphrase: passphrase.to_string(),
        })?;
        let mut rb = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        let local = |e: std::io::Error| ClientError::Local(format!("{}: {e}", part.display()));
        let total = resp.content_length().unwrap_or(0);
        let mut f = tokio::fs::File::create(part).await.map_err(local)?;
        let mut n = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(c) = stream.next().await {
            let c = c.map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
            n += c.len() as u64;
            f.write_all(&c).await.map_err(local)?;
            progress(n, total);
        }
        f.sync_all().await.map_err(local)?;
        Ok(n)
    }
}
