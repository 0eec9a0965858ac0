//! The PKI against real rustls handshakes over TCP: who is accepted, who is refused, and
//! which node a verified connection speaks for.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CID: &str = "0123456789abcdef";

fn now() -> SystemTime {
    SystemTime::now()
}

/// A node of a cluster whose CA is `ca`: a key it generated, and the certificate `ca` issued.
fn node(ca: &CaBundle, cluster_id: &str, id: u64) -> NodeTls {
    let k = NodeKey::generate().unwrap();
    let cert = ca.issue(&k.csr_pem, id, cluster_id, now()).unwrap();
    NodeTls::new(cluster_id, id, &ca.cert_pem, &cert, &k.key_pem).unwrap()
}

/// Serve one TLS connection as `server`; the node id the client's certificate names, or the
/// handshake's error.
async fn serve_one(
    server: &NodeTls,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Option<u64>, String>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config().unwrap());
    let cid = server.cluster_id.clone();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut tls = acceptor.accept(s).await.map_err(|e| e.to_string())?;
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| peer_node_id(c, &cid));
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        Ok(id)
    });
    (addr, h)
}

/// Dial `addr` with `config`, verifying the server as `name`; ping-pong once.
async fn dial(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<(), String> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn members_of_one_cluster_verify_each_other_and_learn_who_called() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let (n2, n5) = (node(&ca, CID, 2), node(&ca, CID, 5));
    let (addr, server) = serve_one(&n2).await;
    dial(addr, n5.client_config().unwrap(), n5.server_name(2))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap(), Ok(Some(5)));
}

#[tokio::test]
async fn a_client_from_another_ca_or_without_a_certificate_is_refused() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let n2 = node(&ca, CID, 2);
    // Same cluster id and node id, another CA: an attacker who made their own.
    let other = CaBundle::generate(CID, now()).unwrap();
    let forged = node(&other, CID, 5);
    let (addr, server) = serve_one(&n2).await;
    // The forger trusts our CA for the server, and presents its own certificate.
    let forger = NodeTls {
        ca_pem: ca.cert_pem.clone(),
        ..forged.clone()
    };
    let _ = dial(addr, forger.client_config().unwrap(), forger.server_name(2)).await;
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // No client certificate at all (a plaintext-era client with TLS bolted on).
    let (addr, server) = serve_one(&n2).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first_cert(&ca.cert_pem, "ca").unwrap()).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = dial(addr, Arc::new(anonymous), n2.server_name(2)).await;
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_ca_or_another_node() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let n5 = node(&ca, CID, 5);
    let impostor = node(&CaBundle::generate(CID, now()).unwrap(), CID, 2);
    let (addr, _server) = serve_one(&impostor).await;
    let err = dial(addr, n5.client_config().unwrap(), n5.server_name(2))
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    // The right CA, but node 3 answers where node 2 was dialled (a stale address).
    let n3 = node(&ca, CID, 3);
    let (addr, _server) = serve_one(&n3).await;
    let err = dial(addr, n5.client_config().unwrap(), n5.server_name(2))
        .await
        .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("name"),
        "{err}"
    );
}

#[test]
fn the_ca_decides_what_a_certificate_names_not_the_csr() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    // A CSR asking to be node 1 (the bootstrap voter) and a wildcard.
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec![node_name(1, CID), format!("*.{CID}.rackd")]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue(&csr, 9, CID, now()).unwrap();
    let der = first_cert(&cert, "cert").unwrap();
    assert_eq!(peer_node_id(&der, CID), Some(9));
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, vec![format!("DNSName({})", node_name(9, CID))]);
    assert!(!parsed.is_ca(), "a node certificate is never a CA");
    // Another cluster's id does not match.
    assert_eq!(peer_node_id(&der, "fedcba9876543210"), None);
}

