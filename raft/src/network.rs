//! Raft peer transport over tonic gRPC, always over mutual TLS ([`crate::peer_tls`]).
//!
//! [`PeerNetwork`] is the openraft `RaftNetworkFactory` (one lazily connected channel per
//! target, reused across RPCs); [`PeerService`] is the server side, generic over the state
//! machine so this crate never depends on storage. Every RPC learns its caller from the
//! connection's certificate ([`Caller`]) and a node speaks only for itself: Raft messages must
//! carry the caller's own vote (and votes are asked for by voters only), and `UpdateNode`
//! changes only the caller's own addresses.
//! Payloads use [`crate::codec`]; a snapshot travels as one message: `u32 header length (BE) | header (codec) | raw snapshot bytes`.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{NetworkError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::storage::RaftStateMachine;
use openraft::ReadPolicy;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::peer_tls::{Caller, PeerAuth};
use crate::typ::*;
use crate::{NodeId, NodeInfo, TypeConfig};

pub mod pb {
    tonic::include_proto!("rackd.raft.v1");
}

use pb::raft_peer_client::RaftPeerClient;
use pb::raft_peer_server::{RaftPeer, RaftPeerServer};
use pb::Payload;

/// Largest gRPC message accepted (snapshots travel in one message).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Result shape carried in every RPC reply: the remote's answer or its error text.
type Remote<T> = Result<T, String>;

/// A command proposed by another node; the leader stamps `time_ms`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProposeRequest {
    pub actor: String,
    pub idempotency_key: Option<String>,
    pub cmd: crate::cmd::Command,
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}

/// A peer channel's key: node, address, and whether it carries bulk transfers.
type ChannelKey = (NodeId, String, bool);

/// Factory of peer clients; cheap to clone.
#[derive(Clone)]
pub struct PeerNetwork {
    auth: Arc<dyn PeerAuth>,
    /// One channel per (node, address, bulk): bulk transfers (blobs) get their own
    /// connection, so they never queue Raft's messages behind them.
    channels: Arc<Mutex<HashMap<ChannelKey, Channel>>>,
    /// Latest peer address of each member (from the replicated membership). Replication
    /// streams outlive address changes, so every RPC looks the address up here first.
    book: Arc<Mutex<HashMap<NodeId, String>>>,
}

impl PeerNetwork {
    /// Records the members' current peer addresses (called whenever the membership changes).
    pub fn set_addresses(&self, addrs: impl IntoIterator<Item = (NodeId, String)>) {
        if let Ok(mut b) = self.book.lock() {
            b.clear();
            b.extend(addrs);
        }
    }

    fn current_addr(&self, target: NodeId) -> Option<String> {
        self.book.lock().ok()?.get(&target).cloned()
    }

    pub fn new(auth: Arc<dyn PeerAuth>) -> Self {
        Self {
            auth,
            channels: Default::default(),
            book: Default::default(),
        }
    }

    /// A (lazily connecting) client for `addr`, shared by all RPCs to that node.
    pub fn client(&self, target: NodeId, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        self.client_on(target, addr, false)
    }

