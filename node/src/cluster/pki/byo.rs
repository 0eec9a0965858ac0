//! A serving certificate the operator brings for the API (`--api-cert`, `--api-key`: PEM
//! files, the chain and its key), for clients that dial the API by a DNS name and trust their
//! own CA. The API presents it to a client that names a server (SNI) other than a rackd node
//! name; a client that names none (it dialled an IP address, as members dial each other's
//! advertised API address) or a node name gets the node's certificate from the cluster CA, so
//! members, `rackd login --ca-pin` and joins keep verifying against the cluster CA. The files
//! are read again when they change (checked at most every [`RECHECK`]), so replacing them
//! renews the certificate without a restart; files that do not load keep the previous pair.
//!
//! Layer: part of `pki`; rustls only.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{invalid, provider, PkiError};

/// How often the files are looked at for a change.
pub const RECHECK: Duration = Duration::from_secs(2);

struct Loaded {
    checked: Instant,
    modified: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

pub struct ByoCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ByoCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByoCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn modified(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<CertifiedKey>, PkiError> {
    let io = |p: &std::path::Path| {
        let path = p.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    let chain_pem = std::fs::read(cert).map_err(io(cert))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("API certificate", e))?;
    if chain.is_empty() {
        return Err(invalid("API certificate", "no certificate in the file"));
    }
    let key_pem = std::fs::read(key).map_err(io(key))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("API key", e))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| invalid("API key", format!("{e} (is it the certificate's key?)")))
}

impl ByoCert {
    /// Load the pair now (a start with files that do not load fails).
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Arc<ByoCert>, PkiError> {
        let loaded = Loaded {
            checked: Instant::now(),
            modified: (modified(&cert), modified(&key)),
            key: load(&cert, &key)?,
        };
        Ok(Arc::new(ByoCert {
            cert,
            key,
            loaded: Mutex::new(loaded),
        }))
    }

    /// The pair to present, read again if the files changed since they were last looked at.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= RECHECK {
            l.checked = Instant::now();
            let now = (modified(&self.cert), modified(&self.key));
            if now != l.modified {
                match load(&self.cert, &self.key) {
                    Ok(k) => {
                        l.key = k;
                        l.modified = now;
                        tracing::info!(cert = %self.cert.display(), "the API serves the replaced certificate");
                    }
                    // Half-written files are tried again at the next check.
                    Err(e) => {
                        tracing::warn!(error = %e, "the replaced API certificate does not load; keeping the previous one")
                    }
                }
            }
        }
        l.key.clone()
    }
}

/// Whether a client hello naming `sni` gets the operator's certificate: it names a server,
/// and not a rackd node.
pub fn wants_byo(sni: Option<&str>) -> bool {
    sni.is_some_and(|n| !n.ends_with(".rackd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_naming_another_server_get_the_operators_certificate() {
        assert!(!wants_byo(None), "an IP dialled: members, the harness");
        assert!(!wants_byo(Some("node-2.0123abcd.rackd")), "a node name");
        assert!(wants_byo(Some("api.corp.test")));
    }

    #[test]
    fn files_that_do_not_load_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        assert!(ByoCert::new(c.clone(), k.clone()).is_err(), "missing files");
        std::fs::write(&c, "not a certificate").unwrap();
        std::fs::write(&k, "not a key").unwrap();
        assert!(ByoCert::new(c, k).is_err());
    }
}
