//! HTTP boot server of a location node (no API token: firmware cannot send one).
//!
//! - `GET /boot/{mac}.ipxe`: the per-machine iPXE script, from this node's replica. It reveals
//!   only what that machine needs (its hostname and what to do): a deployed, failed or broken
//!   machine is told to boot from its local disk (`exit`); others get the boot plan (no OS
//!   deployment flow exists yet, so they also exit after saying so).
//! - `GET /tftp/{path}`: files of the TFTP root over HTTP (UEFI HTTP boot, iPXE), with the
//!   same path rules as TFTP (no `..`, no symlink out of the root).
//!
//! - `GET /artifacts/{path}`: image artifacts (kernel, initrd) from the node's artifacts
//!   directory, same path rules.
//! - `GET /blobs/{digest}`: image artifacts stored by the cluster (an image's kernel, initrd
//!   or root filesystem given as a digest), from this node's blob store; a copy this node
//!   lacks is fetched from a holder first (once, however many machines ask), verified, and
//!   kept as the site's cache. Only blobs some image is made of are served.
//! - `POST /boot/{mac}/done?token=T`: install callback. The deploying machine presents the
//!   one-time token its script carried; on a match its deploy's wait ends and the token is
//!   burnt. A node cut off from the leader checks the token against its replica, keeps the
//!   callback ([`outbox`]) and answers 202; the callback is delivered when the link returns
//!   (so is the script fetch its deploy waits for).
//!
//! Files are streamed with bounded memory and a cap on concurrent transfers ([`files`]); the
//! connections are our own accept loop over hyper ([`conn`]). Layer: `services`; depends on
//! `cluster` and `config` only.

pub mod conn;
pub mod files;
pub mod outbox;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rackd_types::net::normalize_mac;
use rackd_types::MachineState;

use crate::abort::AbortOnDrop;
use crate::cluster::Cluster;
use crate::config::HttpBootConfig;
use files::text;

pub struct BootState {
    pub cluster: Arc<dyn Cluster>,
    /// This node's blob store (the site's cache of image blobs).
    pub blobs: Arc<crate::blobs::BlobStore>,
    pub location: String,
    pub tftp_root: PathBuf,
    pub artifacts: PathBuf,
    /// Base URL of this server as machines reach it (e.g. `http://10.1.0.2:8080`).
    pub base: String,
    pub transfers: files::Transfers,
    /// Reports kept while the cluster's leader is out of reach.
    pub outbox: Arc<outbox::Outbox>,
}

/// A started HTTP boot server: its task (dropping it closes every connection) and address.
pub struct Started {
    pub task: AbortOnDrop,
    pub bound: std::net::SocketAddr,
}

/// Bind and start the server; its bound address is also written to
/// `DATA_DIR/http-boot.addr`.
pub async fn start(
    cfg: &HttpBootConfig,
    cluster: Arc<dyn Cluster>,
    blobs: Arc<crate::blobs::BlobStore>,
    location: &str,
    tftp_root: &std::path::Path,
    data_dir: &std::path::Path,
) -> anyhow::Result<Started> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("bind HTTP boot {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    std::fs::write(data_dir.join("http-boot.addr"), bound.to_string())?;
    std::fs::create_dir_all(tftp_root)
        .with_context(|| format!("create {}", tftp_root.display()))?;
    std::fs::create_dir_all(&cfg.artifacts_dir)
        .with_context(|| format!("create {}", cfg.artifacts_dir.display()))?;
    let outbox = outbox::Outbox::open(&data_dir.join("outbox")).context("open the outbox")?;
    let app = router(Arc::new(BootState {
        cluster: cluster.clone(),
        blobs,
        location: location.to_string(),
        tftp_root: tftp_root.to_path_buf(),
        artifacts: cfg.artifacts_dir.clone(),
        base: cfg
            .base
            .clone()
            .unwrap_or_else(|| format!("http://{bound}")),
        transfers: files::Transfers::new(cfg.max_transfers),
        outbox: outbox.clone(),
    }));
    let limits = conn::Limits {
        stall_window: cfg.stall_window,
        ..Default::default()
    };
    tracing::info!(%bound, max_transfers = cfg.max_transfers, "HTTP boot server started");
    let task = AbortOnDrop(tokio::spawn(async move {
        tokio::join!(conn::serve(listener, app, limits), outbox.run(cluster));
    }));
    Ok(Started { task, bound })
}