    fn client_on(
        &self,
        target: NodeId,
        addr: &str,
        bulk: bool,
    ) -> Result<RaftPeerClient<Channel>, String> {
        let key = (target, addr.to_string(), bulk);
        let mut map = self
            .channels
            .lock()
            .map_err(|_| "channel map poisoned".to_string())?;
        let ch = match map.get(&key) {
            Some(c) => c.clone(),
            None => {
                let ep = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("bad peer address {addr}: {e}"))?
                    .connect_timeout(Duration::from_millis(1000))
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let c = ep.connect_with_connector_lazy(crate::peer_tls::connector(
                    self.auth.clone(),
                    target,
                ));
                map.insert(key, c.clone());
                c
            }
        };
        Ok(RaftPeerClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Ask `leader` for a ReadIndex: the log index this node must apply before a linearizable read.
    pub async fn read_index(
        &self,
        leader: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<u64, String> {
        let mut c = self.client(leader, addr)?;
        let mut req = tonic::Request::new(Payload {
            data: codec::encode(&()),
        });
        req.set_timeout(timeout);
        let reply = c
            .read_index(req)
            .await
            .map_err(|s| format!("read_index rpc: {}", s.message()))?;
        let r: Remote<u64> = codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Ask `leader` to propose a command. `Err` is a transport or leadership error (the write
    /// may be retried with the same idempotency key); `Ok` carries the applied result.
    pub async fn propose(
        &self,
        leader: NodeId,
        addr: &str,
        req: &ProposeRequest,
        timeout: Duration,
    ) -> Result<crate::cmd::Response, String> {
        let mut c = self.client(leader, addr)?;
        let mut r = tonic::Request::new(Payload {
            data: codec::encode(req),
        });
        r.set_timeout(timeout);
        let reply = c
            .propose(r)
            .await
            .map_err(|s| format!("propose rpc: {}", s.message()))?;
        let r: Remote<crate::cmd::Response> =
            codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Ask `target` (the leader, if it is one) to record new addresses for member `id`.
    pub async fn update_node(
        &self,
        target: NodeId,
        addr: &str,
        id: NodeId,
        info: &NodeInfo,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut c = self.client(target, addr)?;
        let mut r = tonic::Request::new(Payload {
            data: codec::encode(&(id, info)),
        });
        r.set_timeout(timeout);
        let reply = c
            .update_node(r)
            .await
            .map_err(|s| format!("update_node rpc: {}", s.message()))?;
        let r: Remote<()> = codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Hand the cluster CA key to `target` (this node leads and is about to promote it).
    pub async fn store_ca_key(
        &self,
        target: NodeId,
        addr: &str,
        key_pem: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut c = self.client(target, addr)?;
        let mut r = tonic::Request::new(Payload {
            data: codec::encode(&key_pem),
        });
        r.set_timeout(timeout);
        let reply = c
            .store_ca_key(r)
            .await
            .map_err(|s| format!("store_ca_key rpc: {}", s.message()))?;
        let r: Remote<()> = codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Ask `target` (a voter, which holds the CA key) for a renewed certificate for this
    /// node's CSR; the answer is the certificate (PEM).
    pub async fn renew_cert(
        &self,
        target: NodeId,
        addr: &str,
        csr_pem: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut c = self.client(target, addr)?;
        let mut r = tonic::Request::new(Payload {
            data: codec::encode(&csr_pem),
        });
        r.set_timeout(timeout);
        let reply = c
            .renew_cert(r)
            .await
            .map_err(|s| format!("renew_cert rpc: {}", s.message()))?;
        let r: Remote<String> =
            codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Ask `target` (a voter) for the key location `location_id`'s secrets are sealed with.
    pub async fn location_key(
        &self,
        target: NodeId,
        addr: &str,
        location_id: u64,
        timeout: Duration,
    ) -> Result<String, String> {
        let mut c = self.client(target, addr)?;
        let mut r = tonic::Request::new(Payload {
            data: codec::encode(&location_id),
        });
        r.set_timeout(timeout);
        let reply = c
            .location_key(r)
            .await
            .map_err(|s| format!("location_key rpc: {}", s.message()))?;
        let r: Remote<String> =
            codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())?;
        r
    }
}

impl PeerNetwork {
    /// Stream a byte range of blob `req.digest` from `target`. Only opening the stream is
    /// bounded by `timeout`; the caller bounds the wait for each chunk.
    pub async fn fetch_blob(
        &self,
        target: NodeId,
        addr: &str,
        req: &FetchBlobRequest,
        timeout: Duration,
    ) -> Result<BlobChunks, String> {
        use futures::StreamExt;
        let mut c = self.client_on(target, addr, true)?;
        let r = tonic::Request::new(Payload {
            data: codec::encode(req),
        });
        let reply = tokio::time::timeout(timeout, c.fetch_blob(r))
            .await
            .map_err(|_| format!("fetch_blob rpc to node {target}: no answer in {timeout:?}"))?
            .map_err(|s| format!("fetch_blob rpc to node {target}: {}", s.message()))?;
        let s = reply.into_inner().map(move |m| {
            m.map(|p| p.data)
                .map_err(|s| format!("blob transfer from node {target}: {}", s.message()))
        });
        Ok(Box::pin(s))
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        PeerClient {
            target,
            addr: node.peer.clone(),
            net: self.clone(),
        }
    }
}

/// Client side of the connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    net: PeerNetwork,
}

fn unreachable(msg: impl ToString) -> RPCError {
    RPCError::Unreachable(Unreachable::from_string(msg))
}

fn network_err(msg: impl ToString) -> RPCError {
    RPCError::Network(NetworkError::from_string(msg))
}

fn status_to_rpc(s: tonic::Status) -> RPCError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            unreachable(format!("peer unavailable: {}", s.message()))
        }
        _ => network_err(format!("peer rpc failed: {:?} {}", s.code(), s.message())),
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError> {
        let addr = self
            .net
            .current_addr(self.target)
            .unwrap_or_else(|| self.addr.clone());
        self.net.client(self.target, &addr).map_err(unreachable)
    }

    fn request(data: Vec<u8>, option: &RPCOption) -> tonic::Request<Payload> {
        let mut r = tonic::Request::new(Payload { data });
        r.set_timeout(option.hard_ttl());
        r
    }

    fn decode_reply<T: serde::de::DeserializeOwned>(p: Payload) -> Result<T, RPCError> {
        let r: Remote<T> =
            codec::decode(&p.data).map_err(|e| network_err(format!("bad reply: {e}")))?;
        r.map_err(network_err)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        let mut c = self.client()?;
        let reply = c
            .append_entries(Self::request(codec::encode(&rpc), &option))
            .await
            .map_err(status_to_rpc)?;
        Self::decode_reply(reply.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        let mut c = self.client()?;
        let reply = c
            .vote(Self::request(codec::encode(&rpc), &option))
            .await
            .map_err(status_to_rpc)?;
        Self::decode_reply(reply.into_inner())
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        let mut c = self.client()?;
        let reply = c
            .pre_vote(Self::request(codec::encode(&rpc), &option))
            .await
            .map_err(status_to_rpc)?;
        Self::decode_reply(reply.into_inner())
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError<TypeConfig>> {
        let header = codec::encode(&SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        });
        let data = snapshot.snapshot.into_inner();
        let mut buf = Vec::with_capacity(4 + header.len() + data.len());
        buf.extend_from_slice(&(header.len() as u32).to_be_bytes());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&data);
        let mut c = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e)))?;
        let mut req = tonic::Request::new(Payload { data: buf });
        // Snapshots are big: allow much longer than a heartbeat.
        req.set_timeout(option.hard_ttl().max(Duration::from_secs(120)));
        let call = c.install_snapshot(req);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = call => {
                let reply = r.map_err(|s| StreamingError::Network(NetworkError::from_string(s.message())))?;
                let r: Remote<SnapshotResponse> = codec::decode(&reply.into_inner().data)
                    .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
                r.map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
            }
        }
    }
}

