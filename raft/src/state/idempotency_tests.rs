//! An idempotency record answers only the request it was made for.

use rackd_types::payload::{CreateLocation, UpdateLocation};
use rackd_types::ErrorCode;

use super::*;
use crate::cmd::{Command, Request, Secret};

fn keyed(t: u64, key: &str, cmd: Command) -> Request {
    Request {
        time_ms: t,
        actor: "ops".into(),
        idempotency_key: Some(key.into()),
        cmd,
    }
}

fn loc(name: &str) -> Command {
    Command::CreateLocation(CreateLocation {
        name: name.into(),
        description: String::new(),
        discovery: false,
    })
}

#[test]
fn a_reused_key_with_another_request_is_refused_and_changes_nothing() {
    let mut s = State::default();
    let first = s.apply(&keyed(1, "t1:K", loc("dc1")));
    let id = first.0.as_ref().unwrap().body()["id"].as_u64().unwrap();
    assert_eq!(s.apply(&keyed(2, "t1:K", loc("dc1"))), first, "a retry");
    let before = serde_json::to_string(&s).unwrap();
    let other = s.apply(&keyed(
        3,
        "t1:K",
        Command::DeleteLocation { id, if_match: None },
    ));
    assert_eq!(
        other.0.unwrap_err().code,
        ErrorCode::IdempotencyKeyReused,
        "a delete reusing a create's key is not answered with the create's result"
    );
    let other = s.apply(&keyed(
        4,
        "t1:K",
        Command::UpdateLocation {
            id,
            if_match: None,
            patch: UpdateLocation {
                description: Some("x".into()),
                ..Default::default()
            },
        },
    ));
    assert_eq!(other.0.unwrap_err().code, ErrorCode::IdempotencyKeyReused);
    // Only leader time moved; no row changed.
    let mut after: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    let mut want: serde_json::Value = serde_json::from_str(&before).unwrap();
    after["meta"]["last_time"] = 0.into();
    want["meta"]["last_time"] = 0.into();
    assert_eq!(after, want);
    assert_eq!(s.locations.get(&id).unwrap().meta.version, 1);
}

#[test]
fn secrets_generated_per_attempt_do_not_change_the_digest() {
    let a = Command::Deploy {
        id: 5,
        if_match: None,
        image: "debian".into(),
        token: Secret("one".into()),
        sealed_token: None,
        boot_timeout_ms: None,
        install_timeout_ms: None,
    };
    let b = Command::Deploy {
        id: 5,
        if_match: None,
        image: "debian".into(),
        token: Secret("two".into()),
        sealed_token: None,
        boot_timeout_ms: None,
        install_timeout_ms: None,
    };
    let c = Command::Deploy {
        id: 6,
        if_match: None,
        image: "debian".into(),
        token: Secret("one".into()),
        sealed_token: None,
        boot_timeout_ms: None,
        install_timeout_ms: None,
    };
    assert_eq!(a.idempotency_digest(), b.idempotency_digest());
    assert_ne!(a.idempotency_digest(), c.idempotency_digest());
    // Sealed (a fresh token per attempt, sealed afresh): the same request too.
    let sealed = |tok: &str, s: &str| Command::Deploy {
        id: 5,
        if_match: None,
        image: "debian".into(),
        token: Secret(crate::state::deploy_token_check(tok)),
        sealed_token: Some(Secret(s.into())),
        boot_timeout_ms: None,
        install_timeout_ms: None,
    };
    assert_eq!(
        sealed("one", "x").idempotency_digest(),
        sealed("two", "y").idempotency_digest()
    );
    let t1 = Command::CreateApiToken {
        name: "n".into(),
        token_hash: "a".repeat(64),
        role: rackd_types::ApiRole::Reader,
        ttl_ms: None,
    };
    let t2 = Command::CreateApiToken {
        name: "n".into(),
        token_hash: "b".repeat(64),
        role: rackd_types::ApiRole::Reader,
        ttl_ms: None,
    };
    assert_eq!(t1.idempotency_digest(), t2.idempotency_digest());
}

#[test]
fn records_written_before_digests_existed_still_answer() {
    let mut s = State::default();
    let first = s.apply(&keyed(1, "t1:K", loc("dc1")));
    let k = "ops\u{0}t1:K".to_string();
    let mut rec = s.idempotency.get(&k).unwrap().clone();
    rec.digest.clear();
    s.idempotency.insert(k, rec);
    assert_eq!(s.apply(&keyed(2, "t1:K", loc("dc1"))), first);
}

#[test]
fn expired_join_tokens_are_pruned_deterministically() {
    let mut s = State::default();
    let mk = |t: u64, h: char| Request {
        time_ms: t,
        actor: "ops".into(),
        idempotency_key: None,
        cmd: Command::CreateJoinToken {
            token_hash: h.to_string().repeat(64),
            ttl_ms: 1000,
            description: String::new(),
            location: None,
        },
    };
    assert!(s.apply(&mk(1, 'a')).0.is_ok());
    assert!(s.apply(&mk(2, 'b')).0.is_ok());
    assert_eq!(s.join_tokens.len(), 2);
    let later = 2 + 1000 + super::cluster::JOIN_TOKEN_RETAIN_MS + 1;
    assert!(s.apply(&mk(later, 'c')).0.is_ok());
    assert_eq!(s.join_tokens.len(), 1);
    assert!(s.join_token_by_hash(&"a".repeat(64)).is_none());
    let mut rebuilt = s.clone();
    rebuilt.rebuild_indexes();
    assert_eq!(rebuilt.idx, s.idx);
}

#[test]
fn a_record_written_before_answers_were_typed_still_answers_its_retry() {
    // A record as older builds stored it: the answer's JSON under "Ok".
    let mut s = State::default();
    let first = s.apply(&keyed(1, "t1:K", loc("dc1")));
    let loc_json = first.0.as_ref().unwrap().body();
    let k = "ops\u{0}t1:K".to_string();
    let digest = s.idempotency.get(&k).unwrap().digest.clone();
    let old = serde_json::json!({ "time": 1, "response": { "Ok": loc_json }, "digest": digest });
    let rec: IdempotencyRecord = serde_json::from_value(old).unwrap();
    assert!(matches!(rec.response.0, Ok(Applied::Legacy(_))));
    s.idempotency.insert(k, rec);
    let retry = s.apply(&keyed(2, "t1:K", loc("dc1")));
    let got = retry.0.unwrap().into_location().unwrap();
    assert_eq!(got, first.0.unwrap().into_location().unwrap());
    // An old error record decodes as the same error.
    let err: Response = serde_json::from_value(
        serde_json::json!({ "Err": { "code": "NotFound", "message": "x" } }),
    )
    .unwrap();
    assert_eq!(err.0.unwrap_err().code, ErrorCode::NotFound);
}
