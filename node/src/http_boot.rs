//! HTTP boot server of a location node (no API token: firmware cannot send one).
//!
//! - `GET /boot/{mac}.ipxe`: the per-machine iPXE script, from this node's replica. It reveals
//!   only what that machine needs (its hostname and what to do): a deployed, failed or broken
//!   machine is told to boot from its local disk (`exit`); others get the boot plan (no OS
//!   deployment flow exists yet, so they also exit after saying so).
//! - `GET /tftp/{path}`: files of the TFTP root over HTTP (UEFI HTTP boot, iPXE), with the
//!   same path rules as TFTP (no `..`, no symlink out of the root).
//!
//! Not done yet: image artifacts (kernel/initrd) and the install callback with a one-time
//! per-deployment token (they need the image and deployment model).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rackd_storage::StateMachineStore;
use rackd_types::net::normalize_mac;
use rackd_types::MachineState;

pub struct BootState {
    pub sm: StateMachineStore,
    pub location: String,
    pub tftp_root: PathBuf,
}

pub fn router(state: Arc<BootState>) -> Router {
    Router::new()
        .route("/boot/{file}", get(script))
        .route("/tftp/{*path}", get(tftp_file))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
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
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let Ok(mac) = normalize_mac(mac) else {
        return text(StatusCode::BAD_REQUEST, "invalid MAC address\n".into());
    };
    let a = st.sm.read();
    match a.state.machine_by_mac(&mac) {
        Some(m) if m.location == st.location => {
            tracing::info!(%mac, hostname = %m.hostname, state = m.state.as_str(), "served boot script");
            text(StatusCode::OK, script_for(&m.hostname, m.state))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "#!ipxe\necho rackd: unknown machine\nexit 1\n".into(),
        ),
    }
}

async fn tftp_file(State(st): State<Arc<BootState>>, Path(path): Path<String>) -> Response {
    let Ok(root) = st.tftp_root.canonicalize() else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    match rackd_net::tftp::server::resolve(&root, &path) {
        Ok(p) => match tokio::fs::read(&p).await {
            Ok(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes,
            )
                .into_response(),
            Err(_) => text(StatusCode::NOT_FOUND, "not found\n".into()),
        },
        Err(rackd_net::tftp::server::PathError::Escape) => {
            text(StatusCode::FORBIDDEN, "forbidden\n".into())
        }
        Err(_) => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
