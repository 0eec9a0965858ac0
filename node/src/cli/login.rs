//! `rackd login`: remember a cluster for the commands after it. Over https the CLI learns the
//! cluster CA by a pinned handshake (`--ca-pin sha256:…`, the hash `rackd up` printed at
//! bootstrap and every join token carries; the server must present that CA and a certificate
//! it signed for the address dialled) or takes it from `--ca-file`; it checks the token against
//! the cluster, then keeps server, token and CA in `~/.config/rackd/login.json` (0600, its
//! directory 0700; `RACKD_LOGIN_FILE` names another). Later commands use it when no
//! `--server`/`RACKD_SERVER` is given, or when that names the same server; verification is
//! never skipped.
//!
//! Layer: part of `cli`; uses the API client and `cluster::pki` (pins).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::cluster::pki::{pinned_ca_pem, pinned_client_config};

#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The cluster CA (PEM) an https server must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Where the login is kept.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RACKD_LOGIN_FILE") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("rackd").join("login.json"))
}

/// The login kept, if any (an unreadable one is reported, not ignored).
pub fn load() -> anyhow::Result<Option<Login>> {
    let Some(p) = path() else { return Ok(None) };
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is not a rackd login", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

fn save(l: &Login) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let p = path().context("no HOME to keep the login in: set RACKD_LOGIN_FILE")?;
    if let Some(dir) = p.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let text = serde_json::to_string_pretty(l)?;
    crate::cluster::secrets::write_file_atomically(&p, &text, 0o600)
        .with_context(|| format!("write {}", p.display()))?;
    Ok(p)
}

/// The CA an https server at `url` presents, accepted only if its hash is `pin` and it signed
/// the server's certificate for the address dialled.
async fn fetch_pinned_ca(url: &str, pin: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .context("a CA pin is for an https server")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, addr) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, authority.to_string()),
        _ => (authority, format!("{authority}:443")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is no server name"))?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .with_context(|| format!("connect to {addr}: timed out"))?
    .with_context(|| format!("connect to {addr}"))?;
    let config: Arc<rustls::ClientConfig> = pinned_client_config(pin)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {addr}"))?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .context("the server presented no certificate")?;
    pinned_ca_pem(chain, pin).context("the server's chain holds no CA with that hash")
}

/// `rackd login URL`.
pub async fn run(
    url: &str,
    token: Option<String>,
    ca_file: Option<&std::path::Path>,
    ca_pin: Option<&str>,
) -> anyhow::Result<()> {
    let url = url.trim_end_matches('/').to_string();
    let ca_pem = match (url.starts_with("https://"), ca_file, ca_pin) {
        (false, _, _) => None,
        (true, Some(f), _) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("read the CA file {}", f.display()))?,
        ),
        (true, None, Some(pin)) => Some(fetch_pinned_ca(&url, pin).await?),
        (true, None, None) => bail!(
            "{url} is served over TLS: give the cluster CA's hash with --ca-pin sha256:… (printed \
             at bootstrap; join tokens carry it after the secret) or the CA with --ca-file"
        ),
    };
    let client = match &ca_pem {
        Some(pem) => Client::with_ca(&url, token.clone(), pem.as_bytes())?,
        None => Client::new(&url, token.clone()),
    };
    let ci: rackd_types::ClusterInfo = client
        .get("/v1/cluster?stale=true")
        .await
        .context("the cluster refused this token")?;
    let p = save(&Login {
        server: url.clone(),
        token,
        ca_pem,
    })?;
    crate::out!(
        "logged in to cluster {} at {url} (kept in {})",
        ci.cluster_id,
        p.display()
    );
    Ok(())
}