pub fn router(state: Arc<BootState>) -> Router {
    let location = state.location.clone();
    Router::new()
        .route("/boot/{file}", get(script))
        .route("/tftp/{*path}", get(tftp_file))
        .route("/artifacts/{*path}", get(artifact))
        .route("/blobs/{digest}", get(blob))
        .route("/boot/{mac}/done", axum::routing::post(deploy_done))
        .layer(axum::middleware::from_fn(move |req, next| {
            count(location.clone(), req, next)
        }))
        .with_state(state)
}

/// What a boot request asks for, as a metrics label.
fn request_kind(path: &str) -> &'static str {
    if path.starts_with("/boot/") && path.ends_with("/done") {
        "callback"
    } else if path.starts_with("/boot/") {
        "script"
    } else if path.starts_with("/blobs/") {
        "blob"
    } else if path.starts_with("/tftp/") || path.starts_with("/artifacts/") {
        "file"
    } else {
        "other"
    }
}

/// Counts every request in the metrics (`rackd_http_boot_requests_total`) by location, kind
/// and status.
async fn count(
    location: String,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let kind = request_kind(req.uri().path());
    let resp = next.run(req).await;
    crate::metrics::global().http_boot_request(&location, kind, resp.status().as_u16());
    resp
}

/// The iPXE script for one machine's state (pure, unit-tested).
pub fn script_for(hostname: &str, state: MachineState) -> String {
    match state {
        MachineState::Deployed => format!(
            "#!ipxe\necho rackd: {hostname} is deployed: booting from the local disk\nexit\n"
        ),
        MachineState::Failed | MachineState::Broken => format!(
            "#!ipxe\necho rackd: {hostname} is {}: not network-booting it; booting from the local disk\nexit\n",
            state.as_str()
        ),
        other => format!(
            "#!ipxe\necho rackd: {hostname} is {}: no deployment scheduled\nsleep 3\nexit\n",
            other.as_str()
        ),
    }
}

async fn script(State(st): State<Arc<BootState>>, Path(file): Path<String>) -> Response {
    let Some(mac) = file.strip_suffix(".ipxe") else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Ok(mac) = normalize_mac(mac) else {
        return text(StatusCode::BAD_REQUEST, "invalid MAC address\n");
    };
    let state = st.cluster.state();
    match state.machine_by_mac(&mac) {
        Some(m) if m.location == st.location => {
            tracing::info!(%mac, hostname = %m.hostname, state = m.state.as_str(), "served boot script");
            // A deploying machine boots its image; a releasing one its wipe image, if any.
            let booting = match m.state {
                MachineState::Deploying => m.image.clone(),
                MachineState::Releasing => state
                    .active_workflow(m.meta.id)
                    .filter(|t| t.step(rackd_types::StepKind::WaitWipe).is_some())
                    .and_then(|t| t.image.clone()),
                _ => None,
            };
            let wipe = m.state == MachineState::Releasing;
            let deploying = state.stored_machine_by_mac(&mac).and_then(|sm| {
                let image = state.image_by_name(booting.as_deref()?)?;
                Some((
                    image.clone(),
                    sm.deploy_token_sealed.clone(),
                    sm.deploy_token.clone(),
                ))
            });
            let deploy = match deploying {
                None => None,
                Some((image, sealed, stored)) => match deploy_token(&st, sealed, stored).await {
                    Ok(token) => {
                        if token.is_some() {
                            report_script_served(&st, &mac).await;
                        }
                        token.map(|t| deploy_script(&st.base, &mac, &m.hostname, &image, &t, wipe))
                    }
                    Err(e) => {
                        tracing::error!(%mac, error = %e, "cannot open the deploy token");
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "#!ipxe\necho rackd: this node cannot open the deploy token yet\nsleep 10\nexit 1\n",
                        );
                    }
                },
            };
            text(
                StatusCode::OK,
                deploy.unwrap_or_else(|| script_for(&m.hostname, m.state)),
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "#!ipxe\necho rackd: unknown machine\nexit 1\n",
        ),
    }
}

