//! Moving Raft messages between replicas: frames on TCP, nothing about storage.
//!
//! Each connection starts with a `Hello` that names the cluster and the replica
//! the caller meant to reach; a replica refuses a caller from another cluster,
//! or one that expected someone else at this address. With a cluster secret,
//! both sides then prove they hold it (`handshake.rs`, which also says what
//! that protects and what not). After that, the caller sends one request
//! frame and reads one response frame, in turn.
//!
//! A frame is a 4-byte big-endian length and a body. The hello and the
//! rest of the opening are JSON, as they have always been, so a replica of
//! any release can read a hello and answer it. In the hello the caller lists
//! the encodings it speaks besides JSON; the callee picks one that both speak
//! and names it in its welcome ([`FrameEncoding`]). Every frame after the
//! opening, both ways, is in that encoding: the compact binary one
//! (`binary.rs`) between replicas of this release, JSON with a replica of a
//! release before it (which lists nothing and is answered, and answers,
//! with a bare `Welcome`). A body that does not decode closes the connection,
//! whichever the encoding. Frames over [`MAX_FRAME_LEN`] are refused by both
//! sides: the receiver closes that connection only; the sender reports the
//! request as undeliverable.
//!
//! A snapshot travels as a run of [`SnapshotChunk`]s, one frame each, sent one
//! after another by `client.rs` (openraft 0.10's `full_snapshot` leaves the
//! transfer to the network) and put back together by `server.rs`.
//!
//! Besides Raft's own RPCs the port carries the two requests a follower makes
//! of its leader on behalf of a person at its prompt: `Propose` (forward a
//! write) and `ReadIndex` (the index a linearizable read must wait for), and
//! the questions of a rolling upgrade (`MachineVersion`, `RaiseMachineVersion`:
//! see `upgrade.rs`).

pub mod append_stream;
pub mod client;
pub mod handshake;
pub mod server;

use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, SnapshotResponse,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::command::Proposal;
use crate::types::{proposal_bytes, NodeId, SnapshotMeta, TypeConfig, Vote};

pub use client::{CallError, Network};
pub use handshake::ClusterSecret;
pub use server::PeerService;

/// The largest frame either side sends or accepts.
/// Room for one entry with the largest value (`command::MAX_VALUE_LEN`) as
/// JSON, which writes a value in at most about 1.6 times its size.
pub const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// The codec both sides use: length-prefixed frames with a size limit.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// How the frames after the opening are written, as agreed in the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameEncoding {
    /// Spoken by every release; the only one before the binary encoding.
    Json,
    /// `binary.rs`: postcard.
    Binary,
}

impl FrameEncoding {
    /// The name a hello lists the encoding by.
    const BINARY_NAME: &str = "binary";

    /// The encodings besides JSON this replica offers in its hello, by name
    /// (names, not variants, so that a replica of a later release may list
    /// one this release does not know, and still be understood).
    pub fn offered() -> Vec<String> {
        if crate::faults::json_frames_only() {
            Vec::new()
        } else {
            vec![Self::BINARY_NAME.to_string()]
        }
    }

    /// The encoding to speak with a caller that offered `theirs`: binary
    /// if both speak it, else JSON.
    pub fn agree(theirs: &[String]) -> FrameEncoding {
        let both = |name: &str| {
            theirs.iter().any(|t| t == name) && Self::offered().iter().any(|o| o == name)
        };
        match both(Self::BINARY_NAME) {
            true => FrameEncoding::Binary,
            false => FrameEncoding::Json,
        }
    }

    /// The body of a frame that carries `value`.
    pub fn encode<T: Serialize>(self, value: &T) -> Vec<u8> {
        match self {
            FrameEncoding::Json => serde_json::to_vec(value).expect("peer frames serialise"),
            FrameEncoding::Binary => crate::binary::encode(value),
        }
    }

    /// The value a frame's body carries, or why it is unreadable.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, String> {
        match self {
            FrameEncoding::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
            FrameEncoding::Binary => crate::binary::decode(body).map_err(|e| e.to_string()),
        }
    }
}