/// Server side: decodes peer RPCs and hands them to the local Raft.
pub struct PeerService<SM: RaftStateMachine<TypeConfig, SnapshotData = Cursor<Vec<u8>>>> {
    raft: openraft::Raft<TypeConfig, SM>,
    auth: Arc<dyn PeerAuth>,
    blobs: Option<Arc<dyn BlobSource>>,
}

/// A byte range of a blob a member asks for (`FetchBlob`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchBlobRequest {
    /// `sha256:<hex>`.
    pub digest: String,
    pub offset: u64,
    /// Bytes wanted from `offset` (clamped to the blob's end).
    pub len: u64,
}

/// The chunks of a blob range as they arrive, or why the transfer stopped.
pub type BlobChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>> + Send + 'static>>;

/// Where the peer service reads the blobs it serves (the node's blob store).
pub trait BlobSource: Send + Sync + 'static {
    /// Stream `len` bytes of the local verified copy of `digest` from `offset`;
    /// `Ok(None)` when this node holds no copy.
    fn read_blob(&self, req: &FetchBlobRequest) -> Result<Option<BlobChunks>, String>;
}

impl<SM> PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Cursor<Vec<u8>>>,
{
    pub fn new(raft: openraft::Raft<TypeConfig, SM>, auth: Arc<dyn PeerAuth>) -> Self {
        Self {
            raft,
            auth,
            blobs: None,
        }
    }

