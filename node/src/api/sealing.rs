//! BMC passwords are sealed before they are proposed (`cluster::sealing`): a create or an
//! update of a machine carrying a password reaches the Raft log, the snapshots and RocksDB as
//! a value sealed for the machine's location, on the leader (a voter, which holds every
//! location's key). Until every member runs a build that opens sealed values (apply rules 3),
//! passwords are proposed as before.
//!
//! Layer: part of `api`; uses the [`Cluster`] contract and `cluster::sealing`.

use rackd_raft::cmd::Command;
use rackd_raft::state::ApplyRules;
use rackd_types::{ApiError, BmcSpec};

use crate::cluster::sealing::{is_sealed, Purpose};
use crate::cluster::Cluster;

/// A one-time callback `token` of machine `id` as the log carries it: its hash (what apply
/// checks) and the token sealed for the machine's location (what its location node puts in
/// the boot script); before every member opens sealed values, the token itself.
pub async fn callback_token(
    node: &dyn Cluster,
    id: u64,
    token: String,
) -> Result<(rackd_raft::cmd::Secret, Option<rackd_raft::cmd::Secret>), ApiError> {
    use rackd_raft::cmd::Secret;
    let loc = {
        let st = node.state();
        let loc = st
            .machines
            .get(&id)
            .and_then(|m| st.location_by_name(&m.machine.location))
            .map(|l| l.meta.id);
        loc.filter(|_| st.meta.rules >= ApplyRules::Rules3)
    };
    Ok(match loc {
        Some(loc) => {
            let key = node.location_key(loc).await?;
            (
                Secret(rackd_raft::state::deploy_token_check(&token)),
                Some(Secret(key.seal(Purpose::DeployToken, &token))),
            )
        }
        // Older members, or no such machine (apply refuses it).
        None => (Secret(token), None),
    })
}

/// The `Deploy` of machine `id` with its one-time install-callback `token` (see
/// [`callback_token`]).
pub async fn deploy_command(
    node: &dyn Cluster,
    id: u64,
    if_match: Option<u64>,
    image: String,
    token: String,
) -> Result<Command, ApiError> {
    let (token, sealed_token) = callback_token(node, id, token).await?;
    Ok(Command::Deploy {
        id,
        if_match,
        image,
        token,
        sealed_token,
        boot_timeout_ms: None,
        install_timeout_ms: None,
    })
}

/// `cmd` with the BMC password it carries sealed for the machine's location (other commands,
/// and commands apply will refuse anyway, unchanged).
pub async fn seal_secrets(node: &dyn Cluster, cmd: Command) -> Result<Command, ApiError> {
    let st = node.state();
    let (spec, location): (&mut Option<BmcSpec>, Option<String>);
    let mut cmd = cmd;
    match &mut cmd {
        Command::CreateMachine(c) => {
            location = Some(c.location.clone());
            spec = &mut c.bmc;
        }
        Command::UpdateMachine { id, patch, .. } => {
            location = patch
                .location
                .clone()
                .or_else(|| st.machines.get(id).map(|m| m.machine.location.clone()));
            let Some(b) = patch.bmc.as_mut() else {
                return Ok(cmd);
            };
            spec = b;
        }
        _ => return Ok(cmd),
    }
    let Some(password) = spec.as_mut().and_then(|b| b.password.as_mut()) else {
        return Ok(cmd);
    };
    if is_sealed(password) {
        return Err(ApiError::invalid(
            "bmc.password: a password may not start with rackd-sealed: (rackd's own marker)",
        ));
    }
    if st.meta.rules < ApplyRules::Rules3 {
        return Ok(cmd); // a member's build could not open it
    }
    let Some(loc) = location.and_then(|l| st.location_by_name(&l).map(|l| l.meta.id)) else {
        return Ok(cmd); // no such machine or location: apply refuses it
    };
    let key = node.location_key(loc).await?;
    *password = key.seal(Purpose::BmcPassword, password);
    Ok(cmd)
}
