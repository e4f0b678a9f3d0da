//! The one path each key-value command takes, wherever it was typed.
//!
//! - Writes go through Raft. At a follower they are forwarded to the leader.
//!   A write is retried only when it is certain it was not appended (the leader
//!   answered "not leader", or it could not be reached at all); if contact is
//!   lost after it was sent, its outcome is unknown and the person is told so,
//!   because applying it twice could resurrect an overwritten value.
//! - Reads are linearizable (Dragonboat's SyncRead, Raft's read index): ask the
//!   leader for the index a read must wait for (it confirms its leadership with
//!   a quorum first), wait until this replica has applied that index, then read
//!   locally.
//! - With no leader, both wait up to the configured timeout.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::time::Instant;

use crate::command::{Op, Proposal, ProposalOutcome};
use crate::network::{CallError, PeerRequest, PeerResponse};
use crate::node::Node;
use crate::types::{NodeId, Raft};

/// How often to look again for a leader while there is none.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why a command did not complete. Each is one line at the prompt.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("no leader within {0:?}; is a majority of the replicas running and connected?")]
    NoLeader(Duration),
    #[error(
        "timed out after {0:?} before the write was acknowledged; it may or may not be applied"
    )]
    WriteOutcomeUnknown(Duration),
    #[error(
        "lost contact with the leader after sending the write ({0}); it may or may not be applied"
    )]
    ForwardInterrupted(String),
    #[error("this replica has stopped: {0}")]
    Stopped(String),
    #[error("reading the local state failed: {0}")]
    Storage(String),
    #[error("the request is too large to send to the leader")]
    TooLarge,
}

/// A snapshot of what `status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub recovered_at: u64,
    pub replayed: u64,
    /// The last log index covered by this replica's newest snapshot, if any.
    pub snapshot_index: Option<u64>,
    pub snapshot_bytes: u64,
    pub snapshots_installed: u64,
    /// The first index still held in the log (earlier ones were purged).
    pub first_log_index: u64,
}

/// At the leader: confirms leadership with a quorum, then returns the log index
/// a linearizable read must wait for.
///
/// Raft's read index is the commit index, which openraft 0.9 takes as
/// `max(first entry of this term, committed)`. A leader that restarts keeps its
/// term (openraft restores it as leader) and relearns `committed` only from the
/// hint `save_committed` left, which a power cut can roll back. So the index
/// used here is the leader's last log index instead: every acknowledged write
/// is at or below it, and waiting for it costs a read at most one commit round.
pub async fn leader_read_index(raft: &Raft) -> Result<u64, ReadIndexError> {
    let (read_log_id, _applied) = raft.get_read_log_id().await?;
    let last_log_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
    Ok(read_log_id.map_or(0, |id| id.index).max(last_log_index))
}

pub type ReadIndexError = RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>;

impl Node {
    /// Proposes `ops` as one log entry and waits until it is committed and applied.
    pub async fn write(&self, ops: Vec<Op>) -> Result<ProposalOutcome, KvError> {
        let proposal = Proposal::new(&ops);
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.current_leader() {
                Some(leader) if leader == self.id => {
                    let attempt =
                        tokio::time::timeout_at(deadline, self.raft.client_write(proposal.clone()))
                            .await;
                    match attempt {
                        Err(_) => return Err(KvError::WriteOutcomeUnknown(self.timeout)),
                        Ok(Ok(response)) => return Ok(response.data),
                        // Not appended (leadership moved, or the entry was cut from the log).
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                        Ok(Err(RaftError::APIError(e))) => {
                            return Err(KvError::Stopped(e.to_string()))
                        }
                        Ok(Err(RaftError::Fatal(e))) => {
                            return Err(KvError::Stopped(e.to_string()))
                        }
                    }
                }
                Some(leader) => {
                    let request = PeerRequest::Propose(proposal.clone());
                    match self.call_leader(leader, &request, deadline).await {
                        Ok(PeerResponse::Propose(Ok(response))) => return Ok(response.data),
                        Ok(PeerResponse::Propose(Err(RaftError::APIError(
                            ClientWriteError::ForwardToLeader(_),
                        )))) => {}
                        Ok(PeerResponse::Propose(Err(e))) => {
                            return Err(KvError::ForwardInterrupted(e.to_string()))
                        }
                        Ok(_) => {
                            return Err(KvError::ForwardInterrupted("unexpected answer".into()))
                        }
                        Err(CallError::Unreachable { .. }) => {}
                        Err(CallError::TooLarge(_)) => return Err(KvError::TooLarge),
                        Err(e @ CallError::Interrupted { .. }) => {
                            return Err(if Instant::now() >= deadline {
                                KvError::WriteOutcomeUnknown(self.timeout)
                            } else {
                                KvError::ForwardInterrupted(e.to_string())
                            })
                        }
                    }
                }
                None => {}
            }
            self.pause_before_retry(deadline).await?;
        }
    }

    /// Reads `key` linearizably: never older than a write that completed before this read began.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let deadline = Instant::now() + self.timeout;
        let read_index = loop {
            let index = match self.current_leader() {
                Some(leader) if leader == self.id => {
                    match tokio::time::timeout_at(deadline, leader_read_index(&self.raft)).await {
                        Ok(Ok(index)) => Some(index),
                        Ok(Err(RaftError::Fatal(e))) => {
                            return Err(KvError::Stopped(e.to_string()))
                        }
                        Ok(Err(_)) | Err(_) => None,
                    }
                }
                Some(leader) => match self
                    .call_leader(leader, &PeerRequest::ReadIndex, deadline)
                    .await
                {
                    Ok(PeerResponse::ReadIndex(Ok(index))) => Some(index),
                    _ => None,
                },
                None => None,
            };
            if let Some(index) = index {
                break index;
            }
            self.pause_before_retry(deadline).await?;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "linearizable read")
            .await
            .map_err(|_| KvError::NoLeader(self.timeout))?;
        self.reader.get(key).await.map_err(KvError::Storage)
    }

    /// What this replica knows of the cluster now.
    pub fn status(&self) -> Status {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let role = match metrics.state {
            _ if metrics.running_state.is_err() => "shutdown",
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        let committed = self.committed_index.load(Relaxed).max(applied);
        Status {
            role,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed,
            applied,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            recovered_at: self.reader.stats.recovered_at.load(Relaxed),
            replayed: self.reader.stats.replayed.load(Relaxed),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            snapshot_bytes: self.reader.stats.snapshot_bytes.load(Relaxed),
            snapshots_installed: self.reader.stats.snapshots_installed.load(Relaxed),
            first_log_index: metrics.purged.map_or(0, |id| id.index + 1),
        }
    }

    fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The leader's Raft address: from the committed membership, else from --peers.
    fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        let from_membership = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone());
        from_membership.or_else(|| self.peers.address_of(id).map(str::to_string))
    }

    async fn call_leader(
        &self,
        leader: NodeId,
        request: &PeerRequest,
        deadline: Instant,
    ) -> Result<PeerResponse, CallError> {
        let Some(addr) = self.address_of(leader) else {
            return Err(CallError::Unreachable {
                target: leader,
                addr: "?".into(),
                why: "address unknown".into(),
            });
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.network.call(leader, &addr, request, remaining).await
    }

    async fn pause_before_retry(&self, deadline: Instant) -> Result<(), KvError> {
        if let Err(e) = &self.raft.metrics().borrow().running_state {
            return Err(KvError::Stopped(e.to_string()));
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(KvError::NoLeader(self.timeout));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        Ok(())
    }
}