/// What a replica sends to another replica.
///
/// The order of the variants and of their fields is the binary frame format
/// (`binary.rs`): add new ones at the end.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Opens every connection (`handshake.rs`). Always JSON: its optional
    /// fields are left out when absent, which a binary encoding cannot read.
    Hello {
        cluster_id: String,
        from: NodeId,
        to: NodeId,
        /// The handshake format; absent (1) in replicas before the secret.
        #[serde(default = "handshake::first_format")]
        handshake: u32,
        /// The caller's challenge, sent when it holds the cluster secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// The frame encodings besides JSON the caller speaks
        /// ([`FrameEncoding::offered`]); absent in replicas before them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        frames: Vec<String>,
    },
    /// The caller's answer to [`PeerResponse::Challenge`].
    Proof {
        proof: String,
    },
    /// The caller found the callee's proof wrong and stops here.
    ProofRefused,
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    /// Would you vote for me? Asked before a candidate raises its term; the
    /// answer is a `Vote` that persists nothing.
    PreVote(VoteRequest<TypeConfig>),
    /// From a leader handing over: the named replica, if it holds the
    /// leader's whole log, starts an election at once.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    InstallSnapshot(SnapshotChunk),
    Propose(Proposal),
    ReadIndex,
    ChangeMembership(MembershipChange),
    /// From the leader to a replica it has just removed.
    Removed,
    /// From a replica with an empty folder, before it would found a cluster:
    /// does the one asked already belong to one?
    Founded,
    /// From the leader: which machine versions can you apply, and are you
    /// holding back? (A replica of a release before versions answers
    /// "unreadable request", which counts as "none newer than the cluster's".)
    MachineVersion,
    /// To the leader, from a replica asked to run a command that needs
    /// machine version `needs`: move the cluster to it if every member can
    /// apply it, or say why not.
    RaiseMachineVersion {
        needs: u32,
    },
}

impl PeerRequest {
    /// About how many bytes of entries, proposals or snapshot the request
    /// carries: what makes it slow to encode (see `heavy`).
    pub fn carried_bytes(&self) -> usize {
        match self {
            PeerRequest::AppendEntries(rpc) => rpc.entries.iter().map(proposal_bytes).sum(),
            PeerRequest::Propose(proposal) => proposal.encoded_len(),
            PeerRequest::InstallSnapshot(chunk) => chunk.data_base64.len(),
            _ => 0,
        }
    }
}

pub type ProposeResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>;
/// The index a read at a follower must wait for (see `read_index.rs`).
pub type ReadIndexResult =
    Result<ReadPoint, RaftError<TypeConfig, LinearizableReadError<TypeConfig>>>;

/// The answer to a [`PeerRequest`]. Like the requests, add variants at the end.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Welcome,
    Refused(String),
    /// To a hello with a nonce: the callee's own nonce and its proof that it
    /// holds the cluster secret (`handshake.rs`).
    Challenge {
        nonce: String,
        proof: String,
    },
    /// Refused on the cluster secret: one side has none, or they differ.
    Unauthenticated(String),
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    /// To each snapshot chunk: the receiver's vote (a sender with an older
    /// one steps down). To the last chunk, after the install.
    InstallSnapshot(Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>>),
    Propose(ProposeResult),
    ReadIndex(ReadIndexResult),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
    ChangeMembership(ChangeResult),
    /// To a candidate that was removed from the cluster while it was away,
    /// instead of a vote: why it is no longer a member (it then stops).
    NotAMember(String),
    /// To the last chunk of a snapshot that did not read back whole: what is
    /// wrong with it. Nothing was installed; the sender checks its file again.
    SnapshotDamaged(String),
    /// Whether this replica has a log or has voted: a cluster exists, and an
    /// empty replica must wait to be reached by its leader, not found another.
    Founded(bool),
    MachineVersion(VersionReport),
    /// The cluster's version now (at least the one asked for), or why it
    /// cannot move there, in words for the person who asked.
    RaiseMachineVersion(Result<u32, RaiseError>),
    /// `Welcome` to a caller that offered frame encodings in its hello: the
    /// one every frame after this is written in.
    Admitted {
        frames: FrameEncoding,
    },
}

/// What a replica says of the machine versions (see `upgrade.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    /// The highest version this replica's build applies.
    pub can_apply: u32,
    /// The cluster's version as far as this replica has applied.
    pub current: u32,
    /// The log index applying is held back at, if it is.
    pub held_back_at: Option<u64>,
}

/// Why the cluster could not move to a machine version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RaiseError {
    /// Asked at a replica that does not lead (it moved meanwhile): ask again.
    #[error("this replica is not the leader")]
    NotLeader,
    #[error("{0}")]
    Refused(String),
}

