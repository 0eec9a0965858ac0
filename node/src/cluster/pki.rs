//! The cluster's PKI (DESIGN §7): one CA per cluster, created at bootstrap, and one certificate
//! per node naming the node and the cluster, issued from a key the node generated itself (it
//! sends a CSR; the CA decides what the certificate says, whatever the CSR asks for). Pure
//! functions over PEM text plus the rustls configurations that enforce it: a server that
//! requires a client certificate from this CA, a client that accepts only this CA's node
//! certificates, and [`peer_node_id`] to learn which member a verified connection speaks for.
//!
//! Names: a node's certificate carries one DNS name, `node-<id>.<cluster id>.rackd` ([`node_name`]),
//! which clients verify as the server name whatever address they dialled (Consul's
//! `server.<dc>.consul` pattern), and from which servers read the caller's node id.
//!
//! Where the keys live: see [`Pki`]; the CA key is held by voters only, a location learner
//! gets the CA certificate and its own certificate, never the CA key.
//!
//! Layer: a leaf of `cluster` (rcgen, rustls, x509-parser; no crate imports besides `secrets`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a node certificate is valid; rotation (a later step) renews it well before.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew between nodes tolerated at issue time (`not_before` is set this far back).
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("not a valid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(what: &'static str, detail: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        what,
        detail: detail.to_string(),
    }
}

/// The DNS name in node `node_id`'s certificate of cluster `cluster_id`.
pub fn node_name(node_id: u64, cluster_id: &str) -> String {
    format!("node-{node_id}.{cluster_id}.rackd")
}

/// A cluster id usable in a DNS name (it is one label of [`node_name`]).
fn check_cluster_id(cluster_id: &str) -> Result<(), PkiError> {
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 63
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid("cluster id", cluster_id))
    }
}

fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

fn random_serial() -> rcgen::SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[0] &= 0x7f; // positive
    rcgen::SerialNumber::from_slice(&b)
}

/// The cluster CA: its certificate and key, PEM.
#[derive(Clone)]
pub struct CaBundle {
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CaBundle {
    /// A new CA for `cluster_id` (ECDSA P-256, valid [`CA_VALIDITY`], may sign node
    /// certificates only: path length 0).
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<CaBundle, PkiError> {
        check_cluster_id(cluster_id)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "rackd");
        dn.push(DnType::CommonName, format!("rackd cluster {cluster_id} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        validity(&mut params, now, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(CaBundle {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CaBundle, PkiError> {
        // Both must parse, and the key must be the certificate's.
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid("CA key", e))?;
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(|e| invalid("CA certificate", e))?;
        let der = first_cert(cert_pem, "CA certificate")?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| invalid("CA certificate", e))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                "CA key",
                "it does not belong to the CA certificate",
            ));
        }
        Ok(CaBundle {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA key (PEM): secret, only ever sent to another voter over mutual TLS.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issue node `node_id`'s certificate from its CSR. Only the CSR's key is used (its
    /// signature proves the node holds it); names, usages and lifetime are the CA's choice.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: u64,
        cluster_id: &str,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        self.issue_for(csr_pem, node_id, cluster_id, None, now)
    }

    /// [`CaBundle::issue`], the certificate also naming the host of the node's API address
    /// (`host:port` or `https://host:port`; an IP address or a DNS name), so that clients that
    /// check names against the address they dial (curl, browsers) accept its API.
    pub fn issue_for(
        &self,
        csr_pem: &str,
        node_id: u64,
        cluster_id: &str,
        api_addr: Option<&str>,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        check_cluster_id(cluster_id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| invalid("certificate signing request", e))?;
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| invalid("CA key", e))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| invalid("CA", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "rackd");
        dn.push(DnType::CommonName, node_name(node_id, cluster_id));
        params.distinguished_name = dn;
        let name = node_name(node_id, cluster_id)
            .try_into()
            .map_err(|e| invalid("node name", e))?;
        params.subject_alt_names = vec![SanType::DnsName(name)];
        if let Some(san) = api_addr.and_then(api_host_san) {
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        validity(&mut params, now, NODE_CERT_VALIDITY);
        Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
    }
}

/// The subject name for the host of an API address (none for a wildcard address or a name
/// that is no valid DNS name).
fn api_host_san(addr: &str) -> Option<SanType> {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let host = match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => return (!sa.ip().is_unspecified()).then_some(SanType::IpAddress(sa.ip())),
        Err(_) => addr.rsplit_once(':').map_or(addr, |(h, _)| h),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return (!ip.is_unspecified()).then_some(SanType::IpAddress(ip));
    }
    host.to_string().try_into().ok().map(SanType::DnsName)
}

