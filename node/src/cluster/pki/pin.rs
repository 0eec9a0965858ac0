//! CA pins in join tokens (issue 11, item 3; kubeadm's and k3s's pattern): a join token is
//! `<secret>:sha256:<hex>`, the hash being [`super::ca_hash`] of the cluster CA. A joiner that
//! dials the cluster over TLS accepts only a server whose chain holds the CA with that hash
//! and whose certificate that CA signed for the address dialled ([`pinned_client_config`]), so
//! a stranger posing as the cluster never sees the secret: the handshake fails before any byte
//! of the request is sent.
//!
//! Layer: part of `pki` (rustls only).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{provider, PkiError};

/// What a refused server's error says (the joiner looks for it to explain the refusal).
pub const PIN_MISMATCH: &str = "the server's CA is not the one the join token names";

const PIN_SEPARATOR: &str = ":sha256:";

/// The secret of a join token and its CA pin (`sha256:<hex>`), if it carries one.
pub fn split_join_token(token: &str) -> (&str, Option<&str>) {
    match token.find(PIN_SEPARATOR) {
        Some(i) => (&token[..i], Some(&token[i + 1..])),
        None => (token, None),
    }
}

/// The join token an operator is given: the secret with the CA pin after it.
pub fn join_token_with_pin(secret: &str, pin: &str) -> String {
    format!("{secret}:{pin}")
}

/// `sha256:<hex>` of a DER certificate.
fn der_hash(der: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

/// The certificate in `chain` whose hash is `pin`, as PEM (what `rackd login` keeps after a
/// pinned handshake: the server presents its CA after its own certificate).
pub fn pinned_ca_pem(chain: &[CertificateDer<'_>], pin: &str) -> Option<String> {
    use base64::Engine;
    let pin = pin.to_ascii_lowercase();
    let der = chain.iter().find(|c| der_hash(c) == pin)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Some(pem)
}

/// A TLS client that accepts a server only if the chain it presents holds the CA whose hash
/// is `pin` and its certificate is that CA's, for the name dialled.
pub fn pinned_client_config(pin: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let verifier = Arc::new(PinnedCa {
        pin: pin.to_ascii_lowercase(),
        provider: provider(),
    });
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| der_hash(c) == self.pin)
            .ok_or_else(|| rustls::Error::General(format!("{PIN_MISMATCH} ({})", self.pin)))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