/// Tell the cluster that the machine with `mac` fetched its deploy script here, when its
/// deploy workflow waits for that. The report is kept in the outbox before the script is
/// answered (so an install callback kept later is delivered after it, even when both wait
/// out a cut) and proposed in the background; it is forgotten once recorded, and left for
/// the outbox when the leader is out of reach.
async fn report_script_served(st: &BootState, mac: &str) {
    let waiting = {
        let state = st.cluster.state();
        state
            .machine_by_mac(mac)
            .and_then(|m| state.active_workflow(m.meta.id))
            .and_then(|t| t.step(rackd_types::StepKind::WaitBoot))
            .is_some_and(|s| !s.state.is_done())
    };
    if !waiting {
        return;
    }
    let (cluster, outbox) = (st.cluster.clone(), st.outbox.clone());
    let report = outbox::Report::ScriptServed {
        mac: mac.to_string(),
        node: cluster.id(),
    };
    let cmd = rackd_raft::cmd::Command::BootScriptServed {
        mac: mac.to_string(),
        node: cluster.id(),
    };
    let actor = format!("node:{}", cluster.id());
    let mac = mac.to_string();
    if let Err(e) = outbox.keep(&report).await {
        tracing::warn!(%mac, error = %e, "cannot keep the deploy script fetch");
    }
    tokio::spawn(async move {
        match cluster.propose_anywhere(&actor, None, cmd).await {
            Ok(_) => outbox.remove(&report),
            Err(e) if crate::services::outcome_unknown(&e) => {
                tracing::info!(%mac, error = %e.message, "deploy script fetch kept until the cluster is reachable");
                outbox.wake();
            }
            Err(e) => {
                outbox.remove(&report);
                tracing::warn!(%mac, error = %e.message, "deploy script fetch not recorded")
            }
        }
    });
}

/// A deploy token sealed for its location (`rackd-sealed:v1:deploy-token:…`), opened with
/// this node's location key.
pub(crate) async fn open_sealed_token(
    cluster: &dyn Cluster,
    sealed: &str,
) -> Result<String, rackd_types::ApiError> {
    use crate::cluster::sealing::{sealed_location, Purpose};
    let loc = sealed_location(sealed)
        .ok_or_else(|| rackd_types::ApiError::internal("a damaged sealed deploy token"))?;
    let key = cluster.location_key(loc).await?;
    key.open(Purpose::DeployToken, sealed)
        .map_err(|e| rackd_types::ApiError::internal(e.to_string()))
}

/// The deploy token to put in a boot script: opened from its sealed form (since sealing), or
/// as stored (before); none when only its hash is stored and nothing sealed.
async fn deploy_token(
    st: &BootState,
    sealed: Option<String>,
    stored: Option<String>,
) -> Result<Option<String>, String> {
    match sealed {
        Some(s) => open_sealed_token(st.cluster.as_ref(), &s)
            .await
            .map(Some)
            .map_err(|e| e.message),
        None => Ok(stored.filter(|t| !t.starts_with("sha256:"))),
    }
}

/// The iPXE script of a deploying machine: boot the image's kernel with the install callback
/// URL and the one-time token on its command line.
pub fn deploy_script(
    base: &str,
    mac: &str,
    hostname: &str,
    image: &rackd_types::Image,
    token: &str,
    wipe: bool,
) -> String {
    let base = base.trim_end_matches('/');
    let what = if wipe {
        format!("wiping {hostname} with {}", image.name)
    } else {
        format!("deploying {} on {hostname}", image.name)
    };
    let rootfs = image
        .rootfs
        .as_deref()
        .map(|r| format!(" rackd.rootfs={}", artifact_url(base, r)))
        .unwrap_or_default();
    format!(
        "#!ipxe\necho rackd: {what}\n\
         kernel {kernel} {cmdline}{rootfs} rackd.callback={base}/boot/{mac}/done rackd.token={token}\n\
         initrd {initrd}\nboot\n",
        kernel = artifact_url(base, &image.kernel),
        initrd = artifact_url(base, &image.initrd),
        cmdline = image.cmdline,
    )
}

