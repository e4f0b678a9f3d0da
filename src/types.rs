//! The openraft type configuration, in one place.
//!
//! Every other module names Raft types through the aliases below, so a reader
//! can see at a glance what travels through the log (`Proposal`) and what
//! apply returns (`ProposalOutcome`).
//!
//! openraft 0.10 keeps the snapshot's data type out of the type configuration:
//! the state machine names it (`RaftStateMachine::SnapshotData`: a file on
//! disk, `store/snapshot.rs`), the network must carry the same type, and the
//! `Raft` handle is typed by the state machine (`raft.rs`). Those live with
//! the store, so that this module, which everything uses, uses nothing above.

use openraft::errors::ErrorSource;
use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use crate::command::Proposal;
use crate::machine::ProposalOutcome;

/// Replica ids are small integers chosen by the operator (`--replica-id N`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of example-ondisk. Terms, leader ids, votes
    /// and entries are openraft's defaults, which store and travel exactly as
    /// 0.9's did (`{"leader_id":{"term":..,"node_id":..},"index":..}`), so
    /// data folders and snapshot files written by 0.9 read back unchanged.
    pub TypeConfig:
        D = Proposal,
        R = ProposalOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        ErrorSource = ErrorText,
);

/// About how many bytes an entry's proposal takes as encoded: what makes an
/// entry slow to send, parse or apply (membership entries count as nothing).
pub fn proposal_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        openraft::EntryPayload::Normal(proposal) => proposal.encoded_len(),
        _ => 0,
    }
}
pub type LogId = alias::LogIdOf<TypeConfig>;
/// The leader id a log id carries (`{"term":..,"node_id":..}`); `restore`
/// and tests build log ids with it.
pub type CommittedLeaderId = alias::CommittedLeaderIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;

/// How openraft carries the cause of a storage or network error: its message,
/// nothing else. openraft's default (`AnyError`) puts the Rust type's name in
/// front ("std::io::error::Error: the disk is full"), and the cause is what a
/// stopped replica prints as its one line (`main.rs`, `exit_on_fatal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct ErrorText(String);

impl ErrorSource for ErrorText {
    fn from_error<E: std::error::Error + 'static>(error: &E) -> Self {
        ErrorText(error.to_string())
    }

    fn from_string(msg: impl ToString) -> Self {
        ErrorText(msg.to_string())
    }
}