// Requests a replica forwards to its leader on behalf of a client or a
// person, and their answers. Their meaning is the Raft node's (`kv.rs`,
// `membership.rs`); they are defined here because they travel.

/// Where a linearizable read may be served: once this replica has applied
/// `index`, at the leader's clock `leader_time` (ms) when it confirmed its
/// leadership. Expiry in a read is judged by that clock, so a key the leader
/// already counted as expired is never returned by any replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadPoint {
    pub index: u64,
    pub leader_time: u64,
}

/// A change a person asked for at the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    Add {
        id: NodeId,
        addr: String,
    },
    Remove {
        id: NodeId,
    },
    /// Not a change of members but of who leads; like the changes, it is
    /// carried out at the leader, so it travels the same way.
    TransferLeader {
        to: NodeId,
    },
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    /// Asked at a replica that does not lead: ask the leader, if one is known.
    #[error("this replica is not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// An add of a replica that is a member already, at another address
    /// (`at`), or with none known; the same address is answered as done.
    #[error("replica {id} is already a member{}", at.as_ref().map(|at| format!(", at {at}; to move it, remove it and add it again")).unwrap_or_default())]
    AlreadyMember { id: NodeId, at: Option<String> },
    #[error("{0}")]
    Refused(String),
}

/// A change that is done: the voters after it, and whether it had been made
/// already (a retry), which a person is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDone {
    pub voters: Vec<NodeId>,
    pub already: bool,
}

/// The answer: the change done, or why it was not made.
pub type ChangeResult = Result<ChangeDone, ChangeError>;

/// One piece of a snapshot on the wire: the bytes of the snapshot file from
/// `offset` on, as base64 (JSON would write bytes as an array of numbers,
/// about 3.5 bytes per byte and slow to parse; base64 costs 1.33 and is quick).
/// A transfer starts at offset 0 and goes on in order; `transfer` names it, so
/// that the receiver never splices two transfers together.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub transfer: String,
    pub offset: u64,
    pub done: bool,
    pub data_base64: String,
}

