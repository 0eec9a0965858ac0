//! What the HTTP boot server saw while its node could not reach the cluster's leader (a site
//! cut off from the voters): a deploying machine fetched its script, or its installer called
//! back with a token this node's replica confirms. Each report is kept on disk
//! (`DATA_DIR/outbox/`, written and synced before the machine is answered) and delivered when
//! the cluster is reachable again, also after a restart; a report apply refuses (the deploy
//! was cancelled meanwhile) is dropped with a warning.
//!
//! Secrets stay sealed: an install callback is kept as the machine's deploy token sealed for
//! its location (the form the replica already holds), opened with the location key only to
//! deliver it.
//!
//! Layer: part of `http_boot`; depends on `cluster`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::{Command, Secret};
use rackd_types::ApiError;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;

/// One report a location node owes the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// The deploying machine `mac` fetched its deploy script from node `node`.
    ScriptServed { mac: String, node: u64 },
    /// The installer of machine `mac` called back with its one-time token (checked against
    /// this node's replica), kept sealed for the machine's location.
    InstallCallback { mac: String, sealed_token: String },
}

impl Report {
    /// The file the report is kept in: one per kind and machine (a repeat replaces it),
    /// named so that a machine's script fetch is delivered before its callback.
    fn file_name(&self) -> String {
        let (kind, mac) = match self {
            Report::ScriptServed { mac, .. } => ("1-served", mac),
            Report::InstallCallback { mac, .. } => ("2-callback", mac),
        };
        format!("{kind}-{}.json", mac.replace(':', ""))
    }
}

pub struct Outbox {
    dir: PathBuf,
    wake: tokio::sync::Notify,
}

/// How often kept reports are offered again.
const RETRY: Duration = Duration::from_secs(2);

impl Outbox {
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// Keep `r` on disk (synced, so an answered machine's report survives a crash) and offer
    /// it now.
    pub async fn put(&self, r: &Report) -> std::io::Result<()> {
        self.keep(r).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Keep `r` on disk without offering it: its sender is delivering it directly, and
    /// [`Outbox::remove`]s it once delivered or [`Outbox::wake`]s the outbox if it could not.
    /// Written before the machine is answered, so anything the machine does next (its
    /// install callback) is kept after it and delivered after it.
    pub async fn keep(&self, r: &Report) -> std::io::Result<()> {
        let (dir, name) = (self.dir.clone(), r.file_name());
        let body = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(&name))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// Forget `r` (delivered by its sender).
    pub fn remove(&self, r: &Report) {
        let _ = std::fs::remove_file(self.dir.join(r.file_name()));
    }

    /// Offer the kept reports now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The kept reports (unreadable files are skipped and left for an operator).
    pub fn pending(&self) -> Vec<(PathBuf, Report)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<(PathBuf, Report)> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let r = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
                Some((p, r))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Deliver kept reports until this task is aborted: at start, when one is added, and every
    /// [`RETRY`] while some remain.
    pub async fn run(self: Arc<Self>, cluster: Arc<dyn Cluster>) {
        loop {
            let pending = self.pending();
            for (path, r) in &pending {
                match deliver(cluster.as_ref(), r).await {
                    Ok(()) => {
                        tracing::info!(report = ?kind(r), "kept report delivered");
                        let _ = std::fs::remove_file(path);
                    }
                    Err(e) if crate::services::outcome_unknown(&e) => {
                        tracing::debug!(error = %e.message, "kept report not delivered yet");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(report = ?kind(r), error = %e.message, "kept report refused; dropped");
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            if self.pending().is_empty() {
                self.wake.notified().await;
            } else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// What a report is, for logs (never its token).
fn kind(r: &Report) -> String {
    match r {
        Report::ScriptServed { mac, .. } => format!("script served to {mac}"),
        Report::InstallCallback { mac, .. } => format!("install callback of {mac}"),
    }
}

/// Propose the report's command, as the HTTP boot server would have.
async fn deliver(cluster: &dyn Cluster, r: &Report) -> Result<(), ApiError> {
    match r {
        Report::ScriptServed { mac, node } => {
            let cmd = Command::BootScriptServed {
                mac: mac.clone(),
                node: *node,
            };
            cluster
                .propose_anywhere(&format!("node:{}", cluster.id()), None, cmd)
                .await
                .map(|_| ())
        }
        Report::InstallCallback { mac, sealed_token } => {
            let token = super::open_sealed_token(cluster, sealed_token).await?;
            let cmd = Command::DeployDone {
                mac: mac.clone(),
                token: Secret(token),
            };
            let key = cmd.internal_key();
            cluster
                .propose_anywhere(&format!("machine:{mac}"), key, cmd)
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_are_kept_one_per_kind_and_machine_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let served = Report::ScriptServed {
            mac: "52:54:00:00:00:01".into(),
            node: 2,
        };
        let cb = |t: &str| Report::InstallCallback {
            mac: "52:54:00:00:00:01".into(),
            sealed_token: t.into(),
        };
        o.put(&served).await.unwrap();
        o.put(&cb("rackd-sealed:v1:deploy-token:1:aa"))
            .await
            .unwrap();
        o.put(&cb("rackd-sealed:v1:deploy-token:1:bb"))
            .await
            .unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let kept: Vec<Report> = o.pending().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            kept,
            vec![served.clone(), cb("rackd-sealed:v1:deploy-token:1:bb")]
        );
        // A damaged file is left alone, not delivered.
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        assert_eq!(o.pending().len(), 2);
        // A report its sender delivered itself is forgotten.
        o.remove(&served);
        let kept: Vec<Report> = o.pending().into_iter().map(|(_, r)| r).collect();
        assert_eq!(kept, vec![cb("rackd-sealed:v1:deploy-token:1:bb")]);
    }

    /// A script fetch kept quietly before the machine was answered is delivered before the
    /// callback the machine sends after it, whichever was written to disk last.
    #[tokio::test]
    async fn a_fetch_kept_before_its_callback_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let served = Report::ScriptServed {
            mac: "52:54:00:00:00:02".into(),
            node: 4,
        };
        let cb = Report::InstallCallback {
            mac: "52:54:00:00:00:02".into(),
            sealed_token: "rackd-sealed:v1:deploy-token:1:cc".into(),
        };
        o.put(&cb).await.unwrap();
        o.keep(&served).await.unwrap();
        let kept: Vec<Report> = o.pending().into_iter().map(|(_, r)| r).collect();
        assert_eq!(kept, vec![served, cb]);
    }
}
