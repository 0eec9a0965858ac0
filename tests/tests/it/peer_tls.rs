//! The peer port speaks only to members (issue 11, item 2): the attack the security review
//! tried (one gRPC `Propose` of an API token the attacker chose) fails in plaintext, over TLS
//! without a client certificate, with a certificate from another CA and with the certificate
//! of a removed member, and the cluster is unchanged afterwards. A member's own certificate
//! works (the control that shows the harness can succeed), but only in its own name.

use std::sync::Arc;
use std::time::Duration;

use rackd::cluster::pki::{node_name, CaBundle, NodeKey, NodeTls, Pki};
use rackd_raft::cmd::Command;
use rackd_raft::network::{PeerNetwork, ProposeRequest};
use rackd_raft::peer_tls::PeerAuth;
use rackd_raft::{NodeId, NodeInfo};
use rackd_tests::Cluster;
use rackd_types::ClusterInfo;
use reqwest::Method;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const RPC: Duration = Duration::from_secs(5);
const ATTACKER_TOKEN: &str = "rackd-admin-attacker-chose-this-token";

/// A client-side [`PeerAuth`] with whatever TLS client configuration a case needs.
struct Dialer {
    cluster_id: String,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl PeerAuth for Dialer {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
    fn identify(&self, _: &CertificateDer<'_>) -> Option<NodeId> {
        None
    }
    fn server_name(&self, node: NodeId) -> ServerName<'static> {
        ServerName::try_from(node_name(node, &self.cluster_id)).unwrap()
    }
    fn admitted(&self, _: NodeId) -> bool {
        true
    }
    fn may_propose(&self, _: NodeId, _: &str, _: &Command) -> Result<(), String> {
        Ok(())
    }
    fn store_ca_key(&self, _: &str) -> Result<(), String> {
        Err("not a node".into())
    }
    fn issue_cert(&self, _: NodeId, _: &str, _: &str) -> Result<String, String> {
        Err("not a node".into())
    }
    fn location_key(&self, _: NodeId, _: u64) -> Result<String, String> {
        Err("not a node".into())
    }
}

fn dialer(tls: &NodeTls, client: Arc<rustls::ClientConfig>) -> PeerNetwork {
    PeerNetwork::new(Arc::new(Dialer {
        cluster_id: tls.cluster_id.clone(),
        client,
        server: tls.server_config().unwrap(),
    }))
}

/// A dialer presenting `tls`'s certificate.
fn as_node(tls: &NodeTls) -> PeerNetwork {
    dialer(tls, tls.client_config().unwrap())
}

/// The TLS material in node `i`'s data directory.
fn node_tls(c: &Cluster, i: usize, cluster_id: &str, node_id: u64) -> NodeTls {
    Pki::in_data_dir(&c.nodes[i].data_dir)
        .load_node(cluster_id, node_id)
        .unwrap()
        .expect("node certificate")
}

/// A client that trusts the cluster CA of `tls` and presents no certificate.
fn anonymous_client(tls: &NodeTls) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(anonymous)
}

/// A certificate naming `tls`'s node, issued by another CA (same cluster id).
fn forged_tls(tls: &NodeTls) -> NodeTls {
    let cid = &tls.cluster_id;
    let other_ca = CaBundle::generate(cid, std::time::SystemTime::now()).unwrap();
    let key = NodeKey::generate().unwrap();
    let forged = other_ca
        .issue(&key.csr_pem, tls.node_id, cid, std::time::SystemTime::now())
        .unwrap();
    NodeTls::new(cid, tls.node_id, &tls.ca_pem, &forged, &key.key_pem).unwrap()
}

/// A certificate from the real CA (node 1 holds its key) for node id 99, no member: what a
/// holder of the CA key could make.
fn stranger_tls(c: &Cluster, tls: &NodeTls) -> NodeTls {
    let cid = &tls.cluster_id;
    let ca = Pki::in_data_dir(&c.nodes[0].data_dir)
        .load_ca()
        .unwrap()
        .expect("node 1 holds the CA key");
    let key = NodeKey::generate().unwrap();
    let cert = ca
        .issue(&key.csr_pem, 99, cid, std::time::SystemTime::now())
        .unwrap();
    NodeTls::new(cid, 99, &tls.ca_pem, &cert, &key.key_pem).unwrap()
}