/// Where a machine fetches an image artifact: a blob (`sha256:…`) from this server's blob
/// route, a path from its artifacts directory.
pub fn artifact_url(base: &str, artifact: &str) -> String {
    match rackd_types::Digest::parse(artifact) {
        Ok(d) => format!("{base}/blobs/{d}"),
        Err(_) => format!("{base}/artifacts/{artifact}"),
    }
}

async fn blob(
    State(st): State<Arc<BootState>>,
    Path(digest): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Ok(d) = rackd_types::Digest::parse(&digest) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    // Held while it is opened, so the cache bound does not evict it in between.
    let _hold = st.blobs.hold(&d);
    // An image newer than this replica is looked for once more after a ReadIndex (a site
    // cut off from the voters serves what its replica knows).
    let used = |st: &BootState| st.cluster.state().image_using_blob(&d).is_some();
    if !used(&st) && (st.cluster.linearize().await.is_err() || !used(&st)) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Err(e) = crate::services::blobs::ensure_sound(st.cluster.as_ref(), &st.blobs, &d).await {
        tracing::warn!(digest = %d, error = %e, "cannot serve an image blob");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "artifact not available yet\n",
        );
    }
    st.blobs.touch(&d);
    files::serve(
        st.blobs.dir().to_path_buf(),
        d.hex().to_string(),
        &method,
        &headers,
        &st.transfers,
    )
    .await
}

async fn artifact(
    State(st): State<Arc<BootState>>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    files::serve(st.artifacts.clone(), path, &method, &headers, &st.transfers).await
}

#[derive(serde::Deserialize)]
struct DoneQuery {
    token: Option<String>,
}

async fn deploy_done(
    State(st): State<Arc<BootState>>,
    Path(mac): Path<String>,
    query: Result<axum::extract::Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(mac) = normalize_mac(&mac) else {
        return text(StatusCode::BAD_REQUEST, "invalid MAC address\n");
    };
    let Some(token) = query.ok().and_then(|q| q.0.token).filter(|t| !t.is_empty()) else {
        return text(StatusCode::UNAUTHORIZED, "missing token\n");
    };
    let actor = format!("machine:{mac}");
    let cmd = rackd_raft::cmd::Command::DeployDone {
        mac: mac.clone(),
        token: rackd_raft::cmd::Secret(token.clone()),
    };
    // `deploy-done:<mac>:<sha256(token)>`: a retry after a lost answer (the first attempt
    // committed and burnt the token) returns the first answer instead of 401.
    let key = cmd.internal_key();
    // Checked here first: a wrong token is refused without becoming a log entry (anyone on
    // the provisioning network can call this). A deployment newer than our replica is looked
    // for once more after a ReadIndex, which writes nothing.
    let admits = |s: &rackd_raft::state::State| {
        s.deploy_done_target(&mac, &token).is_ok()
            || key.as_deref().is_some_and(|k| s.remembers(&actor, k))
    };
    if !admits(&st.cluster.state()) {
        let refused = match st.cluster.linearize().await {
            Ok(()) => {
                let s = st.cluster.state();
                if admits(&s) {
                    None
                } else {
                    s.deploy_done_target(&mac, &token).err()
                }
            }
            Err(e) => Some(e),
        };
        if let Some(e) = refused {
            return callback_refused(&mac, e);
        }
    }
    match st
        .cluster
        .propose_anywhere(&actor, key, cmd)
        .await
        .and_then(|v| v.into_deploy_done())
    {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) if crate::services::outcome_unknown(&e) => keep_callback(&st, &mac, &token, e).await,
        Err(e) => callback_refused(&mac, e),
    }
}