/// The SHA-256 of the CA certificate's DER, as a join token carries it: `sha256:<hex>`.
pub fn ca_hash(ca_pem: &str) -> Result<String, PkiError> {
    use sha2::Digest;
    let der = first_cert(ca_pem, "CA certificate")?;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&der))
    ))
}

/// A node's new key (PEM, secret) and its CSR (PEM, public).
pub struct NodeKey {
    pub key_pem: String,
    pub csr_pem: String,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, PkiError> {
        Self::csr_for(KeyPair::generate()?)
    }

    /// A CSR for a key this node generated earlier (a join retried after a restart keeps
    /// its key).
    pub fn from_key_pem(key_pem: &str) -> Result<NodeKey, PkiError> {
        Self::csr_for(KeyPair::from_pem(key_pem).map_err(|e| invalid("node key", e))?)
    }

    fn csr_for(key: KeyPair) -> Result<NodeKey, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key)?;
        Ok(NodeKey {
            key_pem: key.serialize_pem(),
            csr_pem: csr.pem()?,
        })
    }
}

/// Whether `csr_pem` is a well-formed CSR whose signature holds (checked before a join spends
/// its token).
pub fn check_csr(csr_pem: &str) -> Result<(), PkiError> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|_| ())
        .map_err(|e| invalid("certificate signing request", e))
}

fn first_cert(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| invalid(what, "no certificate in the PEM text"))?
        .map_err(|e| invalid(what, e))
}

/// A node certificate must name exactly node `node_id` of `cluster_id`.
fn check_names(cert_pem: &str, node_id: u64, cluster_id: &str) -> Result<(), PkiError> {
    let cert = first_cert(cert_pem, "node certificate")?;
    if peer_node_id(&cert, cluster_id) != Some(node_id) {
        return Err(invalid(
            "node certificate",
            format!("it does not name {}", node_name(node_id, cluster_id)),
        ));
    }
    Ok(())
}

/// A certificate's issue time (`not_before` plus the backdating the CA applies) and expiry.
pub fn cert_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), PkiError> {
    let der = first_cert(cert_pem, "certificate")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| invalid("certificate", e))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp().max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    };
    let v = parsed.validity();
    Ok((at(v.not_before) + BACKDATE, at(v.not_after)))
}

/// Whether `cert_pem` names the host of API address `api_addr` (or the address names no host
/// a certificate could carry: a wildcard).
pub fn names_api_host(cert_pem: &str, api_addr: &str) -> Result<bool, PkiError> {
    let Some(want) = api_host_san(api_addr) else {
        return Ok(true);
    };
    let der = first_cert(cert_pem, "certificate")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| invalid("certificate", e))?;
    let Some(san) = parsed
        .subject_alternative_name()
        .map_err(|e| invalid("certificate", e))?
    else {
        return Ok(false);
    };
    use x509_parser::extensions::GeneralName;
    Ok(san.value.general_names.iter().any(|n| match (n, &want) {
        (GeneralName::DNSName(d), SanType::DnsName(w)) => d.eq_ignore_ascii_case(w.as_str()),
        (GeneralName::IPAddress(b), SanType::IpAddress(ip)) => match ip {
            std::net::IpAddr::V4(v4) => *b == v4.octets().as_slice(),
            std::net::IpAddr::V6(v6) => *b == v6.octets().as_slice(),
        },
        _ => false,
    }))
}

/// The node id a verified peer certificate of cluster `cluster_id` names, if any.
pub fn peer_node_id(cert: &CertificateDer<'_>, cluster_id: &str) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let suffix = format!(".{cluster_id}.rackd");
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => d
            .strip_suffix(&suffix)?
            .strip_prefix("node-")?
            .parse::<u64>()
            .ok(),
        _ => None,
    });
    let id = ids.next()?;
    // A certificate naming two nodes speaks for neither.
    ids.next().is_none().then_some(id)
}

