//! The openraft type configuration, in one place.
//!
//! Every other module names Raft types through the aliases below, so a reader
//! can see at a glance what travels through the log (`Proposal`), what apply
//! returns (`ProposalOutcome`), and how a snapshot is carried (a file on disk,
//! so its size never has to fit in memory).

use crate::command::{Proposal, ProposalOutcome};

/// Replica ids are small integers chosen by the operator (`--replica-id N`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft type configuration of example-ondisk.
    pub TypeConfig:
        D = Proposal,
        R = ProposalOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