impl SnapshotChunk {
    pub fn new(
        vote: Vote,
        meta: SnapshotMeta,
        transfer: String,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Self {
        use base64::Engine as _;
        SnapshotChunk {
            vote,
            meta,
            transfer,
            offset,
            done,
            data_base64: base64::engine::general_purpose::STANDARD.encode(data),
        }
    }

    /// The chunk's bytes.
    pub fn data(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.data_base64.as_bytes())
            .map_err(|e| format!("snapshot chunk is not valid base64: {e}"))
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
        b"{\"Propose\":{\"format\":2,\"time_ms\":1,\"ops\":[",
        b"{\"Run\":{\"db\":0,\"args\":[\"SET\",\"k\",{\"b64\":\"!!\"}]}}",
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
    fn garbage_binary_frames_never_panic_the_decoder() {
        let mut rng = crate::fuzz::Rng(0xb1_4a_7e_5e_ed);
        // Pieces of real binary requests, so that the noise reaches deep.
        let real: Vec<Vec<u8>> = [
            PeerRequest::ReadIndex,
            PeerRequest::Propose(Proposal::new(&[], 5)),
            PeerRequest::ChangeMembership(MembershipChange::Remove { id: 3 }),
        ]
        .iter()
        .map(|r| FrameEncoding::Binary.encode(r))
        .collect();
        let fragments: Vec<&[u8]> = real
            .iter()
            .map(Vec::as_slice)
            .chain([&[0u8][..], &[0xff; 9], &[7, 1], &[12, 0x80]])
            .collect();
        for _ in 0..20_000 {
            let input = rng.bytes_from(&fragments, 12);
            if let Ok(PeerRequest::Propose(p)) = FrameEncoding::Binary.decode(&input) {
                let _ = p.decode();
            }
            let _ = FrameEncoding::Binary.decode::<PeerResponse>(&input);
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_buffering() {
        let mut codec = frame_codec();
        let mut buf = BytesMut::from(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        // A million open brackets fit in one frame; a recursive reader
        // would overflow a 2 MiB thread stack and abort the process.
        let depth = 1_000_000;
        let nested =
            |open: &str, close: &str| format!("{}{}", open.repeat(depth), close.repeat(depth));
        for body in [
            nested("[", "]"),
            nested("{\"a\":", "}"),
            format!(
                "{{\"Propose\":{{\"format\":2,\"ops\":{}}}}}",
                nested("[", "]")
            ),
            format!(
                "{{\"Hello\":{{\"cluster_id\":{},\"from\":1,\"to\":2}}}}",
                nested("[", "]")
            ),
            format!("{{\"ChangeMembership\":{}}}", nested("{\"Add\":", "}")),
        ] {
            let mut codec = frame_codec();
            let mut buf = BytesMut::new();
            tokio_util::codec::Encoder::encode(
                &mut codec,
                bytes::Bytes::from(body.clone()),
                &mut buf,
            )
            .expect("under the frame limit");
            let frame = codec
                .decode(&mut buf)
                .expect("a frame")
                .expect("a whole frame");
            let refused = match serde_json::from_slice::<PeerRequest>(&frame) {
                Err(_) => true,
                Ok(PeerRequest::Propose(proposal)) => proposal.decode().is_err(),
                Ok(other) => panic!("accepted {other:?}"),
            };
            assert!(refused, "{}", &body[..40]);
        }
    }

    /// Property tests (proptest) of what the Raft port reads: the frame codec
    /// and the JSON of a [`PeerRequest`], fed anything.
    mod properties {
        use std::collections::{BTreeMap, BTreeSet};

        use bytes::Bytes;
        use openraft::{BasicNode, EntryPayload, Membership, StoredMembership};
        use proptest::prelude::*;
        use proptest::sample::Index;
        use proptest::strategy::LazyJust;
        use serde_json::{json, Value};
        use tokio_util::codec::Encoder;

        use super::*;
        use crate::command::{Bytes as KvBytes, Expired, Op, Queued};
        use crate::types::{CommittedLeaderId, Entry, LogId, NodeId};

        fn config(cases: u32) -> ProptestConfig {
            crate::fuzz::proptest_config(cases, 0x5e5b_0004)
        }

        const VARIANTS: &[&str] = &[
            "Hello",
            "Proof",
            "ProofRefused",
            "AppendEntries",
            "Vote",
            "PreVote",
            "TransferLeader",
            "InstallSnapshot",
            "Propose",
            "ReadIndex",
            "ChangeMembership",
            "Removed",
        ];
        const UNIT_VARIANTS: &[&str] = &["ReadIndex", "Removed", "ProofRefused"];

        /// The field names the JSON of a request uses (besides [`VARIANTS`]).
        const FIELD_NAMES: &[&str] = &[
            "cluster_id",
            "from",
            "to",
            "handshake",
            "nonce",
            "proof",
            "vote",
            "leader_id",
            "term",
            "node_id",
            "committed",
            "last_log_id",
            "index",
            "prev_log_id",
            "entries",
            "leader_commit",
            "log_id",
            "payload",
            "Normal",
            "Blank",
            "Membership",
            "configs",
            "nodes",
            "addr",
            "format",
            "ops",
            "op",
            "put",
            "delete",
            "key",
            "value",
            "b64",
            "meta",
            "offset",
            "done",
            "data_base64",
            "transfer",
            "last_membership",
            "membership",
            "Add",
            "Remove",
            "id",
            "1",
        ];

        /// Everything the port does with a request's bytes before acting on
        /// it: the JSON, the base64 of a snapshot chunk, and (though a log
        /// entry's operations are only decoded when applied) the proposals.
        fn decode(body: &[u8]) -> Result<PeerRequest, String> {
            let request: PeerRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            match &request {
                PeerRequest::Propose(proposal) => {
                    proposal.decode().map_err(|e| e.to_string())?;
                }
                PeerRequest::AppendEntries(rpc) => {
                    for entry in &rpc.entries {
                        if let EntryPayload::Normal(proposal) = &entry.payload {
                            proposal.decode().map_err(|e| e.to_string())?;
                        }
                    }
                }
                PeerRequest::InstallSnapshot(chunk) => {
                    chunk.data()?;
                }
                _ => {}
            }
            Ok(request)
        }

        fn to_json(request: &PeerRequest) -> Value {
            serde_json::to_value(request).expect("requests serialise")
        }

        fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
            let mut codec = frame_codec();
            let mut wire = BytesMut::new();
            for body in bodies {
                codec
                    .encode(Bytes::from(body.clone()), &mut wire)
                    .expect("a small frame");
            }
            wire.to_vec()
        }

        fn pieces<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.push(0);
            at.push(input.len());
            at.sort_unstable();
            at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
        }

        /// The frames one connection reads from the pieces, and whether the
        /// codec then refused the stream. Checks that no frame is over the
        /// limit and that the codec never loops in place.
        fn read_frames(pieces: &[&[u8]]) -> Result<(Vec<Bytes>, bool), TestCaseError> {
            let mut codec = frame_codec();
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            let (mut fed, mut framed_bytes) = (0, 0);
            for piece in pieces {
                buf.extend_from_slice(piece);
                fed += piece.len();
                let most_calls = buf.len() / 4 + 2;
                let mut calls = 0;
                loop {
                    calls += 1;
                    prop_assert!(calls <= most_calls, "the codec made no progress");
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => {
                            prop_assert!(frame.len() <= MAX_FRAME_LEN);
                            framed_bytes += 4 + frame.len();
                            prop_assert!(framed_bytes <= fed);
                            frames.push(frame.freeze());
                        }
                        Ok(None) => break,
                        Err(_) => return Ok((frames, true)),
                    }
                }
            }
            Ok((frames, false))
        }

        /// Bytes of a Raft port's stream: length prefixes (some at or past
        /// the limit), pieces of request JSON, noise.
        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let length = prop_oneof![
                0u32..64,
                Just(MAX_FRAME_LEN as u32),
                Just(MAX_FRAME_LEN as u32 + 1),
                Just(u32::MAX),
                any::<u32>(),
            ]
            .prop_map(|n| n.to_be_bytes().to_vec());
            let part = prop_oneof![
                2 => length,
                3 => prop::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()),
                1 => prop::collection::vec(any::<u8>(), 0..12),
            ];
            prop_oneof![
                3 => prop::collection::vec(part, 0..16).prop_map(|parts| parts.concat()),
                1 => prop::collection::vec(any::<u8>(), 0..256),
                // A well-framed body of noise, and maybe more after it.
                2 => (prop::collection::vec(prop::sample::select(FRAGMENTS), 0..6), prop::collection::vec(any::<u8>(), 0..8))
                    .prop_map(|(parts, tail)| [framed(&[parts.concat()]), tail].concat()),
            ]
        }

