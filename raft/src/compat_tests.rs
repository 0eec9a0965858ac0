//! Log entries stay decodable across versions: for every command, an entry written by a newer
//! node that added fields (anywhere: the request, the command, its payload, nested values)
//! decodes here to the same command. The API request types refuse unknown fields; the log
//! payload types they convert into must not.

use rackd_types::payload::{
    CreateImage, CreateLocation, CreateMachine, CreateRack, CreateSubnet, UpdateImage,
    UpdateLocation, UpdateMachine, UpdateRack, UpdateSubnet,
};
use rackd_types::{BmcSpec, IpRange, MachineState, TaskKind};
use serde_json::Value;

use crate::cmd::{Command, PowerObservation, Request, Secret};

fn bmc() -> BmcSpec {
    BmcSpec {
        driver: rackd_types::BmcDriver::Ipmi,
        address: "10.0.0.9".into(),
        port: 623,
        username: "admin".into(),
        password: Some("pw".into()),
        cipher_suite: Some(3),
    }
}

/// One command of every kind, with every optional field set.
fn every_command() -> Vec<Command> {
    let range = IpRange {
        start: "10.0.0.100".into(),
        end: "10.0.0.200".into(),
    };
    let cmds = vec![
        Command::Bootstrap {
            cluster_id: "c".into(),
            admin_token_hash: "h".into(),
        },
        Command::CreateLocation(CreateLocation {
            name: "dc1".into(),
            description: "d".into(),
            discovery: true,
        }),
        Command::UpdateLocation {
            id: 1,
            if_match: Some(2),
            patch: UpdateLocation {
                description: Some("d".into()),
                discovery: Some(false),
            },
        },
        Command::DeleteLocation {
            id: 1,
            if_match: Some(1),
        },
        Command::CreateRack(CreateRack {
            location: "dc1".into(),
            name: "r".into(),
            height_units: 42,
        }),
        Command::UpdateRack {
            id: 2,
            if_match: None,
            patch: UpdateRack {
                name: Some("r2".into()),
                height_units: Some(48),
            },
        },
        Command::DeleteRack {
            id: 2,
            if_match: None,
        },
        Command::CreateMachine(CreateMachine {
            hostname: "m".into(),
            location: "dc1".into(),
            rack_id: Some(2),
            rack_unit: Some(3),
            macs: vec!["52:54:00:00:00:01".into()],
            ips: vec!["10.0.0.5".into()],
            bmc: Some(bmc()),
            state: Some(MachineState::Ready),
            description: "d".into(),
            tags: vec!["t".into()],
        }),
        Command::UpdateMachine {
            id: 3,
            if_match: Some(1),
            patch: UpdateMachine {
                hostname: Some("m2".into()),
                location: Some("dc2".into()),
                rack_id: Some(None),
                rack_unit: Some(Some(4)),
                macs: Some(vec![]),
                ips: Some(vec![]),
                bmc: Some(Some(bmc())),
                state: Some(MachineState::Broken),
                state_cause: Some("c".into()),
                description: Some("d".into()),
                tags: Some(vec![]),
            },
        },
        Command::DeleteMachine {
            id: 3,
            if_match: None,
        },
        Command::CreateSubnet(CreateSubnet {
            location: "dc1".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.2".into()],
            dynamic_ranges: vec![range.clone()],
            reserved_ranges: vec![range.clone()],
        }),
        Command::UpdateSubnet {
            id: 4,
            if_match: None,
            patch: UpdateSubnet {
                gateway: Some(None),
                dns: Some(vec![]),
                dynamic_ranges: Some(vec![range.clone()]),
                reserved_ranges: Some(vec![range]),
            },
        },
        Command::DeleteSubnet {
            id: 4,
            if_match: None,
        },
        Command::CreateImage(CreateImage {
            name: "i".into(),
            kernel: "k".into(),
            initrd: "r".into(),
            cmdline: "c".into(),
            rootfs: None,
        }),
        Command::UpdateImage {
            id: 5,
            if_match: None,
            patch: UpdateImage {
                kernel: Some("k".into()),
                initrd: Some("r".into()),
                cmdline: Some("c".into()),
                rootfs: None,
            },
        },
        Command::DeleteImage {
            id: 5,
            if_match: None,
        },
        Command::Deploy {
            id: 3,
            if_match: Some(1),
            image: "i".into(),
            token: Secret("sha256:00".into()),
            sealed_token: Some(Secret("rackd-sealed:v1:deploy-token:1:00".into())),
            boot_timeout_ms: Some(60_000),
            install_timeout_ms: Some(600_000),
        },
        Command::DeployDone {
            mac: "52:54:00:00:00:01".into(),
            token: Secret("s".into()),
        },
        Command::CreateTask {
            kind: TaskKind::PowerCycle,
            machine_id: 3,
        },
        Command::CancelTask { id: 6 },
        Command::ClaimTask {
            id: 6,
            node: 2,
            generation: 0,
            lease_ms: 10,
        },
        Command::RenewTaskLease {
            id: 6,
            generation: 1,
            lease_ms: 10,
        },
        Command::FinishTask {
            id: 6,
            generation: 1,
            error: Some("e".into()),
            observed_power: Some(rackd_types::PowerState::On),
        },
        Command::LoseTasks {
            machine_id: 3,
            head: 6,
            generation: 2,
            waited_ms: 9000,
        },
        Command::ObservePower {
            observations: vec![PowerObservation {
                machine_id: 3,
                power: rackd_types::PowerState::Off,
                observed_at_ms: 7,
            }],
        },
        Command::CreateJoinToken {
            token_hash: "h".into(),
            ttl_ms: 1,
            description: "d".into(),
            location: None,
        },
        Command::AllocateNodeId {
            token_hash: "h".into(),
            api: "a".into(),
            peer: "p".into(),
        },
        Command::CompleteJoin {
            token_hash: "h".into(),
            node_id: 4,
        },
        Command::MarkNodeRemoved { node_id: 4 },
        Command::AdoptRules {
            rules: crate::state::ApplyRules::Format2,
        },
        Command::CreateApiToken {
            name: "n".into(),
            token_hash: "h".into(),
            role: rackd_types::ApiRole::Operator,
            ttl_ms: Some(60_000),
        },
        Command::RevokeApiToken { id: 3 },
        Command::RevokeJoinToken { id: 4 },
        Command::RenewCerts {},
        Command::RevokeBmcSession {
            machine_id: 3,
            source: Some("192.0.2.7".into()),
        },
        Command::GrantBmcSession {
            machine_id: 3,
            source: "192.0.2.7".into(),
            ttl_ms: 60_000,
        },
        Command::RecordBlob {
            digest: rackd_types::Digest::from_sha256(&[7; 32]),
            size: 1 << 30,
            node: 2,
        },
        Command::DropBlobHolder {
            digest: rackd_types::Digest::from_sha256(&[7; 32]),
            node: 2,
        },
        Command::ForgetBlob {
            digest: rackd_types::Digest::from_sha256(&[7; 32]),
        },
        Command::Release {
            id: 3,
            if_match: Some(2),
            wipe: Some(crate::cmd::Wipe {
                image: "wipe".into(),
                token: Secret("sha256:00".into()),
                sealed_token: Some(Secret("rackd-sealed:v1:deploy-token:1:00".into())),
                boot_timeout_ms: Some(1),
                wipe_timeout_ms: Some(2),
            }),
        },
        Command::StartStep {
            id: 6,
            generation: 1,
            step: 2,
            attempt: 1,
        },
        Command::FinishStep {
            id: 6,
            generation: 1,
            step: 2,
            attempt: 1,
            outcome: crate::cmd::StepOutcome::Succeeded { note: "n".into() },
            observed_power: Some(rackd_types::PowerState::On),
            start_next: true,
        },
        Command::BootScriptServed {
            mac: "52:54:00:00:00:01".into(),
            node: 2,
        },
        Command::RetryTask { id: 6 },
        Command::CreateWebhook(rackd_types::payload::CreateWebhook {
            name: "pager".into(),
            url: "https://hooks.example/rackd".into(),
            kinds: vec!["machine".into(), "task.finished".into()],
            secret: Some(rackd_types::SecretText(
                "rackd-sealed:v1:webhook-secret:0:00".into(),
            )),
            enabled: true,
        }),
        Command::UpdateWebhook {
            id: 9,
            if_match: Some(1),
            patch: rackd_types::payload::UpdateWebhook {
                url: Some("http://10.0.0.1/h".into()),
                kinds: Some(vec![]),
                secret: Some(rackd_types::SecretText(
                    "rackd-sealed:v1:webhook-secret:0:01".into(),
                )),
                enabled: Some(false),
            },
        },
        Command::DeleteWebhook {
            id: 9,
            if_match: None,
        },
        Command::RecordWebhookDelivery {
            id: 9,
            delivery: rackd_types::WebhookDelivery {
                delivered_through: 40,
                last_delivered_at: Some(1),
                failures: 2,
                failing_since: Some(2),
                last_error: Some("HTTP 503".into()),
                missed: 1,
            },
        },
        Command::Journal {
            kind: "k".into(),
            entity: "e".into(),
            entity_id: Some(1),
            message: "m".into(),
        },
    ];
    // A new command must get a sample here: this match stops compiling until it has one.
    for c in &cmds {
        match c {
            Command::Bootstrap { .. }
            | Command::CreateLocation(_)
            | Command::UpdateLocation { .. }
            | Command::DeleteLocation { .. }
            | Command::CreateRack(_)
            | Command::UpdateRack { .. }
            | Command::DeleteRack { .. }
            | Command::CreateMachine(_)
            | Command::UpdateMachine { .. }
            | Command::DeleteMachine { .. }
            | Command::CreateSubnet(_)
            | Command::UpdateSubnet { .. }
            | Command::DeleteSubnet { .. }
            | Command::CreateImage(_)
            | Command::UpdateImage { .. }
            | Command::DeleteImage { .. }
            | Command::Deploy { .. }
            | Command::DeployDone { .. }
            | Command::CreateTask { .. }
            | Command::CancelTask { .. }
            | Command::ClaimTask { .. }
            | Command::RenewTaskLease { .. }
            | Command::FinishTask { .. }
            | Command::ObservePower { .. }
            | Command::LoseTasks { .. }
            | Command::CreateJoinToken { .. }
            | Command::AllocateNodeId { .. }
            | Command::CompleteJoin { .. }
            | Command::MarkNodeRemoved { .. }
            | Command::AdoptRules { .. }
            | Command::CreateApiToken { .. }
            | Command::RevokeApiToken { .. }
            | Command::RevokeJoinToken { .. }
            | Command::GrantBmcSession { .. }
            | Command::RenewCerts {}
            | Command::RevokeBmcSession { .. }
            | Command::RecordBlob { .. }
            | Command::DropBlobHolder { .. }
            | Command::ForgetBlob { .. }
            | Command::Release { .. }
            | Command::StartStep { .. }
            | Command::FinishStep { .. }
            | Command::BootScriptServed { .. }
            | Command::RetryTask { .. }
            | Command::CreateWebhook(_)
            | Command::UpdateWebhook { .. }
            | Command::DeleteWebhook { .. }
            | Command::RecordWebhookDelivery { .. }
            | Command::Journal { .. } => {}
        }
    }
    cmds
}