fn attack() -> ProposeRequest {
    ProposeRequest {
        actor: "attacker".into(),
        idempotency_key: None,
        cmd: Command::CreateApiToken {
            name: "attacker".into(),
            token_hash: rackd::cluster::secrets::hash_secret(ATTACKER_TOKEN),
            role: rackd_types::ApiRole::Admin,
            ttl_ms: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_port_refuses_everyone_but_members() {
    let mut c = Cluster::start("peertls", 3, &[]).await.expect("cluster");
    let leader = c.wait_leader(T).await.unwrap();
    crate::util::setup_location(&c, leader).await;
    let ci: ClusterInfo = c.get_json(leader, "/v1/cluster").await.unwrap();
    let cid = ci.cluster_id.clone();
    let leader_id = ci.leader_id.unwrap();
    let addr = c.nodes[leader].peer.clone().unwrap();
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(c.health(i).await.unwrap().node_id);
        }
        v
    };
    let member = (leader + 1) % 3;
    let removed = (leader + 2) % 3;
    let member_tls = node_tls(&c, member, &cid, ids[member]);
    let removed_tls = node_tls(&c, removed, &cid, ids[removed]);

    // 1. Plaintext gRPC, as in the review.
    let plain = async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(RPC)
            .timeout(RPC)
            .connect()
            .await?;
        let mut client = rackd_raft::network::pb::raft_peer_client::RaftPeerClient::new(ch);
        let r = client
            .propose(rackd_raft::network::pb::Payload {
                data: rackd_raft::codec::encode(&attack()),
            })
            .await?;
        anyhow::Ok(r.into_inner().data.len())
    }
    .await;
    assert!(plain.is_err(), "plaintext Propose answered: {plain:?}");

    // 2. TLS that trusts the cluster CA but presents no client certificate.
    let r = dialer(&member_tls, anonymous_client(&member_tls))
        .propose(leader_id, &addr, &attack(), RPC)
        .await;
    assert!(r.is_err(), "TLS without a client certificate: {r:?}");

    // 3. A certificate naming a member, issued by another CA (same cluster id).
    let r = as_node(&forged_tls(&member_tls))
        .propose(leader_id, &addr, &attack(), RPC)
        .await;
    assert!(r.is_err(), "certificate from another CA: {r:?}");

    // 4. A certificate from the real CA for a node id that is no member (what a holder of
    //    the CA key could make) gets no proposal through.
    let r = as_node(&stranger_tls(&c, &member_tls))
        .propose(leader_id, &addr, &attack(), RPC)
        .await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("no member")),
        "a certificate for a node id that is no member: {r:?}"
    );

    // 5. A member's own certificate reaches the leader, but only with what nodes write
    //    themselves: the attack is refused...
    let net = as_node(&member_tls);
    let r = net.propose(leader_id, &addr, &attack(), RPC).await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("in the name of")),
        "a member proposed in an operator's name: {r:?}"
    );
    let mut own_name = attack();
    own_name.actor = format!("node:{}", ids[member]);
    let r = net.propose(leader_id, &addr, &own_name, RPC).await;
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("may not propose create_api_token")),
        "a member proposed an API token: {r:?}"
    );
    // ...and a discovered machine (what a location node's DHCP records) is accepted: the
    // control that shows this harness reaches the leader.
    let ok = net
        .propose(
            leader_id,
            &addr,
            &ProposeRequest {
                actor: format!("node:{}", ids[member]),
                idempotency_key: None,
                cmd: Command::CreateMachine(rackd_types::payload::CreateMachine {
                    hostname: "discovered-via-peer-port".into(),
                    location: "dc1".into(),
                    rack_id: None,
                    rack_unit: None,
                    macs: vec!["52:54:00:aa:bb:cc".into()],
                    ips: vec![],
                    bmc: None,
                    state: Some(rackd_types::MachineState::New),
                    description: String::new(),
                    tags: vec!["discovered".into()],
                }),
            },
            RPC,
        )
        .await;
    assert!(ok.is_ok(), "a member's certificate was refused: {ok:?}");
    // ...but it speaks only for itself: it cannot move another member's addresses.
    let other = ids[removed];
    let r = net
        .update_node(
            leader_id,
            &addr,
            other,
            &NodeInfo::new("127.0.0.1:1", "127.0.0.1:1"),
            RPC,
        )
        .await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("may not change")),
        "member {} changed node {other}'s addresses: {r:?}",
        ids[member]
    );

    // 6. A removed member's certificate is refused.
    let (s, v) = c
        .request(
            leader,
            Method::DELETE,
            &format!("/v1/cluster/members/{}", ids[removed]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    c.nodes[removed].stop();
    let r = as_node(&removed_tls)
        .propose(leader_id, &addr, &attack(), RPC)
        .await;
    assert!(r.is_err(), "a removed member's certificate: {r:?}");

    // The cluster is unchanged: no attacker token exists and it opens nothing.
    let (s, v) = c
        .request(leader, Method::GET, "/v1/tokens/api", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(!v.to_string().contains("attacker"), "{v}");
    let r = c
        .http
        .post(format!("{}/v1/locations", c.url(leader)))
        .bearer_auth(ATTACKER_TOKEN)
        .json(&json!({"name": "owned"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let locs: Value = c.get_json(leader, "/v1/locations").await.unwrap();
    assert!(!locs.to_string().contains("owned"), "{locs}");
    // The member addresses are those the members advertised.
    let ci: ClusterInfo = c.get_json(leader, "/v1/cluster").await.unwrap();
    assert!(
        ci.members.iter().all(|m| m.peer_addr != "127.0.0.1:1"),
        "{ci:?}"
    );
}

/// Voters hold the CA key from the moment they are voters (the leader hands it over before
/// promoting a node), so another voter issues certificates once the first node is gone; a
/// learner never gets the key, and only the leader may hand it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_take_over_issuing_certificates_learners_never_hold_the_ca_key() {
    let mut c = Cluster::start("cakey", 3, &[]).await.expect("cluster");
    let learner = c.join(0, true).await.expect("learner joins");
    let key_file = |c: &Cluster, i: usize| c.nodes[i].data_dir.join("pki/ca.key");
    // No waiting: a join is complete only once the node holds the key.
    let original = std::fs::read_to_string(key_file(&c, 0)).unwrap();
    for i in 1..3 {
        use std::os::unix::fs::PermissionsExt;
        let f = key_file(&c, i);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), original);
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert!(!key_file(&c, learner).exists());

    // A member that does not lead cannot plant a CA key on another node.
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let cid = ci.cluster_id.clone();
    let leader = c.wait_leader(T).await.unwrap();
    let follower = (leader + 1) % 3;
    let follower_id = c.health(follower).await.unwrap().node_id;
    let follower_tls = node_tls(&c, follower, &cid, follower_id);
    let learner_id = c.health(learner).await.unwrap().node_id;
    let r = as_node(&follower_tls)
        .store_ca_key(
            learner_id,
            c.nodes[learner].peer.as_deref().unwrap(),
            &original,
            RPC,
        )
        .await;
    assert!(
        r.as_ref().is_err_and(|e| e.contains("not the leader")),
        "a follower handed out the CA key: {r:?}"
    );
    assert!(!key_file(&c, learner).exists());

    // The bootstrapping node goes away; the next join is issued its certificate by another
    // voter.
    c.nodes[0].stop();
    let leader = c.wait_leader(T).await.unwrap();
    assert_ne!(leader, 0);
    let j = c.join(leader, false).await.expect("join after node 1 left");
    let id = c.health(j).await.unwrap().node_id;
    let tls = node_tls(&c, j, &cid, id);
    assert_eq!(tls.ca_pem.trim_end(), follower_tls.ca_pem.trim_end());
    assert_eq!(std::fs::read_to_string(key_file(&c, j)).unwrap(), original);
    assert!(!key_file(&c, learner).exists());
}

/// A location's secrets key goes only to a node bound to that location by its join token
/// (`rackd tokens create --location`): a voter answers the bound learner for its own site,
/// refuses it another site's key, and refuses a learner whose token named no location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_keys_go_to_the_nodes_bound_to_their_site_only() {
    let mut c = Cluster::start("lockeys", 1, &[]).await.expect("cluster");
    let bound = c
        .join_with(0, true, &["--location", "dc1"])
        .await
        .expect("learner of dc1");
    let unbound = c.join(0, true).await.expect("learner without a site");
    let mut loc = vec![];
    for l in ["dc1", "dc2"] {
        let v: serde_json::Value = c
            .post_json(0, "/v1/locations", &serde_json::json!({"name": l}))
            .await
            .unwrap();
        loc.push(v["id"].as_u64().unwrap());
    }
    let tokens: serde_json::Value = c.get_json(0, "/v1/tokens/join").await.unwrap();
    assert!(
        tokens["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["location"] == "dc1" && t["used_by_node"].is_u64()),
        "{tokens}"
    );
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let cid = ci.cluster_id.clone();
    let voter = c.nodes[0].peer.clone().unwrap();
    let voter_id = c.health(0).await.unwrap().node_id;
    let ask = |i: usize, location: u64| {
        let c = &c;
        let cid = cid.clone();
        let voter = voter.clone();
        async move {
            let id = c.health(i).await.unwrap().node_id;
            as_node(&node_tls(c, i, &cid, id))
                .location_key(voter_id, &voter, location, RPC)
                .await
        }
    };
    let own = ask(bound, loc[0]).await;
    assert!(own.as_ref().is_ok_and(|k| k.len() == 64), "{own:?}");
    let other = ask(bound, loc[1]).await;
    assert!(
        other
            .as_ref()
            .is_err_and(|e| e.contains("bound to location \"dc1\"")),
        "{other:?}"
    );
    let none = ask(unbound, loc[0]).await;
    assert!(
        none.as_ref()
            .is_err_and(|e| e.contains("bound to no location")),
        "{none:?}"
    );

    // A learner may not campaign: a vote it asks for in its own name is refused, the voter's
    // term does not move, and it stays the leader.
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    let term = c.health(0).await.unwrap().term;
    let learner_id = c.health(bound).await.unwrap().node_id;
    let mut net = as_node(&node_tls(&c, bound, &cid, learner_id));
    let mut client = net
        .new_client(
            voter_id,
            &NodeInfo::new(c.nodes[0].api.clone().unwrap(), voter.clone()),
        )
        .await;
    let ask_vote =
        openraft::raft::VoteRequest::new(rackd_raft::typ::Vote::new(term + 5, learner_id), None);
    for pre in [false, true] {
        let opt = RPCOption::new(RPC);
        let r = if pre {
            client.pre_vote(ask_vote.clone(), opt).await
        } else {
            client.vote(ask_vote.clone(), opt).await
        };
        let e = format!("{:?}", r.as_ref().err());
        assert!(r.is_err() && e.contains("no voter"), "pre_vote {pre}: {e}");
    }
    let h = c.health(0).await.unwrap();
    assert_eq!((h.term, h.raft_state.as_str()), (term, "leader"));
}

/// The QUIC link (the UDP twin of the peer port) answers members only: no client
/// certificate, a certificate from another CA, one for a node id that is no member, and a
/// removed member's are all refused; a member's own certificate fetches the blob, whose bytes
/// hash to its digest (the control that shows this harness can succeed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_link_answers_members_only() {
    use futures::StreamExt;
    use rackd::cluster::link::Link;
    let mut c = Cluster::start("quictls", 3, &[]).await.expect("cluster");
    let leader = c.wait_leader(T).await.unwrap();
    let ci: ClusterInfo = c.get_json(leader, "/v1/cluster").await.unwrap();
    let cid = ci.cluster_id.clone();
    let data = b"a kernel only members may fetch".to_vec();
    let digest = rackd::blobs::store::digest_of(&data);
    let r = c
        .http
        .put(format!("{}/v1/blobs/{digest}", c.url(leader)))
        .bearer_auth(&c.token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let leader_id = ci.leader_id.unwrap();
    let addr = c.nodes[leader].peer.clone().unwrap();
    let member = (leader + 1) % 3;
    let member_id = c.health(member).await.unwrap().node_id;
    let member_tls = node_tls(&c, member, &cid, member_id);
    let req = rackd_raft::network::FetchBlobRequest {
        digest: digest.to_string(),
        offset: 0,
        len: u64::MAX,
    };
    let link = |tls: &NodeTls, client: Arc<rustls::ClientConfig>| {
        Link::new(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Dialer {
                cluster_id: tls.cluster_id.clone(),
                client,
                server: tls.server_config().unwrap(),
            }),
        )
        .unwrap()
    };
    let fetch = |l: Arc<Link>| {
        let (addr, req) = (addr.clone(), req.clone());
        async move {
            let chunks = l.fetch_blob(leader_id, &addr, &req).await?;
            let parts: Vec<Result<Vec<u8>, String>> = chunks.collect().await;
            parts
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map(|p| p.concat())
        }
    };
    let refused = [
        (
            "no client certificate",
            link(&member_tls, anonymous_client(&member_tls)),
        ),
        ("another CA", {
            let f = forged_tls(&member_tls);
            link(&f, f.client_config().unwrap())
        }),
        ("no member", {
            let s = stranger_tls(&c, &member_tls);
            link(&s, s.client_config().unwrap())
        }),
    ];
    for (what, l) in refused {
        let r = fetch(l).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    let got = fetch(link(&member_tls, member_tls.client_config().unwrap()))
        .await
        .expect("a member fetches over the link");
    assert_eq!(rackd::blobs::store::digest_of(&got), digest);

    // Removed: refused from then on.
    let (s, v) = c
        .request(
            leader,
            Method::DELETE,
            &format!("/v1/cluster/members/{member_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    c.nodes[member].stop();
    let r = fetch(link(&member_tls, member_tls.client_config().unwrap())).await;
    assert!(r.is_err(), "a removed member: {r:?}");
}