#[test]
fn bad_requests_and_mismatched_material_are_refused() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let k = NodeKey::generate().unwrap();
    assert!(ca.issue("garbage", 2, CID, now()).is_err());
    // A CSR whose signature does not match its key (one byte flipped in the signature).
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let mut der = csr.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_lines(&der)
    );
    assert!(ca.issue(&tampered, 2, CID, now()).is_err());
    // Cluster ids go into DNS names.
    assert!(CaBundle::generate("Not A Label", now()).is_err());
    assert!(ca.issue(&k.csr_pem, 2, "a.b", now()).is_err());
    // A certificate for node 2 does not make a NodeTls for node 3.
    let cert = ca.issue(&k.csr_pem, 2, CID, now()).unwrap();
    assert!(NodeTls::new(CID, 3, &ca.cert_pem, &cert, &k.key_pem).is_err());
    assert!(NodeTls::new(CID, 2, &ca.cert_pem, &cert, &k.key_pem).is_ok());
    // Another node's key with this certificate: the TLS config refuses the pair.
    let other = NodeKey::generate().unwrap();
    assert!(NodeTls::new(CID, 2, &ca.cert_pem, &cert, &other.key_pem).is_err());
    // A CA key that is not the CA certificate's.
    let other_ca = CaBundle::generate(CID, now()).unwrap();
    assert!(CaBundle::from_pem(&ca.cert_pem, &other_ca.key_pem).is_err());
    assert!(CaBundle::from_pem(&ca.cert_pem, &ca.key_pem).is_ok());
}

fn base64_lines(der: &[u8]) -> String {
    // Minimal standard base64 (no extra dependency for one test).
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in der.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s.as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_ca_hash_names_one_ca() {
    let a = CaBundle::generate(CID, now()).unwrap();
    let b = CaBundle::generate(CID, now()).unwrap();
    let ha = ca_hash(&a.cert_pem).unwrap();
    assert!(ha.starts_with("sha256:") && ha.len() == 7 + 64, "{ha}");
    assert_eq!(ha, ca_hash(&a.cert_pem).unwrap());
    assert_ne!(ha, ca_hash(&b.cert_pem).unwrap());
}

#[test]
fn files_are_private_and_load_back() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::in_data_dir(dir.path());
    assert!(pki.load_ca().unwrap().is_none());
    assert!(pki.load_node(CID, 1).unwrap().is_none());
    let ca = CaBundle::generate(CID, now()).unwrap();
    pki.save_ca(&ca).unwrap();
    let k = NodeKey::generate().unwrap();
    pki.save_node_key(&k.key_pem).unwrap();
    let cert = ca.issue(&k.csr_pem, 1, CID, now()).unwrap();
    pki.save_node_cert(&ca.cert_pem, &cert).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("pki"), 0o700);
    assert_eq!(mode("pki/ca.key"), 0o600);
    assert_eq!(mode("pki/node.key"), 0o600);
    let loaded = pki.load_ca().unwrap().unwrap();
    assert_eq!(loaded.cert_pem.trim(), ca.cert_pem.trim());
    let tls = pki.load_node(CID, 1).unwrap().unwrap();
    assert_eq!(tls.node_id, 1);
    // Secrets stay out of Debug output.
    assert!(!format!("{loaded:?}{tls:?}").contains("PRIVATE KEY"));
}

/// The API address's host is named (an IP as an IP, a name as a DNS name, whatever the
/// scheme); a wildcard address names nothing; the node name is always there.
#[test]
fn node_certificates_name_the_api_host() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let names = |api: Option<&str>| {
        let k = NodeKey::generate().unwrap();
        let pem = ca.issue_for(&k.csr_pem, 4, CID, api, now()).unwrap();
        let der = first_cert(&pem, "cert").unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                    _ => format!("{b:?}"),
                },
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let me = node_name(4, CID);
    assert_eq!(names(None), vec![me.clone()]);
    assert_eq!(
        names(Some("10.1.2.3:7080")),
        vec![me.clone(), "10.1.2.3".into()]
    );
    assert_eq!(
        names(Some("https://10.1.2.3:7080")),
        vec![me.clone(), "10.1.2.3".into()]
    );
    assert_eq!(
        names(Some("https://rack1.example.net:7080")),
        vec![me.clone(), "rack1.example.net".into()]
    );
    assert_eq!(names(Some("0.0.0.0:7080")), vec![me.clone()]);
    assert_eq!(names(Some("[::1]:7080")).len(), 2);
}