/// Add a field no build knows to every JSON object in `v`.
fn with_unknown_fields(v: &mut Value) -> usize {
    match v {
        Value::Object(m) => {
            let mut n = 1;
            for (_, x) in m.iter_mut() {
                n += with_unknown_fields(x);
            }
            m.insert(
                "added_by_a_newer_node".into(),
                serde_json::json!({"x": [1, 2]}),
            );
            n
        }
        Value::Array(a) => a.iter_mut().map(with_unknown_fields).sum(),
        _ => 0,
    }
}

#[test]
fn every_command_decodes_with_fields_a_newer_node_added() {
    let names: std::collections::BTreeSet<&str> =
        every_command().iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), every_command().len(), "one sample per command");
    for cmd in every_command() {
        let req = Request {
            time_ms: 1,
            actor: "ops".into(),
            idempotency_key: Some("k".into()),
            cmd,
        };
        let mut v = serde_json::to_value(&req).unwrap();
        let objects = with_unknown_fields(&mut v);
        assert!(objects >= 2, "{}: {v}", req.cmd.name());
        let bytes = {
            let mut b = vec![crate::codec::FORMAT_V1_JSON];
            b.extend(serde_json::to_vec(&v).unwrap());
            b
        };
        let back: Request = crate::codec::decode(&bytes).unwrap_or_else(|e| {
            panic!(
                "{}: {e:?} ({:?}) in {v}",
                req.cmd.name(),
                std::error::Error::source(&e)
            )
        });
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&req).unwrap(),
            "{}",
            req.cmd.name()
        );
    }
}

