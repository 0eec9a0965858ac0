//! `POST /v1/backup` from the client: the backup streamed into a file, with progress. The
//! caller checks the file (the `backup` format) before it renames it into place.
//!
//! Part of the leaf `client` module: no crate imports.

use std::path::Path;

use rackd_types::CreateBackup;

use super::blobs::{body_to_file, Progress};
use super::{Client, ClientError};

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
        let url = format!("{}/v1/backup", self.base());
        let body = serde_json::to_vec(&CreateBackup {
            passphrase: passphrase.to_string(),
        })?;
        let rb = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        let resp = self.send_raw(rb, &url).await?;
        body_to_file(resp, &url, part, progress, |_| {}).await
    }
}