/// What a node holds to speak TLS to its peers: the CA certificate, its own certificate and
/// key (live: [`NodeTls::renewed`] swaps them under every configuration built from this), and
/// whom it is (node id, cluster id). Clones share the live certificate.
#[derive(Clone)]
pub struct NodeTls {
    pub cluster_id: String,
    pub node_id: u64,
    pub ca_pem: String,
    live: Arc<live::LiveCert>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// rustls over *ring*. rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (which its aws-lc-rs provider has); aws-lc-rs would add a CMake build of a C library to
/// every clean build on our 2-core machines. Revisit with the API's TLS (a later step).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl NodeTls {
    pub fn new(
        cluster_id: &str,
        node_id: u64,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<NodeTls, PkiError> {
        check_cluster_id(cluster_id)?;
        check_names(cert_pem, node_id, cluster_id)?;
        let t = NodeTls {
            cluster_id: cluster_id.to_string(),
            node_id,
            ca_pem: ca_pem.to_string(),
            live: live::LiveCert::new(live::Current::build(ca_pem, cert_pem, key_pem)?),
        };
        // The configurations must build.
        t.server_config()?;
        t.client_config()?;
        Ok(t)
    }

    /// This node's certificate in use (PEM).
    pub fn cert_pem(&self) -> String {
        self.live.get().cert_pem.clone()
    }

    /// Use a renewed certificate and its key from the next handshake on, in every TLS
    /// configuration built from this node's [`NodeTls`]. Refused (nothing changes) unless it
    /// names this node, chains to this cluster's CA and `key_pem` is its key.
    pub fn renewed(&self, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        self.live.set(self.renewal(cert_pem, key_pem)?);
        Ok(())
    }

    /// Whether [`NodeTls::renewed`] would take this pair (nothing changes).
    pub fn check_renewal(&self, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        self.renewal(cert_pem, key_pem).map(|_| ())
    }

    fn renewal(&self, cert_pem: &str, key_pem: &str) -> Result<live::Current, PkiError> {
        check_names(cert_pem, self.node_id, &self.cluster_id)?;
        self.check_issued_by_ca(cert_pem)?;
        live::Current::build(&self.ca_pem, cert_pem, key_pem)
    }

    /// Whether this cluster's CA signed `cert_pem` for this node (as a peer would verify it).
    fn check_issued_by_ca(&self, cert_pem: &str) -> Result<(), PkiError> {
        use rustls::client::danger::ServerCertVerifier;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
                .build()
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        let cert = first_cert(cert_pem, "node certificate")?;
        verifier
            .verify_server_cert(
                &cert,
                &[],
                &self.server_name(self.node_id),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| invalid("node certificate", e))
    }

    /// When the certificate in use was issued and when it expires.
    pub fn validity(&self) -> Result<(SystemTime, SystemTime), PkiError> {
        cert_validity(&self.cert_pem())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, PkiError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(first_cert(&self.ca_pem, "CA certificate")?)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(roots))
    }

    /// A server that completes a handshake only with a client certificate from this CA
    /// (which node it names is the caller's to check, with [`peer_node_id`]).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
                .build()
                .map_err(|e| PkiError::Tls(e.to_string()))?;
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(live::PeerServerCert(self.live.clone())));
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }

    /// A client that presents this node's certificate and accepts only a server certificate
    /// from this CA; connect with [`NodeTls::server_name`] of the node it means to reach.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let mut c = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_cert_resolver(Arc::new(live::PeerClientCert(self.live.clone())));
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }

    /// The API's TLS server: this node's certificate (with the CA certificate after it, so a
    /// client holding only the CA's hash can check it), no client certificate asked for.
    pub fn api_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        self.api_server_config_with(None)
    }

    /// [`NodeTls::api_server_config`], presenting `byo` (the operator's certificate) to
    /// clients that name a server other than a rackd node.
    pub fn api_server_config_with(
        &self,
        byo: Option<Arc<byo::ByoCert>>,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(live::ApiServerCert(self.live.clone(), byo)));
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(c))
    }

    /// The name a client verifies when it dials node `node_id` of this cluster.
    pub fn server_name(&self, node_id: u64) -> ServerName<'static> {
        ServerName::try_from(node_name(node_id, &self.cluster_id))
            .expect("node names are valid DNS names (cluster ids are checked)")
    }
}

const NEXT_KEY: &str = "node.next.key";
const NEXT_CERT: &str = "node.next.pem";

