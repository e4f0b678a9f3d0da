//! The calling side: a pool of connections per peer, used by openraft for its
//! RPCs and by the request path for forwarding.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::append_stream::{self, FollowerReads, SendAppend};
use super::handshake::{self, ClusterSecret, Link};
use super::{frame_codec, FrameEncoding, PeerRequest, PeerResponse, SnapshotChunk, MAX_FRAME_LEN};
use crate::metrics::{self, SnapshotEvent};
use crate::removal::Removal;
use crate::store::snapshot::Snapshot;
use crate::store::snapshot::{KnownWhole, SnapshotFile};
use crate::types::{proposal_bytes, NodeId, TypeConfig, Vote};

/// An open connection, and the encoding its frames were agreed to use.
struct Connection {
    frames: Framed<TcpStream, LengthDelimitedCodec>,
    encoding: FrameEncoding,
}

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
    /// Proves this replica a member when it calls, and is asked of callers.
    secret: Option<ClusterSecret>,
    idle: Arc<Mutex<HashMap<NodeId, Vec<Connection>>>>,
    /// Forgotten when a replica finds the snapshot we sent it damaged.
    known_whole_snapshot: KnownWhole,
    /// Where a peer's word that this replica was removed goes.
    removal: Removal,
    /// What reads at each follower wait for (`append_stream.rs`).
    follower_reads: FollowerReads,
}

impl Network {
    pub fn new(
        cluster_id: String,
        my_id: NodeId,
        secret: Option<ClusterSecret>,
        known_whole_snapshot: KnownWhole,
        removal: Removal,
    ) -> Self {
        Network {
            cluster_id: cluster_id.into(),
            my_id,
            secret,
            idle: Default::default(),
            known_whole_snapshot,
            removal,
            follower_reads: FollowerReads::default(),
        }
    }

    /// At the leader: what reads at each follower wait for.
    pub fn follower_reads(&self) -> &FollowerReads {
        &self.follower_reads
    }

    /// Where a peer's word that this replica was removed is reported.
    pub fn removal(&self) -> &Removal {
        &self.removal
    }

    /// The cluster secret, which `server.rs` asks of callers.
    pub fn secret(&self) -> Option<&ClusterSecret> {
        self.secret.as_ref()
    }

