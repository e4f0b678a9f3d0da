//! Moving Raft messages between replicas: frames on TCP, nothing about storage.
//!
//! Each connection starts with a `Hello` that names the cluster and the replica
//! the caller meant to reach; a replica refuses a caller from another cluster,
//! or one that expected someone else at this address. After that, the caller
//! sends one request frame and reads one response frame, in turn.
//!
//! A frame is a 4-byte big-endian length and a JSON body. Frames over
//! [`MAX_FRAME_LEN`] are refused by both sides: the receiver closes that
//! connection only; the sender asks openraft to send fewer entries.
//!
//! Besides Raft's own RPCs the port carries the two requests a follower makes
//! of its leader on behalf of a person at its prompt: `Propose` (forward a
//! write) and `ReadIndex` (the index a linearizable read must wait for).

pub mod client;
pub mod server;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::command::Proposal;
use crate::types::{NodeId, TypeConfig};

pub use client::{CallError, Network};

/// The largest frame either side sends or accepts.
pub const MAX_FRAME_LEN: usize = 32 * 1024 * 1024;

/// The codec both sides use: length-prefixed frames with a size limit.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// What a replica sends to another replica.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Hello {
        cluster_id: String,
        from: NodeId,
        to: NodeId,
    },
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Propose(Proposal),
    ReadIndex,
}

pub type ProposeResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;
/// The index a read at a follower must wait for (see `kv::leader_read_index`).
pub type ReadIndexResult = Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>;

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Welcome,
    Refused(String),
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(ProposeResult),
    ReadIndex(ReadIndexResult),
}
