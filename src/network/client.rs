//! The calling side: a pool of connections per peer, used by openraft for its
//! RPCs and by the request path for forwarding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, StorageIOError};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{frame_codec, PeerRequest, PeerResponse, MAX_FRAME_LEN};
use crate::store::snapshot::KnownWhole;
use crate::types::{NodeId, TypeConfig};

type Connection = Framed<TcpStream, LengthDelimitedCodec>;

/// Idle connections kept per peer; more are opened when needed and closed after.
const IDLE_PER_PEER: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call to a peer did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the peer could not be reached or refused us.
    #[error("replica {target} at {addr} is unreachable: {why}")]
    Unreachable {
        target: NodeId,
        addr: String,
        why: String,
    },
    /// The request may have been delivered; its outcome is unknown.
    #[error("lost contact with replica {target} during the call: {why}")]
    Interrupted { target: NodeId, why: String },
    /// The request is larger than a frame may be.
    #[error("request of {0} bytes is over the frame limit")]
    TooLarge(usize),
}

/// Connections to the other replicas. Cheap to clone.
#[derive(Clone)]
pub struct Network {
    cluster_id: Arc<str>,
    my_id: NodeId,
    idle: Arc<Mutex<HashMap<NodeId, Vec<Connection>>>>,
    /// Forgotten when a replica finds the snapshot we sent it damaged.
    known_whole_snapshot: KnownWhole,
}

impl Network {
    pub fn new(cluster_id: String, my_id: NodeId, known_whole_snapshot: KnownWhole) -> Self {
        Network {
            cluster_id: cluster_id.into(),
            my_id,
            idle: Default::default(),
            known_whole_snapshot,
        }
    }

    /// Sends one request to replica `target` at `addr` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let body = serde_json::to_vec(request).expect("peer requests serialise");
        if body.len() > MAX_FRAME_LEN {
            return Err(CallError::TooLarge(body.len()));
        }
        let mut connection = match self.take_idle(target) {
            Some(connection) => connection,
            None => self.connect(target, addr).await?,
        };
        let interrupted = |why: String| CallError::Interrupted { target, why };
        let exchange = async {
            connection
                .send(bytes::Bytes::from(body))
                .await
                .map_err(|e| interrupted(e.to_string()))?;
            match connection.next().await {
                Some(Ok(frame)) => serde_json::from_slice::<PeerResponse>(&frame)
                    .map_err(|e| interrupted(format!("unreadable answer: {e}"))),
                Some(Err(e)) => Err(interrupted(e.to_string())),
                None => Err(interrupted("connection closed".into())),
            }
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| interrupted(format!("no answer within {timeout:?}")))??;
        self.put_idle(target, connection);
        Ok(response)
    }

    async fn connect(&self, target: NodeId, addr: &str) -> Result<Connection, CallError> {
        let unreachable = |why: String| CallError::Unreachable {
            target,
            addr: addr.to_string(),
            why,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut connection = Framed::new(stream, frame_codec());
        let hello = PeerRequest::Hello {
            cluster_id: self.cluster_id.to_string(),
            from: self.my_id,
            to: target,
        };
        let body = serde_json::to_vec(&hello).expect("hello serialises");
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, async {
            connection.send(bytes::Bytes::from(body)).await?;
            connection.next().await.transpose()
        })
        .await
        .map_err(|_| unreachable("no answer to hello".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        match answer.map(|frame| serde_json::from_slice::<PeerResponse>(&frame)) {
            Some(Ok(PeerResponse::Welcome)) => Ok(connection),
            Some(Ok(PeerResponse::Refused(why))) => Err(unreachable(format!("refused us: {why}"))),
            _ => Err(unreachable(
                "did not answer hello as a replica would".into(),
            )),
        }
    }

    /// An idle connection that the peer has not closed meanwhile.
    fn take_idle(&self, target: NodeId) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pool = idle.get_mut(&target)?;
        while let Some(connection) = pool.pop() {
            let mut probe = [0u8; 1];
            // An idle connection has nothing to read; EOF or data means it is stale.
            match connection.get_ref().try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(connection),
                _ => continue,
            }
        }
        None
    }

    fn put_idle(&self, target: NodeId, connection: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pool = idle.entry(target).or_default();
        if pool.len() < IDLE_PER_PEER {
            pool.push(connection);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            network: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's handle on one peer.
pub struct PeerClient {
    network: Network,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn rpc(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, CallError> {
        self.network
            .call(self.target, &self.addr, &request, option.hard_ttl())
            .await
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

fn transport_error<E: std::error::Error>(
    error: CallError,
    entries: usize,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match error {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        CallError::Interrupted { .. } => RPCError::Network(NetworkError::new(&error)),
        CallError::TooLarge(_) => RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
            (entries as u64 / 2).max(1),
        )),
    }
}

fn unexpected<E: std::error::Error>(
    what: &str,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let error = CallError::Interrupted {
        target: 0,
        why: format!("peer gave an unexpected answer to {what}"),
    };
    RPCError::Network(NetworkError::new(&error))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len();
        match self.rpc(PeerRequest::AppendEntries(rpc), &option).await {
            Ok(PeerResponse::AppendEntries(Ok(response))) => Ok(response),
            Ok(PeerResponse::AppendEntries(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(unexpected("append-entries")),
            Err(e) => Err(transport_error(e, entries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let rpc_snapshot_id = rpc.meta.snapshot_id.clone();
        match self
            .rpc(PeerRequest::InstallSnapshot(rpc.into()), &option)
            .await
        {
            Ok(PeerResponse::InstallSnapshot(Ok(response))) => Ok(response),
            Ok(PeerResponse::InstallSnapshot(Err(e))) => Err(self.remote(e)),
            Ok(PeerResponse::SnapshotDamaged(why)) => {
                // Our file decayed in a way its length and time do not show.
                // The next attempt reads it through, sets it aside and builds
                // a new one. openraft treats a remote fatal error as the
                // replica being unreachable: it backs off, then sends afresh.
                self.network.known_whole_snapshot.forget();
                tracing::warn!(
                    "replica {} refused our snapshot {}: {why}",
                    self.target,
                    rpc_snapshot_id
                );
                let refused = StorageIOError::read_snapshot(None, AnyError::error(why));
                Err(self.remote(RaftError::Fatal(Fatal::StorageError(refused.into()))))
            }
            Ok(_) => Err(unexpected("install-snapshot")),
            Err(e) => Err(transport_error(e, 1)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.rpc(PeerRequest::Vote(rpc), &option).await {
            Ok(PeerResponse::Vote(Ok(response))) => Ok(response),
            Ok(PeerResponse::Vote(Err(e))) => Err(self.remote(e)),
            Ok(PeerResponse::NotAMember(why)) => {
                eprintln!("replica {}: {why}", self.target);
                crate::membership::stop_as_removed(self.network.my_id)
            }
            Ok(_) => Err(unexpected("vote")),
            Err(e) => Err(transport_error(e, 1)),
        }
    }
}