    /// Sends one request to replica `target` at `addr` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        let mut connection = match self.take_idle(target) {
            Some(connection) => connection,
            None => self.connect(target, addr).await?,
        };
        let encoding = connection.encoding;
        let body = crate::heavy::run(request.carried_bytes(), || encoding.encode(request));
        if body.len() > MAX_FRAME_LEN {
            self.put_idle(target, connection);
            return Err(CallError::TooLarge(body.len()));
        }
        let interrupted = |why: String| CallError::Interrupted { target, why };
        let frames = &mut connection.frames;
        let exchange = async {
            frames
                .send(bytes::Bytes::from(body))
                .await
                .map_err(|e| interrupted(e.to_string()))?;
            match frames.next().await {
                Some(Ok(frame)) => {
                    crate::heavy::run(frame.len(), || encoding.decode::<PeerResponse>(&frame))
                        .map_err(|e| interrupted(format!("unreadable answer: {e}")))
                }
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
        let mut frames = Framed::new(stream, frame_codec());
        let link = Link {
            cluster_id: &self.cluster_id,
            from: self.my_id,
            to: target,
        };
        let opening = handshake::open(&mut frames, &link, addr, self.secret.as_ref());
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(Ok(encoding)) => Ok(Connection { frames, encoding }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable("no answer to hello".into())),
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
            match connection.frames.get_ref().try_read(&mut probe) {
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

/// The most snapshot bytes one chunk carries when openraft does not say
/// (it passes `Config::snapshot_max_chunk_size`).
const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

impl PeerClient {
    async fn rpc(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        self.network
            .call(self.target, &self.addr, &request, timeout)
            .await
    }

    /// A vote or a pre-vote. A peer that removed us while we were away
    /// answers with why, instead of a vote, and we stop.
    async fn ask_for_vote(
        &self,
        request: PeerRequest,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(request, option.hard_ttl()).await {
            Ok(PeerResponse::Vote(Ok(response))) => Ok(response),
            Ok(PeerResponse::Vote(Err(e))) => Err(self.remote(e)),
            Ok(PeerResponse::NotAMember(why)) => {
                self.network
                    .removal
                    .report(format!("replica {} says: {why}", self.target));
                Err(unexpected("vote (this replica is not a member)"))
            }
            Ok(_) => Err(unexpected("vote")),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// An error the peer answered with. openraft's own examples treat it as
    /// the peer being unreachable for now, as openraft 0.9 did: back off, then
    /// try again.
    fn remote(&self, error: impl std::error::Error + 'static) -> RPCError<TypeConfig> {
        RPCError::Unreachable(Unreachable::new(&error))
    }

    /// Sends one snapshot chunk and waits for its answer (for the last chunk,
    /// that comes after the peer has checked and installed the snapshot).
    async fn send_chunk(
        &self,
        chunk: SnapshotChunk,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let meta = chunk.meta.clone();
        match self
            .rpc(PeerRequest::InstallSnapshot(chunk), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::InstallSnapshot(Ok(response))) => Ok(response),
            Ok(PeerResponse::InstallSnapshot(Err(e))) => Err(self.remote(e).into()),
            Ok(PeerResponse::SnapshotDamaged(why)) => {
                // Our file decayed in a way its length and time do not show.
                // The next attempt reads it through, sets it aside and builds
                // a new one; openraft backs off, then sends afresh.
                self.network.known_whole_snapshot.forget();
                tracing::warn!(
                    "replica {} refused our snapshot at {:?}: {why}",
                    self.target,
                    meta.last_log_id
                );
                Err(StreamingError::Unreachable(Unreachable::from_string(why)))
            }
            Ok(PeerResponse::Refused(why)) => {
                Err(StreamingError::Network(NetworkError::from_string(format!(
                    "replica {} refused a chunk: {why}",
                    self.target
                ))))
            }
            Ok(_) => Err(unexpected("install-snapshot").into()),
            Err(e) => Err(transport_error(e).into()),
        }
    }
}

fn transport_error(error: CallError) -> RPCError<TypeConfig> {
    match error {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        // openraft 0.10 has no "payload too large" answer any more: the
        // request cannot be sent as it is, so back off like for a lost peer.
        CallError::TooLarge(_) => RPCError::Unreachable(Unreachable::new(&error)),
        CallError::Interrupted { .. } => RPCError::Network(NetworkError::new(&error)),
    }
}

fn unexpected(what: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!(
        "peer gave an unexpected answer to {what}"
    )))
}

/// A name for one transfer of a snapshot, unique enough that a receiver never
/// mistakes chunks of two transfers for one.
fn transfer_name(me: NodeId) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{me}-{nanos}")
}

/// Extra time an AppendEntries gets per MiB it carries: room for a debug
/// build on a loaded two-core machine, where 100 ms per MiB was not enough
/// to parse and fsync a follower's catch-up (an append cut off at its
/// deadline is sent again whole, at the same size, so too short a deadline
/// never lets it through).
const APPEND_TIME_PER_MIB: Duration = Duration::from_millis(250);

/// openraft gives every AppendEntries one heartbeat interval. One that carries
/// megabytes must also be sent, parsed and fsynced in that time, and on a
/// loaded two-core machine an 8 MiB value sometimes was not: the request was
/// cut off and sent again until the client's write timed out. So the deadline
/// grows with the payload. Heartbeats travel apart from appends in 0.10, so a
/// long append holds up no one's lease.
fn append_deadline(rpc: &AppendEntriesRequest<TypeConfig>, base: Duration) -> Duration {
    let bytes: usize = rpc.entries.iter().map(proposal_bytes).sum();
    let mib = u32::try_from(bytes >> 20).unwrap_or(u32::MAX);
    base.saturating_add(APPEND_TIME_PER_MIB.saturating_mul(mib))
}

impl SendAppend for PeerClient {
    async fn send_append(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_entries(request, option).await
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    /// openraft's requests to this follower, one at a time as its own
    /// default does, but with a commit-only request folded into the request
    /// that follows it (`append_stream.rs` says when, and why that is safe).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, append_stream::Outcome>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let reads = self.network.follower_reads.watch(self.target);
        Box::pin(async move { Ok(append_stream::answers(self, input, option, reads)) })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let deadline = append_deadline(&rpc, option.hard_ttl());
        match self.rpc(PeerRequest::AppendEntries(rpc), deadline).await {
            Ok(PeerResponse::AppendEntries(Ok(response))) => Ok(response),
            Ok(PeerResponse::AppendEntries(Err(e))) => Err(self.remote(e)),
            Ok(_) => Err(unexpected("append-entries")),
            Err(e) => Err(transport_error(e)),
        }
    }

    /// A leader hands over to `req`'s replica (see `membership.rs`).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .rpc(PeerRequest::TransferLeader(req), option.hard_ttl())
            .await
        {
            Ok(PeerResponse::TransferLeader(Ok(response))) => Ok(response),
            Ok(PeerResponse::TransferLeader(Err(why))) => Err(RPCError::Network(
                NetworkError::from_string(format!("replica {} refused: {why}", self.target)),
            )),
            Ok(_) => Err(unexpected("transfer-leader")),
            Err(e) => Err(transport_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_for_vote(PeerRequest::Vote(rpc), option).await
    }

    /// Whether the peer would vote for us, asked before our term goes up
    /// (`Config::enable_pre_vote` in `node.rs` says why).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_for_vote(PeerRequest::PreVote(rpc), option).await
    }

    /// Streams our snapshot file in chunks, one after another, each answered
    /// before the next is sent (`server.rs` writes them into a file and
    /// installs it after the last). openraft 0.10 leaves the whole transfer
    /// to the network; this is the chunked protocol 0.9 ran for us, over our
    /// own frames. Each chunk gets `install_snapshot_timeout`, and the last
    /// one's answer waits for the install.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let Snapshot { meta, snapshot } = snapshot;
        let mut file = snapshot;
        let chunk_bytes = option.snapshot_chunk_size().unwrap_or(DEFAULT_CHUNK_BYTES);
        let transfer = transfer_name(self.network.my_id);
        let mut buffer = vec![0u8; chunk_bytes.max(1)];
        let mut offset = 0u64;
        tokio::pin!(cancel);
        loop {
            let filled = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                read = read_full(&mut file, &mut buffer) => read.map_err(|e| {
                    StreamingError::StorageError(openraft::StorageError::read_snapshot(
                        None,
                        openraft::errors::ErrorSource::from_error(&e),
                    ))
                })?,
            };
            let done = filled < buffer.len();
            let chunk = SnapshotChunk::new(
                vote,
                meta.clone(),
                transfer.clone(),
                offset,
                &buffer[..filled],
                done,
            );
            let response = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                response = self.send_chunk(chunk, &option) => response?,
            };
            if done {
                metrics::snapshot(SnapshotEvent::Sent, offset + filled as u64);
                return Ok(response);
            }
            // A receiver with a newer vote: stop, and let openraft step down.
            if response.vote > vote {
                return Ok(response);
            }
            offset += filled as u64;
        }
    }
}

/// Fills `buffer` from the snapshot file, short only at its end. Returns how
/// many bytes it holds.
async fn read_full(file: &mut SnapshotFile, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.file.read(&mut buffer[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}