    /// Serve `FetchBlob` from `blobs` (without one, the RPC answers "unimplemented").
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobSource>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// The member this request comes from: the connection's certificate named it, and the
    /// cluster has not removed it since the connection was made.
    fn caller<T>(&self, req: &tonic::Request<T>) -> Result<NodeId, tonic::Status> {
        let Some(Caller(id)) = req.extensions().get::<Caller>().copied() else {
            return Err(tonic::Status::unauthenticated(
                "peer RPCs need a client certificate of this cluster",
            ));
        };
        if !self.auth.admitted(id) {
            return Err(tonic::Status::permission_denied(format!(
                "node {id} was removed from the cluster"
            )));
        }
        Ok(id)
    }

    /// Requests beyond Raft's own messages (proposals, ReadIndex) come from members only, by
    /// this node's current membership. Raft messages are not held to it: a node catching up
    /// applies old memberships that do not name today's leader yet.
    fn member(&self, caller: NodeId) -> Result<(), tonic::Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.membership_config.membership().get_node(&caller).is_some() {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "node {caller} is no member of this cluster"
            )))
        }
    }

    /// Votes are asked for by voters only: a learner (a location node) campaigning in its own
    /// name is refused. Judged by this node's membership (the latest it appended, joint
    /// configurations included): a voter this node does not know of yet is refused until it
    /// has the configuration, which costs an election at most, never safety.
    fn voter(&self, caller: NodeId) -> Result<(), tonic::Status> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == caller)
        {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "node {caller} is no voter of this node's membership: it may not ask for votes"
            )))
        }
    }

    pub fn into_server(self) -> RaftPeerServer<Self> {
        RaftPeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// A Raft message may only carry its sender's own vote: a member cannot campaign, lead or
/// send a snapshot in another member's name.
fn own_vote(caller: NodeId, vote: &Vote) -> Result<(), tonic::Status> {
    use openraft::vote::RaftLeaderId;
    let named = *vote.leader_id().node_id();
    if named == caller {
        Ok(())
    } else {
        Err(tonic::Status::permission_denied(format!(
            "node {caller} sent a Raft message in the name of node {named}"
        )))
    }
}

fn bad_request(e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("malformed payload: {e}"))
}

fn reply<T: Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<tonic::Response<Payload>, tonic::Status> {
    let r: Remote<T> = r.map_err(|e| e.to_string());
    Ok(tonic::Response::new(Payload {
        data: codec::encode(&r),
    }))
}

#[tonic::async_trait]
impl<SM> RaftPeer for PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = Cursor<Vec<u8>>>,
{
    async fn append_entries(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let rpc: AppendEntriesRequest =
            codec::decode(&req.into_inner().data).map_err(bad_request)?;
        own_vote(caller, &rpc.vote)?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let rpc: VoteRequest = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        own_vote(caller, &rpc.vote)?;
        self.voter(caller)?;
        reply(self.raft.vote(rpc).await)
    }

    async fn pre_vote(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let rpc: VoteRequest = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        own_vote(caller, &rpc.vote)?;
        self.voter(caller)?;
        reply(self.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let data = req.into_inner().data;
        if data.len() < 4 {
            return Err(bad_request("snapshot frame too short"));
        }
        let hlen = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if data.len() < 4 + hlen {
            return Err(bad_request("snapshot header truncated"));
        }
        let header: SnapshotHeader = codec::decode(&data[4..4 + hlen]).map_err(bad_request)?;
        own_vote(caller, &header.vote)?;
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: Cursor::new(data[4 + hlen..].to_vec()),
        };
        reply(self.raft.install_full_snapshot(header.vote, snapshot).await)
    }