/// A join token is its secret and, after it, the CA pin; tokens without a pin still split.
#[test]
fn join_tokens_carry_the_ca_pin_after_the_secret() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let pin = ca_hash(&ca.cert_pem).unwrap();
    let t = join_token_with_pin("rackd-join-abc", &pin);
    assert_eq!(split_join_token(&t), ("rackd-join-abc", Some(pin.as_str())));
    assert_eq!(split_join_token("rackd-join-abc"), ("rackd-join-abc", None));
}

/// The pinned client accepts the server whose chain holds the pinned CA, and refuses one of
/// another CA before the handshake completes (real handshakes over TCP).
#[tokio::test]
async fn a_pinned_client_accepts_only_the_pinned_ca() {
    let serve = |ca: &CaBundle| {
        let k = NodeKey::generate().unwrap();
        let cert = ca
            .issue_for(&k.csr_pem, 1, CID, Some("127.0.0.1:1"), now())
            .unwrap();
        NodeTls::new(CID, 1, &ca.cert_pem, &cert, &k.key_pem)
            .unwrap()
            .api_server_config()
            .unwrap()
    };
    let ours = CaBundle::generate(CID, now()).unwrap();
    let theirs = CaBundle::generate(CID, now()).unwrap();
    let pin = ca_hash(&ours.cert_pem).unwrap();
    for (server, want_ok) in [(serve(&ours), true), (serve(&theirs), false)] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let _ = acceptor.accept(s).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let r = tokio_rustls::TlsConnector::from(pinned_client_config(&pin).unwrap())
            .connect(name, tcp)
            .await;
        match (r, want_ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.to_string().contains(PIN_MISMATCH), "{e}"),
            (r, _) => panic!("pinned {pin}: {:?}", r.map(|_| ())),
        }
    }
}

/// One handshake with configurations built once: the certificates each side presented.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> (CertificateDer<'static>, CertificateDer<'static>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let srv = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut tls = acceptor.accept(s).await.unwrap();
        let mut b = [0u8; 4];
        tls.read_exact(&mut b).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    });
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, s)
        .await
        .unwrap();
    tls.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tls.read_exact(&mut b).await.unwrap();
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (server_cert, srv.await.unwrap())
}

fn der(pem: &str) -> CertificateDer<'static> {
    first_cert(pem, "test").unwrap()
}

/// A renewal swaps the certificate under configurations built before it (peer server, peer
/// client, API server): the next handshake presents the new one, without new configurations.
#[tokio::test]
async fn a_renewed_certificate_is_presented_from_the_next_handshake() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let (n2, n5) = (node(&ca, CID, 2), node(&ca, CID, 5));
    let server = n2.server_config().unwrap();
    // A resumed session shows no certificate at all: every handshake here is a full one
    // (the resolver inside is still the configuration's own).
    let mut client = (*n5.client_config().unwrap()).clone();
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    let (s1, c1) = handshake(server.clone(), client.clone(), n5.server_name(2)).await;
    assert_eq!((s1, c1), (der(&n2.cert_pem()), der(&n5.cert_pem())));

    for n in [&n2, &n5] {
        let old = n.cert_pem();
        let k = NodeKey::generate().unwrap();
        let cert = ca.issue(&k.csr_pem, n.node_id, CID, now()).unwrap();
        n.renewed(&cert, &k.key_pem).unwrap();
        assert_ne!(n.cert_pem(), old);
    }
    let (s2, c2) = handshake(server, client, n5.server_name(2)).await;
    assert_eq!(
        s2,
        der(&n2.cert_pem()),
        "the server presents its new certificate"
    );
    assert_eq!(
        c2,
        der(&n5.cert_pem()),
        "the client presents its new certificate"
    );

    // The API server too (its chain ends with the CA).
    let api = n2.api_server_config().unwrap();
    let k = NodeKey::generate().unwrap();
    let cert = ca.issue(&k.csr_pem, 2, CID, now()).unwrap();
    n2.renewed(&cert, &k.key_pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&ca.cert_pem)).unwrap();
    let plain = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(api);
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let _ = acceptor.accept(s).await;
    });
    let tls = tokio_rustls::TlsConnector::from(Arc::new(plain))
        .connect(
            n2.server_name(2),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], der(&cert));
}

