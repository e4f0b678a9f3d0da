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
use crate::types::{NodeId, SnapshotMeta, TypeConfig, Vote};

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
    InstallSnapshot(SnapshotChunk),
    Propose(Proposal),
    ReadIndex,
    ChangeMembership(crate::membership::MembershipChange),
    /// From the leader to a replica it has just removed.
    Removed,
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
    ChangeMembership(crate::membership::ChangeResult),
}

/// One piece of a snapshot on the wire. openraft's own request carries the
/// bytes as a `Vec<u8>`, which JSON writes as an array of numbers (about 3.5
/// bytes per byte, slow to parse); base64 costs 1.33 and is quick.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub done: bool,
    pub data_base64: String,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(rpc: InstallSnapshotRequest<TypeConfig>) -> Self {
        use base64::Engine as _;
        SnapshotChunk {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
            data_base64: base64::engine::general_purpose::STANDARD.encode(&rpc.data),
        }
    }
}

impl TryFrom<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    type Error = String;

    fn try_from(chunk: SnapshotChunk) -> Result<Self, String> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(chunk.data_base64.as_bytes())
            .map_err(|e| format!("snapshot chunk is not valid base64: {e}"))?;
        Ok(InstallSnapshotRequest {
            vote: chunk.vote,
            meta: chunk.meta,
            offset: chunk.offset,
            data,
            done: chunk.done,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    use super::*;

    /// Pieces of real peer frames: JSON of the requests, lengths, noise.
    const FRAGMENTS: &[&[u8]] = &[
        b"{\"Hello\":{\"cluster_id\":\"c\",\"from\":1,\"to\":2}}",
        b"{\"Vote\":",
        b"{\"AppendEntries\":{\"vote\":",
        b"\"ReadIndex\"",
        b"{\"Propose\":{\"format\":1,\"ops\":[",
        b"{\"op\":\"put\",\"key\":\"k\",\"value\":{\"hex\":\"zz\"}}",
        b"]}}",
        b"{",
        b"}",
        b"[",
        b"null",
        b"\x00\x00\x00\x10",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x00",
    ];

    #[test]
    fn garbage_frames_never_panic_the_decoder() {
        let mut rng = crate::fuzz::Rng(0x0dd_ba11_cafe_f00d);
        for _ in 0..20_000 {
            let input = rng.bytes_from(FRAGMENTS, 16);
            // The frame layer: a length prefix, with a size limit.
            let mut codec = frame_codec();
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                let _ = serde_json::from_slice::<PeerRequest>(&frame);
            }
            // The request layer, on the raw bytes too.
            if let Ok(PeerRequest::Propose(proposal)) =
                serde_json::from_slice::<PeerRequest>(&input)
            {
                let _ = proposal.decode();
            }
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_buffering() {
        let mut codec = frame_codec();
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
    }
}