/// The leader is out of reach: a callback this node's replica confirms (the token matches
/// the deploying machine's) is kept and delivered later; answered 202.
async fn keep_callback(
    st: &BootState,
    mac: &str,
    token: &str,
    why: rackd_types::ApiError,
) -> Response {
    let kept = {
        let state = st.cluster.state();
        state
            .deploy_done_target(mac, token)
            .ok()
            .and_then(|m| Some((m.machine.meta.id, m.deploy_token_sealed.clone()?)))
    };
    let Some((machine_id, sealed_token)) = kept else {
        return callback_refused(mac, why);
    };
    let report = outbox::Report::InstallCallback {
        mac: mac.to_string(),
        sealed_token,
    };
    if let Err(e) = st.outbox.put(&report).await {
        tracing::error!(%mac, error = %e, "cannot keep the install callback");
        return callback_refused(mac, why);
    }
    tracing::info!(%mac, error = %why.message, "install callback kept until the cluster is reachable");
    let v = rackd_types::DeployDone {
        machine_id,
        state: "deploying".into(),
    };
    (StatusCode::ACCEPTED, axum::Json(v)).into_response()
}

/// An install callback's refusal: logged, and answered as a JSON error with its status.
fn callback_refused(mac: &str, e: rackd_types::ApiError) -> Response {
    tracing::info!(%mac, error = %e.message, "install callback refused");
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(rackd_types::ErrorBody { error: e })).into_response()
}