#[test]
fn the_api_forms_of_the_same_requests_refuse_unknown_fields() {
    let api: Result<rackd_types::CreateLocation, _> =
        serde_json::from_str(r#"{"name":"dc1","colour":"red"}"#);
    assert!(api.is_err());
    let log: CreateLocation = serde_json::from_str(r#"{"name":"dc1","colour":"red"}"#).unwrap();
    assert_eq!(log.name, "dc1");
}

/// An API token created before roles existed was an admin token, and its log entry (which has
/// no `role`) still makes one.
#[test]
fn a_token_entry_from_before_roles_makes_an_admin_token() {
    let old = serde_json::json!({"type": "create_api_token", "name": "n", "token_hash": "h"});
    match serde_json::from_value::<Command>(old).unwrap() {
        Command::CreateApiToken { role, .. } => assert_eq!(role, rackd_types::ApiRole::Admin),
        other => panic!("{other:?}"),
    }
}

/// Over the peer transport a member may propose only what nodes write themselves, in its own
/// name (`State::node_may_propose`); every other command is refused, whoever sends it.
#[test]
fn members_propose_only_their_own_cluster_internal_writes() {
    use crate::state::State;
    let nodes_write = [
        "create_machine",
        "claim_task",
        "renew_task_lease",
        "finish_task",
        "observe_power",
        "deploy_done",
        "start_step",
        "finish_step",
    ];
    let st = State::default();
    for cmd in every_command() {
        let name = cmd.name();
        let r = st.node_may_propose(2, "node:2", &cmd);
        // Never in another node's name, nor an operator's.
        for actor in ["node:3", "admin", "system"] {
            let e = st.node_may_propose(2, actor, &cmd).expect_err(actor);
            assert!(e.contains("in the name of"), "{e}");
        }
        match &cmd {
            // The sample machine has a BMC: discovery never knows one.
            Command::CreateMachine(m) => {
                assert!(r.is_err(), "{name} with a BMC: {r:?}");
                let mut m = m.clone();
                m.bmc = None;
                assert_eq!(
                    st.node_may_propose(2, "node:2", &Command::CreateMachine(m)),
                    Ok(())
                );
            }
            // The sample claims for node 2: node 3 may not claim in its name.
            Command::ClaimTask { .. } => {
                assert_eq!(r, Ok(()), "{name}");
                assert!(
                    st.node_may_propose(3, "node:3", &cmd).is_err(),
                    "{name} for another node"
                );
            }
            // The samples name node 2's store: node 3 may not speak for it.
            Command::RecordBlob { .. } | Command::DropBlobHolder { .. } => {
                assert_eq!(r, Ok(()), "{name}");
                let e = st.node_may_propose(3, "node:3", &cmd).unwrap_err();
                assert!(e.contains("node 2's blob store"), "{e}");
            }
            // The sample names node 2 as the server: node 3 may not report for it.
            Command::BootScriptServed { .. } => {
                assert_eq!(r, Ok(()), "{name}");
                let e = st.node_may_propose(3, "node:3", &cmd).unwrap_err();
                assert!(e.contains("what node 2 served"), "{e}");
            }
            // An install callback is relayed in the machine's name too.
            Command::DeployDone { mac, .. } => {
                assert_eq!(r, Ok(()), "{name}");
                let machine = format!("machine:{mac}");
                assert_eq!(st.node_may_propose(2, &machine, &cmd), Ok(()));
                let other = st.node_may_propose(2, "machine:52:54:00:00:00:99", &cmd);
                assert!(other.is_err(), "{other:?}");
            }
            _ if nodes_write.contains(&name) => assert_eq!(r, Ok(()), "{name}"),
            _ => {
                let e = r.expect_err(name);
                assert!(e.contains(name), "{e}");
            }
        }
    }
}

/// A lease renewal or a result is accepted only from the node the task is assigned to.
#[test]
fn only_a_tasks_assignee_renews_or_finishes_it() {
    use crate::state::State;
    let mut st = State::default();
    let task = rackd_types::Task {
        meta: rackd_types::Meta {
            id: 6,
            version: 1,
            created_at: 0,
            updated_at: 0,
        },
        kind: rackd_types::TaskKind::PowerOn,
        machine_id: 1,
        state: rackd_types::TaskState::Running,
        attempt: 1,
        assignee: Some(2),
        generation: 1,
        lease_expires_at: Some(10),
        started_at: Some(0),
        finished_at: None,
        error: None,
        observed_power: None,
        image: None,
        steps: Vec::new(),
    };
    st.tasks.insert(6, task);
    let renew = Command::RenewTaskLease {
        id: 6,
        generation: 1,
        lease_ms: 10,
    };
    let finish = Command::FinishTask {
        id: 6,
        generation: 1,
        error: None,
        observed_power: None,
    };
    let start_step = Command::StartStep {
        id: 6,
        generation: 1,
        step: 0,
        attempt: 1,
    };
    let finish_step = Command::FinishStep {
        id: 6,
        generation: 1,
        step: 0,
        attempt: 1,
        outcome: crate::cmd::StepOutcome::TimedOut,
        observed_power: None,
        start_next: false,
    };
    for cmd in [&renew, &finish, &start_step, &finish_step] {
        assert_eq!(st.node_may_propose(2, "node:2", cmd), Ok(()));
        let e = st.node_may_propose(3, "node:3", cmd).unwrap_err();
        assert!(e.contains("held by node 2"), "{e}");
    }
}

/// A cluster on this build's rules may propose every command, and one still on the rules of
/// builds that did not report theirs refuses exactly the commands those builds cannot decode
/// (or would apply differently) — before the log, whoever proposes them.
#[test]
fn every_command_is_proposable_under_current_rules_and_new_ones_wait_under_older() {
    use crate::state::{ApplyRules, State};
    let current = State::default();
    assert_eq!(current.meta.rules, ApplyRules::CURRENT);
    let mut old = State::default();
    old.meta.rules = ApplyRules::Format2;
    let mut rules3 = State::default();
    rules3.meta.rules = ApplyRules::Rules3;
    let mut rules4 = State::default();
    rules4.meta.rules = ApplyRules::Rules4;
    let mut waiting = Vec::new();
    let mut waiting_on_4 = Vec::new();
    let mut waiting_on_5 = Vec::new();
    let mut rules5 = State::default();
    rules5.meta.rules = ApplyRules::Rules5;
    let mut waiting_on_6 = Vec::new();
    for cmd in every_command() {
        assert!(cmd.needs_rules() <= ApplyRules::CURRENT, "{}", cmd.name());
        assert_eq!(current.admits_proposal(&cmd), Ok(()), "{}", cmd.name());
        if let Err(e) = old.admits_proposal(&cmd) {
            assert!(e.message.contains("needs apply rules"), "{}", e.message);
            waiting.push(cmd.name());
        }
        if let Err(e) = rules3.admits_proposal(&cmd) {
            assert!(e.message.contains("needs apply rules"), "{}", e.message);
            waiting_on_4.push(cmd.name());
        }
        if let Err(e) = rules4.admits_proposal(&cmd) {
            assert!(e.message.contains("needs apply rules"), "{}", e.message);
            waiting_on_5.push(cmd.name());
        }
        if let Err(e) = rules5.admits_proposal(&cmd) {
            assert!(e.message.contains("needs apply rules 6"), "{}", e.message);
            waiting_on_6.push(cmd.name());
        }
    }
    let webhooks = [
        "create_webhook",
        "update_webhook",
        "delete_webhook",
        "record_webhook_delivery",
    ];
    let workflows = [
        "deploy",
        "release",
        "start_step",
        "finish_step",
        "boot_script_served",
        "retry_task",
    ];
    let blobs = ["record_blob", "drop_blob_holder", "forget_blob"];
    assert_eq!(
        waiting,
        [
            "deploy",
            "create_api_token",
            "revoke_api_token",
            "revoke_join_token",
            "renew_certs",
            "revoke_bmc_session",
            "grant_bmc_session",
        ]
        .into_iter()
        .chain(blobs)
        .chain(workflows.into_iter().skip(1))
        .chain(webhooks)
        .collect::<Vec<_>>()
    );
    assert_eq!(
        waiting_on_4,
        ["deploy"]
            .into_iter()
            .chain(blobs)
            .chain(workflows.into_iter().skip(1))
            .chain(webhooks)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        waiting_on_5,
        workflows.into_iter().chain(webhooks).collect::<Vec<_>>()
    );
    assert_eq!(waiting_on_6, webhooks);
    let admin_forever = Command::CreateApiToken {
        name: "n".into(),
        token_hash: "h".into(),
        role: rackd_types::ApiRole::Admin,
        ttl_ms: None,
    };
    assert_eq!(
        old.admits_proposal(&admin_forever),
        Ok(()),
        "old builds apply it alike"
    );
}