/// The PKI files of a data directory, in `pki/` (mode 0700):
/// - `ca.pem`: the cluster CA certificate (every node);
/// - `ca.key`: the CA key (mode 0600), on voters only: the node that bootstrapped the
///   cluster creates it, and only voters will be handed it. A location learner never holds
///   it, so it cannot issue certificates;
/// - `node.pem`, `node.key` (0600): this node's certificate and the key it generated;
///   `node.next.*` only while a renewal replaces them.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn in_data_dir(data_dir: &Path) -> Pki {
        Pki {
            dir: data_dir.join("pki"),
        }
    }

    fn read(&self, name: &str) -> Result<Option<String>, PkiError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PkiError::Io { path, source }),
        }
    }

    fn write(&self, name: &str, text: &str, secret: bool) -> Result<(), PkiError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.dir))?;
        let path = self.dir.join(name);
        let mode = if secret { 0o600 } else { 0o644 };
        super::secrets::write_file_atomically(&path, text.trim_end(), mode).map_err(io(&path))
    }

    /// The CA with its key, if this node holds it.
    pub fn load_ca(&self) -> Result<Option<CaBundle>, PkiError> {
        match (self.read("ca.pem")?, self.read("ca.key")?) {
            (Some(c), Some(k)) => CaBundle::from_pem(&c, &k).map(Some),
            _ => Ok(None),
        }
    }

    pub fn save_ca(&self, ca: &CaBundle) -> Result<(), PkiError> {
        self.write("ca.key", &ca.key_pem, true)?;
        self.write("ca.pem", &ca.cert_pem, false)
    }

    /// Keep the CA key another voter handed over, after checking it belongs to this node's CA
    /// certificate.
    pub fn adopt_ca_key(&self, key_pem: &str) -> Result<CaBundle, PkiError> {
        let cert = self
            .read("ca.pem")?
            .ok_or_else(|| invalid("PKI directory", "it holds no CA certificate"))?;
        let ca = CaBundle::from_pem(&cert, key_pem)?;
        self.write("ca.key", key_pem, true)?;
        Ok(ca)
    }

    /// This node's TLS material, once it has a certificate.
    pub fn load_node(&self, cluster_id: &str, node_id: u64) -> Result<Option<NodeTls>, PkiError> {
        self.finish_renewal()?;
        match (
            self.read("ca.pem")?,
            self.read("node.pem")?,
            self.read("node.key")?,
        ) {
            (Some(ca), Some(cert), Some(key)) => {
                NodeTls::new(cluster_id, node_id, &ca, &cert, &key).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Keep a key generated for a CSR (before its certificate exists).
    pub fn save_node_key(&self, key_pem: &str) -> Result<(), PkiError> {
        self.write("node.key", key_pem, true)
    }

    pub fn node_key(&self) -> Result<Option<String>, PkiError> {
        self.read("node.key")
    }

    /// Keep a renewed key and certificate. Both are written beside the pair in use
    /// (`node.next.key`, then `node.next.pem`) and then renamed over it, key first;
    /// [`Pki::load_node`] finishes a renewal a crash interrupted, or drops one whose
    /// certificate was not yet written, so the pair it loads always matches.
    pub fn save_renewed(&self, key_pem: &str, cert_pem: &str) -> Result<(), PkiError> {
        self.write(NEXT_KEY, key_pem, true)?;
        self.write(NEXT_CERT, cert_pem, false)?;
        self.finish_renewal()
    }

    fn finish_renewal(&self) -> Result<(), PkiError> {
        let exists = |name: &str| self.dir.join(name).exists();
        let io = |path: PathBuf| move |source| PkiError::Io { path, source };
        match (exists(NEXT_KEY), exists(NEXT_CERT)) {
            (false, false) => return Ok(()),
            // The certificate never arrived: the pair in use is untouched.
            (true, false) => {
                let p = self.dir.join(NEXT_KEY);
                std::fs::remove_file(&p).map_err(io(p))?;
            }
            (key, true) => {
                for (from, to) in [(NEXT_KEY, "node.key"), (NEXT_CERT, "node.pem")] {
                    if from == NEXT_KEY && !key {
                        continue; // renamed before the interruption
                    }
                    let (from, to) = (self.dir.join(from), self.dir.join(to));
                    std::fs::rename(&from, &to).map_err(io(to))?;
                }
            }
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(self.dir.clone()))
    }

    /// Store the CA certificate and this node's certificate (its key is already saved).
    pub fn save_node_cert(&self, ca_pem: &str, cert_pem: &str) -> Result<(), PkiError> {
        self.write("ca.pem", ca_pem, false)?;
        self.write("node.pem", cert_pem, false)
    }
}

pub mod byo;
mod live;
mod pin;
pub use pin::{
    join_token_with_pin, pinned_ca_pem, pinned_client_config, split_join_token, PIN_MISMATCH,
};

#[cfg(test)]
mod tests;