async fn tftp_file(
    State(st): State<Arc<BootState>>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    files::serve(st.tftp_root.clone(), path, &method, &headers, &st.transfers).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_has_its_request_kind() {
        for (path, kind) in [
            ("/boot/52:54:00:00:00:01.ipxe", "script"),
            ("/boot/52:54:00:00:00:01/done", "callback"),
            ("/blobs/sha256:ab", "blob"),
            ("/tftp/undionly.kpxe", "file"),
            ("/artifacts/deb/vmlinuz", "file"),
            ("/nope", "other"),
        ] {
            assert_eq!(super::request_kind(path), kind, "{path}");
        }
    }

    use super::*;

    /// Artifacts given as digests are fetched from the blob route, paths from the artifacts
    /// directory; a root filesystem is passed to the installer as a URL.
    #[test]
    fn a_deploy_script_points_at_blobs_and_artifacts() {
        let d = rackd_types::Digest::from_sha256(&[1; 32]);
        let r = rackd_types::Digest::from_sha256(&[2; 32]);
        let image = |kernel: String, rootfs: Option<String>| rackd_types::Image {
            meta: rackd_types::Meta {
                id: 1,
                version: 1,
                created_at: 0,
                updated_at: 0,
            },
            name: "deb".into(),
            kernel,
            initrd: "deb/initrd".into(),
            cmdline: "console=ttyS0".into(),
            rootfs,
        };
        let base = "http://10.0.0.2:8080/";
        let s = deploy_script(
            base,
            "52:54:00:00:00:01",
            "web1",
            &image(d.to_string(), Some(r.to_string())),
            "tok",
            false,
        );
        assert!(
            s.contains(&format!(
                "kernel http://10.0.0.2:8080/blobs/{d} console=ttyS0 \
                 rackd.rootfs=http://10.0.0.2:8080/blobs/{r} rackd.callback="
            )),
            "{s}"
        );
        assert!(
            s.contains("initrd http://10.0.0.2:8080/artifacts/deb/initrd\n"),
            "{s}"
        );
        let s = deploy_script(
            base,
            "m",
            "h",
            &image("deb/vmlinuz".into(), None),
            "t",
            true,
        );
        assert!(
            s.contains(
                "kernel http://10.0.0.2:8080/artifacts/deb/vmlinuz console=ttyS0 rackd.callback="
            ),
            "{s}"
        );
        assert!(!s.contains("rootfs"), "{s}");
        assert!(s.contains("echo rackd: wiping h with deb\n"), "{s}");
    }
    use crate::cluster::fake::{machine_spec, FakeCluster};
    use rackd_raft::cmd::{Command, Secret};
    use tower::ServiceExt;

    /// An install callback with a wrong token is refused without proposing anything (anyone
    /// on the provisioning network can call it: no log entry per guess); the right one is
    /// proposed, and its retry after a lost answer gets the first answer back.
    #[tokio::test]
    async fn a_wrong_install_token_is_refused_without_a_log_entry() {
        let fake = FakeCluster::new(1, 1_000);
        fake.create_location("dc1");
        let mac = "02:00:00:00:00:aa";
        let id = fake.create_machine(rackd_types::payload::CreateMachine {
            macs: vec![mac.into()],
            state: Some(MachineState::Ready),
            ..machine_spec("m1", "dc1")
        });
        fake.apply_ok(
            "t",
            Command::CreateImage(rackd_types::payload::CreateImage {
                name: "deb".into(),
                kernel: "deb/vmlinuz".into(),
                initrd: "deb/initrd".into(),
                cmdline: String::new(),
                rootfs: None,
            }),
        );
        let token = "t".repeat(64);
        // As a sealing leader proposes it: the hash, and the token sealed for dc1.
        let dc1 = fake.state().location_by_name("dc1").unwrap().meta.id;
        let key = fake.location_key(dc1).await.unwrap();
        fake.apply_ok(
            "t",
            Command::Deploy {
                id,
                if_match: None,
                image: "deb".into(),
                token: Secret(rackd_raft::state::deploy_token_check(&token)),
                sealed_token: Some(Secret(
                    key.seal(crate::cluster::sealing::Purpose::DeployToken, &token),
                )),
                boot_timeout_ms: None,
                install_timeout_ms: None,
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let app = router(Arc::new(BootState {
            cluster: fake.clone(),
            blobs: crate::blobs::BlobStore::open(&dir.path().join("blobs"), 1 << 20).unwrap(),
            location: "dc1".into(),
            tftp_root: dir.path().into(),
            artifacts: dir.path().into(),
            base: "http://127.0.0.1:8080".into(),
            transfers: files::Transfers::new(4),
            outbox: outbox::Outbox::open(&dir.path().join("outbox")).unwrap(),
        }));
        let call = |tok: &str| {
            let app = app.clone();
            let uri = format!("/boot/{mac}/done?token={tok}");
            async move {
                let req = axum::http::Request::post(uri)
                    .body(axum::body::Body::empty())
                    .unwrap();
                app.oneshot(req).await.unwrap().status()
            }
        };
        // The location node opens the sealed token for the boot script.
        let script = {
            let req = axum::http::Request::get(format!("/boot/{mac}.ipxe"))
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let b = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            String::from_utf8(b.to_vec()).unwrap()
        };
        assert!(script.contains(&format!("rackd.token={token}")), "{script}");
        let stored = fake.state().machines.get(&id).unwrap().clone();
        assert!(
            !format!("{:?}{:?}", stored.deploy_token, stored.deploy_token_sealed).contains(&token)
        );
        let entries = fake.log().len();
        for guess in ["nope", &"x".repeat(64), &token[1..]] {
            assert_eq!(call(guess).await, StatusCode::UNAUTHORIZED, "{guess}");
        }
        assert_eq!(fake.log().len(), entries, "wrong tokens proposed nothing");
        assert_eq!(call(&token).await, StatusCode::OK);
        assert_eq!(fake.log().len(), entries + 1);
        // The answer was lost; the machine retries: the remembered answer, not 401.
        assert_eq!(call(&token).await, StatusCode::OK);
        assert_eq!(call("nope").await, StatusCode::UNAUTHORIZED);
        assert_eq!(fake.log().len(), entries + 2, "only the retry was proposed");
    }

    #[test]
    fn deployed_and_broken_machines_boot_from_disk() {
        assert!(script_for("a", MachineState::Deployed).contains("\nexit\n"));
        assert!(script_for("a", MachineState::Broken).contains("local disk"));
        for s in [
            MachineState::Deployed,
            MachineState::Ready,
            MachineState::New,
        ] {
            assert!(script_for("a", s).starts_with("#!ipxe\n"));
        }
    }
}