    async fn propose(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        self.member(caller)?;
        let p: ProposeRequest = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        self.auth
            .may_propose(caller, &p.actor, &p.cmd)
            .map_err(tonic::Status::permission_denied)?;
        // Time is stamped here, on the leader, never in apply.
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let request = crate::cmd::Request {
            time_ms,
            actor: p.actor,
            idempotency_key: p.idempotency_key,
            cmd: p.cmd,
        };
        let r = self.raft.client_write(request).await.map(|resp| resp.data);
        reply(r)
    }

    async fn update_node(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let (id, info): (NodeId, NodeInfo) =
            codec::decode(&req.into_inner().data).map_err(bad_request)?;
        if id != caller {
            return Err(tonic::Status::permission_denied(format!(
                "node {caller} may not change the addresses of node {id}"
            )));
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return reply::<(), _>(Err(format!("node {id} is not a member")));
        }
        // Never let one member take another member's addresses.
        if let Some((other, _)) = membership
            .nodes()
            .find(|(n, i)| **n != id && (i.api == info.api || i.peer == info.peer))
        {
            return reply::<(), _>(Err(format!(
                "addresses {}/{} belong to node {other}",
                info.api, info.peer
            )));
        }
        let r = self
            .raft
            .change_membership(
                openraft::ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, info)])),
                false,
            )
            .await
            .map(|_| ());
        reply(r)
    }

    async fn renew_cert(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        // The caller is who its current certificate says; the new one names the same node.
        let caller = self.caller(&req)?;
        self.member(caller)?;
        let csr: String = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        let api = {
            let m = self.raft.metrics().borrow_watched().clone();
            m.membership_config
                .membership()
                .get_node(&caller)
                .map(|i| i.api.clone())
                .unwrap_or_default()
        };
        let r = self.auth.issue_cert(caller, &api, &csr);
        if r.is_ok() {
            tracing::info!(node = caller, "issued a renewed certificate");
        }
        reply(r)
    }

    async fn location_key(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        self.member(caller)?;
        let location_id: u64 = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        let r = self.auth.location_key(caller, location_id);
        if r.is_ok() {
            tracing::info!(node = caller, location_id, "handed out a location key");
        }
        reply(r)
    }

    type FetchBlobStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<Payload, tonic::Status>> + Send + 'static>,
    >;

    async fn fetch_blob(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Self::FetchBlobStream>, tonic::Status> {
        use futures::StreamExt;
        let caller = self.caller(&req)?;
        self.member(caller)?;
        let r: FetchBlobRequest = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        let Some(src) = self.blobs.clone() else {
            return Err(tonic::Status::unimplemented("this node serves no blobs"));
        };
        let digest = r.digest.clone();
        let opened = tokio::task::spawn_blocking(move || src.read_blob(&r))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        match opened {
            Ok(Some(chunks)) => {
                tracing::debug!(node = caller, %digest, "serving a blob");
                let s = chunks.map(|c| {
                    c.map(|data| Payload { data })
                        .map_err(tonic::Status::internal)
                });
                Ok(tonic::Response::new(Box::pin(s)))
            }
            Ok(None) => Err(tonic::Status::not_found(format!(
                "this node holds no copy of {digest}"
            ))),
            Err(e) => Err(tonic::Status::invalid_argument(e)),
        }
    }

    async fn store_ca_key(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        let leader = self.raft.metrics().borrow_watched().current_leader;
        if leader != Some(caller) {
            return Err(tonic::Status::permission_denied(format!(
                "node {caller} is not the leader: only the leader hands out the cluster CA key"
            )));
        }
        let key: String = codec::decode(&req.into_inner().data).map_err(bad_request)?;
        let r = self.auth.store_ca_key(&key);
        if r.is_ok() {
            tracing::info!(from = caller, "this node now holds the cluster CA key");
        }
        reply(r)
    }

    async fn read_index(
        &self,
        req: tonic::Request<Payload>,
    ) -> Result<tonic::Response<Payload>, tonic::Status> {
        let caller = self.caller(&req)?;
        self.member(caller)?;
        let r = self
            .raft
            .ensure_linearizable(ReadPolicy::ReadIndex)
            .await
            .map(|rl| rl.log_id().index());
        reply(r)
    }
}
