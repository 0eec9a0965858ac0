//! This node's certificate as the TLS configurations see it at every handshake. The peer
//! server, the peer client and the API server resolve it per handshake from one [`LiveCert`],
//! so a renewed certificate takes effect without a restart (connections already open keep the
//! certificate they were made with until they close; both stay valid until they expire).
//!
//! Layer: part of `pki`; rustls only.

use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{first_cert, invalid, provider, PkiError};

/// One certificate with its key, ready for both uses.
pub(super) struct Current {
    pub cert_pem: String,
    /// The node certificate alone (peer connections: both ends trust the CA).
    peer: Arc<CertifiedKey>,
    /// The node certificate followed by the CA's (API clients may hold only the CA's hash).
    api: Arc<CertifiedKey>,
}

impl Current {
    /// Both chains; refused when the key is not the certificate's.
    pub fn build(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Current, PkiError> {
        let cert = first_cert(cert_pem, "node certificate")?;
        let key = || {
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid("node key", e))
        };
        let certified = |chain: Vec<CertificateDer<'static>>| {
            CertifiedKey::from_der(chain, key()?, &provider())
                .map(Arc::new)
                .map_err(|e| invalid("node key", format!("{e} (is it this certificate's key?)")))
        };
        Ok(Current {
            peer: certified(vec![cert.clone()])?,
            api: certified(vec![cert, first_cert(ca_pem, "CA certificate")?])?,
            cert_pem: cert_pem.to_string(),
        })
    }
}

use rustls::pki_types::pem::PemObject;

/// The certificate in use, swapped whole by rotation.
pub(super) struct LiveCert {
    current: RwLock<Arc<Current>>,
}

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCert").finish_non_exhaustive()
    }
}

impl LiveCert {
    pub fn new(c: Current) -> Arc<LiveCert> {
        Arc::new(LiveCert {
            current: RwLock::new(Arc::new(c)),
        })
    }

    pub fn get(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, c: Current) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
    }
}

/// The peer server's certificate.
#[derive(Debug)]
pub(super) struct PeerServerCert(pub Arc<LiveCert>);

impl rustls::server::ResolvesServerCert for PeerServerCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().peer.clone())
    }
}

/// The API server's chain: the operator's certificate for clients that name a server other
/// than a rackd node (when one was brought, `super::byo`), else the node's.
#[derive(Debug)]
pub(super) struct ApiServerCert(pub Arc<LiveCert>, pub Option<Arc<super::byo::ByoCert>>);

impl rustls::server::ResolvesServerCert for ApiServerCert {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match &self.1 {
            Some(byo) if super::byo::wants_byo(hello.server_name()) => Some(byo.current()),
            _ => Some(self.0.get().api.clone()),
        }
    }
}

/// The certificate a peer client presents.
#[derive(Debug)]
pub(super) struct PeerClientCert(pub Arc<LiveCert>);

impl rustls::client::ResolvesClientCert for PeerClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().peer.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
