//! The leader keeps every stored BMC password sealed for its machine's current location
//! (`cluster::sealing`): a password stored before sealing existed (plaintext), or sealed for
//! a location the machine has since left, is opened with the key the leader derives (it holds
//! every location's) and sealed anew for the machine's location, by an `UpdateMachine` that
//! names the BMC as it is (so nothing else changes) and the machine's version (a concurrent
//! change wins; the next round looks again). Log entries written before stay in the log until
//! it is compacted behind a snapshot; snapshots made after hold sealed values only.
//!
//! On the leader only, once every member opens sealed values (apply rules 3). Runs on every
//! node. Layer: services; depends on `cluster` only.

use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_raft::state::ApplyRules;
use rackd_types::payload::UpdateMachine;
use rackd_types::BmcSpec;

use crate::cluster::sealing::{is_sealed, sealed_location, Purpose};
use crate::cluster::Cluster;

/// Machines resealed per round at most (each is one Raft entry).
const PER_ROUND: usize = 64;

/// Check every `tick`; stops only when aborted.
pub async fn run(node: Arc<dyn Cluster>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        step(node.as_ref()).await;
    }
}

/// One round: reseal what needs it. Returns how many machines were resealed.
pub async fn step(node: &dyn Cluster) -> usize {
    if !node.is_leader() {
        return 0;
    }
    let st = node.state();
    if st.meta.rules < ApplyRules::Rules3 {
        return 0;
    }
    let mut work = Vec::new();
    for (id, m) in st.machines.iter() {
        let (Some(password), Some(view)) = (&m.bmc_password, &m.machine.bmc) else {
            continue;
        };
        let Some(loc) = st.location_by_name(&m.machine.location).map(|l| l.meta.id) else {
            continue;
        };
        if is_sealed(password) && sealed_location(password) == Some(loc) {
            continue;
        }
        work.push((
            *id,
            m.machine.meta.version,
            view.clone(),
            password.clone(),
            loc,
        ));
        if work.len() == PER_ROUND {
            break;
        }
    }
    drop(st);
    let actor = format!("node:{}", node.id());
    let mut done = 0;
    for (id, version, view, password, loc) in work {
        let plain = match sealed_location(&password) {
            None => password,
            Some(old) => {
                let opened = match node.location_key(old).await {
                    Ok(k) => k
                        .open(Purpose::BmcPassword, &password)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.message),
                };
                match opened {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(machine = id, error = %e, "cannot reseal a BMC password");
                        continue;
                    }
                }
            }
        };
        let key = match node.location_key(loc).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(machine = id, error = %e.message, "cannot reseal a BMC password");
                continue;
            }
        };
        let spec = BmcSpec {
            driver: view.driver,
            address: view.address,
            port: view.port,
            username: view.username,
            password: Some(key.seal(Purpose::BmcPassword, &plain)),
            cipher_suite: view.cipher_suite,
        };
        let cmd = Command::UpdateMachine {
            id,
            if_match: Some(version),
            patch: UpdateMachine {
                bmc: Some(Some(spec)),
                ..Default::default()
            },
        };
        match node.propose(&actor, None, cmd).await {
            Ok(_) => done += 1,
            Err(e) => tracing::debug!(machine = id, error = %e.message, "reseal deferred"),
        }
    }
    if done > 0 {
        tracing::info!(
            machines = done,
            "sealed BMC passwords for their machines' locations"
        );
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::FakeCluster;
    use rackd_types::payload::CreateMachine;

    fn stored(c: &FakeCluster, id: u64) -> String {
        c.state()
            .machines
            .get(&id)
            .unwrap()
            .bmc_password
            .clone()
            .unwrap()
    }

    /// A plaintext password (stored before sealing) is sealed for the machine's location; a
    /// machine that moved gets its password sealed for the new location; nothing else of the
    /// machine changes; a second round finds nothing; followers and clusters still on rules 2
    /// do nothing.
    #[tokio::test]
    async fn the_leader_seals_every_password_for_its_machines_location() {
        let c = FakeCluster::new(1, 1_000);
        let dc1 = c.create_location("dc1");
        let dc2 = c.create_location("dc2");
        let m = c.create_machine(CreateMachine {
            hostname: "m1".into(),
            location: "dc1".into(),
            rack_id: None,
            rack_unit: None,
            macs: vec![],
            ips: vec![],
            bmc: Some(BmcSpec {
                driver: Default::default(),
                address: "10.0.0.9".into(),
                port: 623,
                username: "admin".into(),
                password: Some("hunter2".into()),
                cipher_suite: Some(3),
            }),
            state: None,
            description: String::new(),
            tags: vec![],
        });
        let before = c.state().machines.get(&m).unwrap().machine.clone();
        c.set_leading(false);
        assert_eq!(step(c.as_ref()).await, 0, "followers do nothing");
        c.set_leading(true);
        c.set_apply_rules(ApplyRules::Format2);
        assert_eq!(
            step(c.as_ref()).await,
            0,
            "not before every member opens sealed values"
        );
        c.set_apply_rules(ApplyRules::Rules3);

        assert_eq!(step(c.as_ref()).await, 1);
        let k1 = c.location_key(dc1).await.unwrap();
        assert_eq!(
            k1.open(Purpose::BmcPassword, &stored(&c, m)).unwrap(),
            "hunter2"
        );
        let after = c.state().machines.get(&m).unwrap().machine.clone();
        assert_eq!(after.bmc, before.bmc, "the BMC is as it was");
        assert!(after.bmc.unwrap().password_set);
        assert_eq!(step(c.as_ref()).await, 0, "nothing left");

        // The machine moves to dc2: its password follows it.
        c.apply_ok(
            "t",
            Command::UpdateMachine {
                id: m,
                if_match: None,
                patch: UpdateMachine {
                    location: Some("dc2".into()),
                    ..Default::default()
                },
            },
        );
        assert_eq!(step(c.as_ref()).await, 1);
        let k2 = c.location_key(dc2).await.unwrap();
        assert_eq!(
            k2.open(Purpose::BmcPassword, &stored(&c, m)).unwrap(),
            "hunter2"
        );
        assert!(k1.open(Purpose::BmcPassword, &stored(&c, m)).is_err());
        assert_eq!(step(c.as_ref()).await, 0);
    }
}
