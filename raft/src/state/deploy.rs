//! Apply handlers for images and the deployment flow: `Deploy` (ready → deploying, with a
//! one-time callback token) and `DeployDone` (the machine presents the token → deployed, the
//! token is burnt).

use crate::cmd::Applied;
use rackd_types::blob::DIGEST_PREFIX;
use rackd_types::payload::{CreateImage, UpdateImage};
use rackd_types::{ApiError, Digest, ErrorCode, Image, MachineState, Meta};

use super::{precondition, ApplyRules, State};

/// The longest a deploy waits for the machine's boot or its installer (ms).
pub const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;

fn check_path(what: &str, p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.len() > 512 || p.split('/').any(|c| c == "..") || p.starts_with('/') {
        return Err(ApiError::invalid(format!(
            "{what} must be a relative artifact path without '..'"
        )));
    }
    Ok(())
}

impl State {
    /// An image artifact: a path, or (since rules 4) a digest of a stored blob.
    fn check_artifact(&self, what: &str, a: &str) -> Result<(), ApiError> {
        if self.meta.rules < ApplyRules::Rules4 || !a.starts_with(DIGEST_PREFIX) {
            return check_path(what, a);
        }
        let d = Digest::parse(a).map_err(|e| ApiError::invalid(format!("{what}: {e}")))?;
        if self.blob(&d).is_none() {
            return Err(ApiError::conflict(format!(
                "{what} {d} is not stored: upload it first (PUT /v1/blobs/{d})"
            )));
        }
        Ok(())
    }

    /// The root filesystem: a digest of a stored blob.
    fn check_rootfs(&self, a: &str) -> Result<(), ApiError> {
        if !a.starts_with(DIGEST_PREFIX) {
            return Err(ApiError::invalid(
                "rootfs must be a blob digest (sha256:<hex>)",
            ));
        }
        self.check_artifact("rootfs", a)
    }

    /// The first image made of blob `d`, if any.
    pub fn image_using_blob(&self, d: &Digest) -> Option<&Image> {
        self.images.values().find(|i| i.blobs().any(|b| &b == d))
    }

    pub(super) fn create_image(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateImage,
    ) -> Result<Applied, ApiError> {
        if c.name.is_empty()
            || c.name.len() > 128
            || !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
        {
            return Err(ApiError::invalid(
                "image name must be 1..=128 of [A-Za-z0-9-._]",
            ));
        }
        self.check_artifact("kernel", &c.kernel)?;
        self.check_artifact("initrd", &c.initrd)?;
        if let Some(r) = &c.rootfs {
            self.check_rootfs(r)?;
        }
        if self.image_by_name(&c.name).is_some() {
            return Err(ApiError::conflict(format!(
                "image {:?} already exists",
                c.name
            )));
        }
        let id = self.alloc_id();
        let img = Image {
            meta: Meta {
                id,
                version: 1,
                created_at: now,
                updated_at: now,
            },
            name: c.name.clone(),
            kernel: c.kernel.clone(),
            initrd: c.initrd.clone(),
            cmdline: c.cmdline.clone(),
            rootfs: c.rootfs.clone(),
        };
        self.images.insert(id, img.clone());
        self.journal(
            now,
            actor,
            "image.created",
            "image",
            Some(id),
            format!("image {} created", c.name),
        );
        Ok(Applied::Image(img))
    }

    pub(super) fn update_image(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        p: &UpdateImage,
    ) -> Result<Applied, ApiError> {
        let mut img = self.images.fetch(id, "image")?;
        precondition(img.meta.version, if_match)?;
        if let Some(k) = &p.kernel {
            self.check_artifact("kernel", k)?;
            img.kernel = k.clone();
        }
        if let Some(i) = &p.initrd {
            self.check_artifact("initrd", i)?;
            img.initrd = i.clone();
        }
        if let Some(r) = &p.rootfs {
            self.check_rootfs(r)?;
            img.rootfs = Some(r.clone());
        }
        if let Some(c) = &p.cmdline {
            img.cmdline = c.clone();
        }
        img.meta.version += 1;
        img.meta.updated_at = now;
        self.images.insert(id, img.clone());
        self.journal(
            now,
            actor,
            "image.updated",
            "image",
            Some(id),
            format!("image {} updated", img.name),
        );
        Ok(Applied::Image(img))
    }

    pub(super) fn delete_image(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let img = self.images.fetch(id, "image")?;
        precondition(img.meta.version, if_match)?;
        if self
            .machines
            .values()
            .any(|m| m.machine.image.as_deref() == Some(img.name.as_str()))
        {
            return Err(ApiError::conflict(format!(
                "image {} is used by machines",
                img.name
            )));
        }
        self.images.remove(&id);
        self.journal(
            now,
            actor,
            "image.deleted",
            "image",
            Some(id),
            format!("image {} deleted", img.name),
        );
        Ok(Applied::Done)
    }