        fn log_id() -> impl Strategy<Value = LogId> {
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(term, node_id, index)| {
                LogId::new(CommittedLeaderId { term, node_id }, index)
            })
        }

        fn vote() -> impl Strategy<Value = Vote> {
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(term, node, committed)| {
                if committed {
                    Vote::new_committed(term, node)
                } else {
                    Vote::new(term, node)
                }
            })
        }

        /// Keys and values: text, or bytes that are not UTF-8 (sent as base64).
        fn kv_bytes() -> impl Strategy<Value = KvBytes> {
            prop::collection::vec(any::<u8>(), 0..8).prop_map(KvBytes)
        }

        fn proposal() -> impl Strategy<Value = Proposal> {
            prop::collection::vec(
                prop_oneof![
                    (any::<u8>(), prop::collection::vec(kv_bytes(), 1..4))
                        .prop_map(|(db, args)| Op::Run(Queued { db, args })),
                    (kv_bytes(), any::<u64>()).prop_map(|(key, at)| Op::Reap(vec![Expired {
                        db: 0,
                        key,
                        at
                    }])),
                    (any::<u8>(), any::<u64>(), any::<u64>())
                        .prop_map(|(db, first, last)| Op::Sweep { db, first, last }),
                ],
                0..4,
            )
            .prop_flat_map(|ops| {
                // Before the cluster runs version 5 (JSON ops), and after (binary).
                prop_oneof![Just(3), Just(5)].prop_map(move |version| Proposal::new(&ops, version))
            })
        }

        fn membership() -> impl Strategy<Value = Membership<NodeId, BasicNode>> {
            prop::collection::btree_map(0u64..8, ".{0,12}", 1..4).prop_map(|nodes| {
                let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
                let nodes: BTreeMap<NodeId, BasicNode> = nodes
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode { addr }))
                    .collect();
                Membership::new(vec![voters], nodes).expect("the voters are among the nodes")
            })
        }

        fn entry() -> impl Strategy<Value = Entry> {
            let payload = prop_oneof![
                Just(EntryPayload::Blank),
                proposal().prop_map(EntryPayload::Normal),
                membership().prop_map(EntryPayload::Membership),
            ];
            (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
        }

        /// A request a replica could really send.
        fn valid_request() -> impl Strategy<Value = PeerRequest> {
            prop_oneof![
                (
                    ".{0,12}",
                    any::<u64>(),
                    any::<u64>(),
                    any::<u32>(),
                    prop::option::of("[A-Za-z0-9+/]{0,44}"),
                    prop::collection::vec("[a-z]{0,8}", 0..3)
                )
                    .prop_map(
                        |(cluster_id, from, to, handshake, nonce, frames)| {
                            PeerRequest::Hello {
                                cluster_id,
                                from,
                                to,
                                handshake,
                                nonce,
                                frames,
                            }
                        }
                    ),
                "[A-Za-z0-9+/=]{0,44}".prop_map(|proof| PeerRequest::Proof { proof }),
                LazyJust::new(|| PeerRequest::ProofRefused),
                (
                    vote(),
                    prop::option::of(log_id()),
                    prop::collection::vec(entry(), 0..3),
                    prop::option::of(log_id())
                )
                    .prop_map(|(vote, prev_log_id, entries, leader_commit)| {
                        PeerRequest::AppendEntries(AppendEntriesRequest {
                            vote,
                            prev_log_id,
                            entries,
                            leader_commit,
                        })
                    }),
                (vote(), prop::option::of(log_id()))
                    .prop_map(|(vote, last)| PeerRequest::Vote(VoteRequest::new(vote, last))),
                (vote(), prop::option::of(log_id()))
                    .prop_map(|(vote, last)| PeerRequest::PreVote(VoteRequest::new(vote, last))),
                (vote(), any::<u64>(), prop::option::of(log_id())).prop_map(|(vote, to, last)| {
                    PeerRequest::TransferLeader(TransferLeaderRequest::new(vote, to, last))
                }),
                (
                    vote(),
                    prop::option::of(log_id()),
                    prop::option::of(log_id()),
                    membership(),
                    ".{0,8}",
                    any::<u64>(),
                    any::<bool>(),
                    prop::collection::vec(any::<u8>(), 0..32)
                )
                    .prop_map(
                        |(
                            vote,
                            last_log_id,
                            membership_log_id,
                            membership,
                            transfer,
                            offset,
                            done,
                            data,
                        )| {
                            let meta = SnapshotMeta {
                                last_log_id,
                                last_membership: StoredMembership::new(
                                    membership_log_id,
                                    membership,
                                ),
                            };
                            PeerRequest::InstallSnapshot(SnapshotChunk::new(
                                vote, meta, transfer, offset, &data, done,
                            ))
                        }
                    ),
                proposal().prop_map(PeerRequest::Propose),
                LazyJust::new(|| PeerRequest::ReadIndex),
                prop_oneof![
                    (any::<u64>(), ".{0,12}")
                        .prop_map(|(id, addr)| MembershipChange::Add { id, addr }),
                    any::<u64>().prop_map(|id| MembershipChange::Remove { id }),
                ]
                .prop_map(PeerRequest::ChangeMembership),
                LazyJust::new(|| PeerRequest::Removed),
                LazyJust::new(|| PeerRequest::Founded),
            ]
        }

        /// Any JSON, its keys and strings mostly the names requests use.
        fn random_json() -> impl Strategy<Value = Value> {
            let text = prop_oneof![
                3 => prop::sample::select(
                    VARIANTS.iter().chain(FIELD_NAMES).copied().collect::<Vec<_>>()
                )
                .prop_map(String::from),
                1 => ".{0,8}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (0u64..4).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                text.clone().prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((text.clone(), inner), 0..6)
                        .prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        /// Random JSON, or a real request with one part (any part, the whole
        /// included) swapped for random JSON: sometimes still a request.
        fn any_json() -> impl Strategy<Value = Value> {
            let near_request = (valid_request(), any::<Index>(), random_json()).prop_map(
                |(request, at, replacement)| {
                    let mut value = to_json(&request);
                    let mut paths: Vec<String> = Vec::new();
                    parts(&value, String::new(), true, &mut paths);
                    let path: &String = at.get(&paths);
                    *value.pointer_mut(path).expect("a part found above") = replacement;
                    value
                },
            );
            // Or a string, number or boolean swapped for another of its kind:
            // mostly still a request.
            let same_kind = (
                valid_request(),
                any::<Index>(),
                ".{0,8}",
                any::<u64>(),
                any::<bool>(),
            )
                .prop_map(|(request, at, text, number, flag)| {
                    let mut value = to_json(&request);
                    let mut paths: Vec<String> = Vec::new();
                    parts(&value, String::new(), false, &mut paths);
                    let path: &String = at.get(&paths);
                    let spot = value.pointer_mut(path).expect("a leaf found above");
                    *spot = match spot {
                        Value::String(_) => Value::from(text),
                        Value::Bool(_) => Value::from(flag),
                        _ => Value::from(number),
                    };
                    value
                });
            prop_oneof![2 => random_json(), 2 => near_request, 1 => same_kind]
        }

        /// The paths (JSON pointers) of every part of `value`, or with
        /// `all` false, of every string, number and boolean.
        fn parts(value: &Value, path: String, all: bool, out: &mut Vec<String>) {
            let inner = matches!(value, Value::Array(_) | Value::Object(_) | Value::Null);
            if all || !inner {
                out.push(path.clone());
            }
            match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        parts(item, format!("{path}/{i}"), all, out);
                    }
                }
                Value::Object(fields) => {
                    for (key, item) in fields {
                        let key = key.replace('~', "~0").replace('/', "~1");
                        parts(item, format!("{path}/{key}"), all, out);
                    }
                }
                _ => {}
            }
        }

        /// A value of another kind that no field of this kind accepts.
        /// (Null is never used: an optional field takes it.)
        fn wrong_kind(leaf: &Value, pick: &Index) -> Value {
            let choices = match leaf {
                Value::String(_) => vec![json!(7), json!(true), json!([]), json!({ "x": 1 })],
                Value::Bool(_) => vec![json!(0), json!("true"), json!([]), json!({})],
                // Every number in a request is an unsigned integer.
                _ => vec![
                    json!(-1),
                    json!(0.5),
                    json!(1e300),
                    json!(18_446_744_073_709_551_616.0),
                    json!("1"),
                    json!(false),
                    json!([1]),
                    json!({}),
                ],
            };
            pick.get(&choices).clone()
        }

        proptest! {
            #![proptest_config(config(1000))]

            /// Any bytes on the port, whole or in pieces: never a panic in the
            /// codec or in decoding what it frames, no frame over the limit,
            /// and the pieces make no difference.
            #[test]
            fn prop_any_stream_is_framed_and_decoded_without_panic(
                input in stream(),
                cuts in prop::collection::vec(any::<Index>(), 0..6),
            ) {
                let whole = read_frames(&[&input])?;
                let split = read_frames(&pieces(&input, &cuts))?;
                prop_assert_eq!(&split, &whole);
                for frame in &whole.0 {
                    let _ = decode(frame);
                }
                let _ = decode(&input);
            }

            /// Any JSON value: never a panic; anything but a known unit variant's
            /// name or a one-key object naming a variant is refused; and what is
            /// accepted is the variant the input named, and (once its proposals
            /// decode too) reads back the same after being written again.
            #[test]
            fn prop_json_that_is_not_a_request_is_refused(value in any_json()) {
                let body = serde_json::to_vec(&value).expect("values serialise");
                let tag = match &value {
                    Value::String(name) if UNIT_VARIANTS.contains(&name.as_str()) => Some(name.clone()),
                    Value::Object(fields) if fields.len() == 1 => fields
                        .keys()
                        .next()
                        .filter(|name| VARIANTS.contains(&name.as_str()))
                        .cloned(),
                    _ => None,
                };
                if let Ok(request) = serde_json::from_slice::<PeerRequest>(&body) {
                    prop_assert!(tag.is_some(), "accepted {}", value);
                    let written_tag = match to_json(&request) {
                        Value::String(name) => Some(name),
                        Value::Object(fields) => fields.keys().next().cloned(),
                        _ => None,
                    };
                    prop_assert_eq!(written_tag, tag);
                }
                // (A proposal's operations stay raw JSON until decoded, and
                // serde_json does not promise that a float read and written
                // again keeps its last digit: compare only what fully decodes.)
                if let Ok(request) = decode(&body) {
                    let written = serde_json::to_vec(&request).expect("requests serialise");
                    let again = decode(&written)
                        .map_err(|e| TestCaseError::fail(format!("{value}: written again, {e}")))?;
                    prop_assert_eq!(to_json(&again), to_json(&request));
                }
            }

            /// A real request spoiled: a string, number or boolean anywhere in
            /// it replaced by a value of the wrong kind, its base64 text
            /// made invalid, its variant renamed, its JSON cut short or
            /// followed by more: always refused.
            #[test]
            fn prop_spoiled_requests_are_refused(
                request in valid_request(),
                leaf in any::<Index>(),
                pick in any::<Index>(),
                how in 0..5u8,
                renamed in "[A-Za-z]{0,12}",
                cut in any::<Index>(),
                tail in prop::collection::vec(any::<u8>().prop_filter("not blank", |b| !b.is_ascii_whitespace()), 1..4),
            ) {
                let mut value = to_json(&request);
                let mut leaves: Vec<String> = Vec::new();
                parts(&value, String::new(), false, &mut leaves);
                let encoded: Vec<String> = leaves
                    .iter()
                    .filter(|path| path.ends_with("/data_base64") || path.ends_with("/b64"))
                    .cloned()
                    .collect();
                let body = match how {
                    // (A request with no base64 in it gets a wrong kind.)
                    4 if !encoded.is_empty() => {
                        let path: &String = leaf.get(&encoded);
                        let spot = value.pointer_mut(path).expect("a leaf found above");
                        *spot = Value::from(format!("{}!", spot.as_str().unwrap_or_default()));
                        serde_json::to_vec(&value).expect("values serialise")
                    }
                    0 | 4 => {
                        let path: &String = leaf.get(&leaves);
                        let spot = value.pointer_mut(path).expect("a leaf found above");
                        *spot = wrong_kind(spot, &pick);
                        serde_json::to_vec(&value).expect("values serialise")
                    }
                    1 => {
                        prop_assume!(!VARIANTS.contains(&renamed.as_str()));
                        let value = match value {
                            Value::String(_) => Value::String(renamed),
                            Value::Object(fields) => Value::Object(
                                fields.into_iter().map(|(_, inner)| (renamed.clone(), inner)).collect(),
                            ),
                            other => other,
                        };
                        serde_json::to_vec(&value).expect("values serialise")
                    }
                    2 => {
                        let body = serde_json::to_vec(&value).expect("values serialise");
                        body[..cut.index(body.len())].to_vec()
                    }
                    _ => [serde_json::to_vec(&value).expect("values serialise"), tail].concat(),
                };
                let (frames, refused) = read_frames(&[&framed(std::slice::from_ref(&body))])?;
                prop_assert!(!refused);
                prop_assert_eq!(&frames[..], &[Bytes::from(body.clone())][..]);
                prop_assert!(decode(&frames[0]).is_err(), "accepted {}", String::from_utf8_lossy(&body));
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// Real requests, several in one stream cut anywhere: each frame
            /// comes out whole and decodes to the request sent.
            #[test]
            fn prop_real_requests_round_trip_in_any_pieces(
                requests in prop::collection::vec(valid_request(), 1..4),
                cuts in prop::collection::vec(any::<Index>(), 0..6),
            ) {
                let bodies: Vec<Vec<u8>> = requests
                    .iter()
                    .map(|r| serde_json::to_vec(r).expect("requests serialise"))
                    .collect();
                let wire = framed(&bodies);
                let (frames, refused) = read_frames(&pieces(&wire, &cuts))?;
                prop_assert!(!refused);
                prop_assert_eq!(frames.len(), requests.len());
                for ((frame, body), request) in frames.iter().zip(&bodies).zip(&requests) {
                    prop_assert_eq!(&frame[..], &body[..]);
                    let decoded = decode(frame).map_err(TestCaseError::fail)?;
                    prop_assert_eq!(to_json(&decoded), to_json(request));
                }
            }

            /// Every request but the hello (always JSON) reads back from a
            /// binary frame as it was, and means what its JSON means.
            #[test]
            fn prop_real_requests_round_trip_in_binary(request in valid_request()) {
                prop_assume!(!matches!(request, PeerRequest::Hello { .. }));
                let body = FrameEncoding::Binary.encode(&request);
                let decoded: PeerRequest =
                    FrameEncoding::Binary.decode(&body).map_err(TestCaseError::fail)?;
                prop_assert_eq!(to_json(&decoded), to_json(&request));
                // Cut short anywhere, it is refused, never misread.
                for cut in 0..body.len() {
                    prop_assert!(FrameEncoding::Binary.decode::<PeerRequest>(&body[..cut]).is_err());
                }
            }
        }
    }
}