/// A renewal that would break the node changes nothing: another CA's certificate, another
/// node's, or a key that is not the certificate's.
#[test]
fn a_renewal_that_would_break_the_node_is_refused() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let n2 = node(&ca, CID, 2);
    let before = n2.cert_pem();
    let other_ca = CaBundle::generate(CID, now()).unwrap();
    let k = NodeKey::generate().unwrap();
    let cases = [
        (
            "another CA",
            other_ca.issue(&k.csr_pem, 2, CID, now()).unwrap(),
            k.key_pem.clone(),
        ),
        (
            "another node",
            ca.issue(&k.csr_pem, 3, CID, now()).unwrap(),
            k.key_pem.clone(),
        ),
        (
            "another key",
            ca.issue(&k.csr_pem, 2, CID, now()).unwrap(),
            NodeKey::generate().unwrap().key_pem,
        ),
    ];
    for (what, cert, key) in cases {
        assert!(n2.check_renewal(&cert, &key).is_err(), "{what}");
        assert!(n2.renewed(&cert, &key).is_err(), "{what}");
        assert_eq!(n2.cert_pem(), before, "{what}: nothing changed");
    }
    let good = ca.issue(&k.csr_pem, 2, CID, now()).unwrap();
    n2.check_renewal(&good, &k.key_pem).unwrap();
    assert_eq!(n2.cert_pem(), before, "a check changes nothing");
}

/// A renewal interrupted at any point leaves a matching pair on disk: the old one before the
/// new certificate is complete, the new one after.
#[test]
fn an_interrupted_renewal_leaves_a_matching_pair() {
    let ca = CaBundle::generate(CID, now()).unwrap();
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::in_data_dir(dir.path());
        let k = NodeKey::generate().unwrap();
        pki.save_node_key(&k.key_pem).unwrap();
        let cert = ca.issue(&k.csr_pem, 1, CID, now()).unwrap();
        pki.save_node_cert(&ca.cert_pem, &cert).unwrap();
        let next = NodeKey::generate().unwrap();
        let next_cert = ca.issue(&next.csr_pem, 1, CID, now()).unwrap();
        (dir, pki, cert, next.key_pem, next_cert)
    };
    let loaded = |pki: &Pki| pki.load_node(CID, 1).unwrap().unwrap().cert_pem();
    let exists = |dir: &tempfile::TempDir, name: &str| dir.path().join("pki").join(name).exists();

    // Only the new key was written: the old pair stays, the stray key goes.
    let (dir, pki, old, key, _) = setup();
    pki.write(NEXT_KEY, &key, true).unwrap();
    assert_eq!(loaded(&pki).trim(), old.trim());
    assert!(!exists(&dir, NEXT_KEY));

    // Both written, nothing renamed: the new pair is taken.
    let (dir, pki, _, key, cert) = setup();
    pki.write(NEXT_KEY, &key, true).unwrap();
    pki.write(NEXT_CERT, &cert, false).unwrap();
    assert_eq!(loaded(&pki).trim(), cert.trim());
    assert!(!exists(&dir, NEXT_KEY) && !exists(&dir, NEXT_CERT));

    // The key renamed, the certificate not yet: the new pair is completed.
    let (dir, pki, _, key, cert) = setup();
    pki.write("node.key", &key, true).unwrap();
    pki.write(NEXT_CERT, &cert, false).unwrap();
    assert_eq!(loaded(&pki).trim(), cert.trim());
    assert!(!exists(&dir, NEXT_CERT));

    // Uninterrupted, with the key private.
    use std::os::unix::fs::PermissionsExt;
    let (dir, pki, _, key, cert) = setup();
    pki.save_renewed(&key, &cert).unwrap();
    assert_eq!(loaded(&pki).trim(), cert.trim());
    let mode = std::fs::metadata(dir.path().join("pki/node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
