//! `DIR/node.json`: who this node is (its id, and how far bootstrap or join got).
//!
//! Written atomically (temp file + rename + fsync) before the step it records is acted on, so a
//! crash at any point resumes instead of re-initializing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the identity file format.
pub const IDENTITY_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// This node created the cluster.
    Bootstrap,
    /// This node joined through `join_url`.
    Join { join_url: String, learner: bool },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub version: u32,
    pub node_id: u64,
    pub origin: Origin,
    /// Bootstrap finished (cluster initialized and the Bootstrap command applied) or join
    /// finished (the leader accepted this node into the membership).
    pub complete: bool,
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The cluster removed this node (see `removal`): it must not start again on this data.
    #[serde(default)]
    pub removed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid identity file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} has identity format {found}, expected {IDENTITY_VERSION}")]
    Version { path: PathBuf, found: u32 },
}

impl Identity {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("node.json")
    }

    pub fn load(dir: &Path) -> Result<Option<Self>, IdentityError> {
        let path = Self::path(dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        let id: Identity =
            serde_json::from_slice(&text).map_err(|source| IdentityError::Parse {
                path: path.clone(),
                source,
            })?;
        if id.version != IDENTITY_VERSION {
            return Err(IdentityError::Version {
                path,
                found: id.version,
            });
        }
        Ok(Some(id))
    }

    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let path = Self::path(dir);
        let tmp = dir.join("node.json.tmp");
        let w = |source| IdentityError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).expect("identity serializes");
        std::fs::write(&tmp, body).map_err(w)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(w)?;
        std::fs::rename(&tmp, &path).map_err(w)?;
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(w)?;
        Ok(())
    }
}