    pub(super) fn deploy(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        (image, boot_ms, install_ms): (&str, Option<u64>, Option<u64>),
        (token, sealed_token): (&str, Option<&str>),
    ) -> Result<Applied, ApiError> {
        let mut stored = self.machines.fetch(id, "machine")?;
        precondition(stored.machine.meta.version, if_match)?;
        if self.image_by_name(image).is_none() {
            return Err(ApiError::invalid(format!("image {image:?} does not exist")));
        }
        if stored.machine.state != MachineState::Ready {
            return Err(ApiError::conflict(format!(
                "machine {id} is {}, only ready machines can be deployed",
                stored.machine.state.as_str()
            )));
        }
        if token.len() < 32 {
            return Err(ApiError::internal("deploy token too short"));
        }
        // Since rules 5 a workflow drives the deploy.
        let workflow = if self.meta.rules >= ApplyRules::Rules5 {
            for (what, t) in [("boot", boot_ms), ("install", install_ms)] {
                if t.is_some_and(|t| t == 0 || t > MAX_WAIT_MS) {
                    return Err(ApiError::invalid(format!(
                        "{what}_timeout_secs must be from 1 to {}",
                        MAX_WAIT_MS / 1000
                    )));
                }
            }
            let steps = super::workflow::deploy_steps(boot_ms, install_ms);
            let kind = rackd_types::TaskKind::Deploy;
            Some(self.create_workflow(now, actor, kind, (id, Some(image.to_string())), steps))
        } else {
            None
        };
        let m = &mut stored.machine;
        m.state = MachineState::Deploying;
        m.state_cause = match workflow {
            Some(t) => format!("deploy {image} requested by {actor} (task {t})"),
            None => format!("deploy {image} requested by {actor}"),
        };
        if workflow.is_some() {
            m.workflow = workflow;
        }
        m.image = Some(image.to_string());
        m.meta.version += 1;
        m.meta.updated_at = now;
        let view = m.clone();
        stored.deploy_token = Some(token.to_string());
        stored.deploy_token_sealed = sealed_token.map(str::to_string);
        self.machines.insert(id, stored);
        self.journal(
            now,
            actor,
            "machine.state_changed",
            "machine",
            Some(id),
            format!(
                "machine {} ready -> deploying (image {image})",
                view.hostname
            ),
        );
        Ok(Applied::Machine(view))
    }

    /// The machine a `DeployDone` for `mac` with `token` completes: the one with that MAC,
    /// deploying, whose one-time token this is. Apply's check, and the HTTP boot server's
    /// before it proposes anything (a wrong token never becomes a log entry).
    pub fn deploy_done_target(
        &self,
        mac: &str,
        token: &str,
    ) -> Result<&super::StoredMachine, ApiError> {
        let reject = || {
            ApiError::new(
                ErrorCode::Unauthorized,
                "no deployment with this token for this machine",
            )
        };
        let stored = self.stored_machine_by_mac(mac).ok_or_else(reject)?;
        // A deploying machine's installer, or a releasing machine's wipe image.
        let booting = match stored.machine.state {
            MachineState::Deploying => true,
            MachineState::Releasing => self
                .active_workflow(stored.machine.meta.id)
                .is_some_and(|t| t.step(rackd_types::StepKind::WaitWipe).is_some()),
            _ => false,
        };
        if !booting
            || !stored
                .deploy_token
                .as_deref()
                .is_some_and(|t| deploy_token_matches(t, token))
        {
            return Err(reject());
        }
        Ok(stored)
    }

    pub(super) fn deploy_done(
        &mut self,
        now: u64,
        actor: &str,
        mac: &str,
        token: &str,
    ) -> Result<Applied, ApiError> {
        let mut stored = self.deploy_done_target(mac, token)?.clone();
        let id = stored.machine.meta.id;
        // A workflow drives the deploy (rules 5): the callback ends its wait, and the machine
        // becomes deployed after the workflow's last step.
        if let Some(t) = self.active_workflow(id).cloned() {
            stored.deploy_token = None; // one-time
            stored.deploy_token_sealed = None;
            let (wait, note) = match t.kind {
                rackd_types::TaskKind::Release => {
                    (rackd_types::StepKind::WaitWipe, "wipe callback")
                }
                _ => (rackd_types::StepKind::WaitInstall, "install callback"),
            };
            stored.machine.state_cause = format!("{note} received (task {})", t.meta.id);
            stored.machine.meta.version += 1;
            stored.machine.meta.updated_at = now;
            self.machines.insert(id, stored);
            self.complete_wait(now, actor, t, wait, note);
            let state = self
                .machines
                .get(&id)
                .map(|m| m.machine.state.as_str())
                .unwrap_or("deleted");
            return Ok(Applied::DeployDone(rackd_types::DeployDone {
                machine_id: id,
                state: state.into(),
            }));
        }
        let m = &mut stored.machine;
        m.state = MachineState::Deployed;
        m.state_cause = "install callback".to_string();
        m.meta.version += 1;
        m.meta.updated_at = now;
        let view = m.clone();
        stored.deploy_token = None; // one-time
        stored.deploy_token_sealed = None;
        self.machines.insert(id, stored);
        self.journal(
            now,
            actor,
            "machine.state_changed",
            "machine",
            Some(id),
            format!(
                "machine {} deploying -> deployed (install callback)",
                view.hostname
            ),
        );
        Ok(Applied::DeployDone(rackd_types::DeployDone {
            machine_id: id,
            state: "deployed".into(),
        }))
    }
}

/// What a deployment stores to check its install callback's `token` by: `sha256:<hex>` of it
/// (what a leader that seals deploy tokens proposes).
pub fn deploy_token_check(token: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    )
}

/// Whether the presented `token` is the one `stored` checks for: its hash, or (entries from
/// before sealing) the token itself. Tokens are hex, so a stored token never starts with
/// `sha256:`.
fn deploy_token_matches(stored: &str, token: &str) -> bool {
    if stored.starts_with("sha256:") {
        stored == deploy_token_check(token)
    } else {
        stored == token
    }
}
