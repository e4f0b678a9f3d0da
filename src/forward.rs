//! Acting at the leader, from any replica: the one loop every request kind
//! that must run there (a write, a read-index round, a membership change)
//! goes through.
//!
//! Each attempt runs the request here if this replica leads, else forwards it
//! to the leader it knows over the Raft port, else (no leader known) waits.
//! The request kind only says what an attempt's outcome means: done, failed
//! for good, or safe to try again. Trying again is safe only when nothing can
//! have happened (the leader moved before taking it, or could not be
//! reached); the caller decides, since a write sent and then cut off may
//! still be committed and must not be sent twice.

use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use tokio::time::Instant;

use crate::command::{Op, Proposal};
use crate::machine::ProposalOutcome;
use crate::metrics::ErrorKind;
use crate::network::{
    CallError, ChangeDone, ChangeError, MembershipChange, PeerRequest, PeerResponse, RaiseError,
    ReadPoint,
};
use crate::node::Node;
use crate::types::NodeId;

/// How long adding a member may take: the new replica must catch up first.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often to look again for a leader while there is none.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What one attempt came to.
pub enum Attempt<T> {
    /// Answered: done, or failed for good.
    Done(Result<T, KvError>),
    /// Nothing happened: try again after a pause, until the deadline.
    Again,
}

impl Node {
    /// Runs a request at the leader within `timeout`: `here` when this
    /// replica leads (it gets the deadline), else the request `forwarded`
    /// makes, whose answer (or failure to get one) `answered` reads. The
    /// forwarded request is made only when it is sent: a write's carries a
    /// copy of its proposal, which the leader itself never needs.
    pub async fn at_leader<T, Here, HereDone>(
        &self,
        timeout: Duration,
        forwarded: impl Fn() -> PeerRequest,
        mut here: Here,
        answered: impl Fn(Result<PeerResponse, CallError>, Instant) -> Attempt<T>,
    ) -> Result<T, KvError>
    where
        Here: FnMut(Instant) -> HereDone,
        HereDone: Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = match self.current_leader() {
                Some(leader) if leader == self.id() => here(deadline).await,
                Some(leader) => {
                    let answer = self.call_leader(leader, &forwarded(), deadline).await;
                    answered(answer, deadline)
                }
                None => Attempt::Again,
            };
            match attempt {
                Attempt::Done(outcome) => return outcome,
                Attempt::Again => self.pause_before_retry(deadline, timeout).await?,
            }
        }
    }

    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.raft().metrics().borrow_watched().current_leader
    }

    /// The leader's Raft address: from the committed membership, else from --peers.
    fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft().metrics().borrow_watched().clone();
        let from_membership = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone());
        from_membership.or_else(|| self.peers().address_of(id).map(str::to_string))
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
        // A leader that froze or was cut off may never answer, and the
        // batcher waits for this call before it proposes the next batch: so
        // stop waiting once another leader is known. What was sent may still
        // be committed by the new leader, or not: the caller says so.
        tokio::select! {
            answer = self.network().call(leader, &addr, request, remaining) => answer,
            successor = self.leader_other_than(leader) => Err(CallError::Interrupted {
                target: leader,
                why: format!("replica {successor} leads now"),
            }),
        }
    }

    /// Resolves once this replica knows of a leader other than `leader`.
    async fn leader_other_than(&self, leader: NodeId) -> NodeId {
        let mut metrics = self.raft().metrics();
        loop {
            if let Some(now) = metrics.borrow_watched().current_leader {
                if now != leader {
                    return now;
                }
            }
            if metrics.changed().await.is_err() {
                // Raft has stopped; the call's own deadline ends the wait.
                return std::future::pending().await;
            }
        }
    }

    async fn pause_before_retry(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), KvError> {
        if let Err(e) = &self.raft().metrics().borrow_watched().running_state {
            return Err(KvError::Stopped(e.to_string()));
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(KvError::NoLeader(timeout));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        Ok(())
    }

    /// Proposes `ops` as one log entry and waits until it is committed and
    /// applied. Callers go through the write batcher, which calls this.
    pub(crate) async fn propose(&self, ops: Vec<Op>) -> Result<ProposalOutcome, KvError> {
        let bytes = ops.iter().map(Op::size).sum();
        let versions = &self.reader().versions;
        let proposal = crate::heavy::run(bytes, || Proposal::new(&ops, versions.current()));
        let (raft, timeout, proposal) = (self.raft(), self.timeout(), &proposal);
        let here = move |deadline| async move {
            let written =
                tokio::time::timeout_at(deadline, raft.client_write(proposal.clone().stamp()));
            match written.await {
                Err(_) => Attempt::Done(Err(KvError::WriteOutcomeUnknown(timeout))),
                Ok(Ok(response)) => Attempt::Done(Ok(response.data)),
                // Not appended: leadership had moved (openraft 0.10 says
                // this only before the entry is in the log).
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                    Attempt::Again
                }
                Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
                    Attempt::Done(Err(KvError::LeaderChangedMidWrite))
                }
                Ok(Err(RaftError::APIError(e))) => {
                    Attempt::Done(Err(KvError::Stopped(e.to_string())))
                }
                // A leader that holds back lets its entries' answers go
                // unsent (`store/state_machine.rs`): the entry is committed,
                // but what it did is not known here.
                Ok(Err(RaftError::Fatal(_))) if versions.held_back().is_some() => {
                    Attempt::Done(Err(KvError::HeldBack(format!(
                        "{}; the write may or may not be applied",
                        versions
                            .held_back()
                            .map(|h| h.to_string())
                            .unwrap_or_default()
                    ))))
                }
                Ok(Err(RaftError::Fatal(e))) => Attempt::Done(Err(KvError::Stopped(e.to_string()))),
            }
        };
        let answered = |answer, deadline| match answer {
            Ok(PeerResponse::Propose(Ok(response))) => Attempt::Done(Ok(response.data)),
            Ok(PeerResponse::Propose(Err(RaftError::APIError(
                ClientWriteError::ForwardToLeader(_),
            )))) => Attempt::Again,
            Ok(PeerResponse::Propose(Err(RaftError::APIError(
                ClientWriteError::LogEntryDiscarded(_),
            )))) => Attempt::Done(Err(KvError::LeaderChangedMidWrite)),
            Ok(PeerResponse::Propose(Err(e))) => {
                Attempt::Done(Err(KvError::ForwardInterrupted(e.to_string())))
            }
            Ok(_) => Attempt::Done(Err(KvError::ForwardInterrupted("unexpected answer".into()))),
            Err(CallError::Unreachable { .. }) => Attempt::Again,
            Err(CallError::TooLarge(_)) => Attempt::Done(Err(KvError::TooLarge)),
            Err(e @ CallError::Interrupted { .. }) => {
                Attempt::Done(Err(if Instant::now() >= deadline {
                    KvError::WriteOutcomeUnknown(timeout)
                } else {
                    KvError::ForwardInterrupted(e.to_string())
                }))
            }
        };
        let forwarded = || PeerRequest::Propose(proposal.clone());
        self.at_leader(timeout, forwarded, here, answered).await
    }

    /// One read-index round: ask the leader (or be it) for the index a read
    /// must wait for. Rounds are shared through `batching::ReadIndexRounds`.
    /// A round that fails changed nothing, so it is always tried again.
    pub(crate) async fn fetch_read_index(&self) -> Result<ReadPoint, KvError> {
        let raft = self.raft();
        let reads = self.reads();
        let here = move |deadline| async move {
            match tokio::time::timeout_at(deadline, reads.read_point(raft)).await {
                Ok(Ok(point)) => Attempt::Done(Ok(point)),
                Ok(Err(RaftError::Fatal(e))) => Attempt::Done(Err(KvError::Stopped(e.to_string()))),
                Ok(Err(_)) | Err(_) => Attempt::Again,
            }
        };
        let answered = |answer, _| match answer {
            Ok(PeerResponse::ReadIndex(Ok(point))) => Attempt::Done(Ok(point)),
            _ => Attempt::Again,
        };
        self.at_leader(self.timeout(), || PeerRequest::ReadIndex, here, answered)
            .await
    }

    /// Makes sure the cluster runs machine version `needs` (or newer) before
    /// a command that needs it is proposed: at once if this replica has
    /// applied that version (then it is committed), else by asking the
    /// leader to move the cluster there (`upgrade.rs`). The error says why
    /// the cluster cannot, in words.
    pub(crate) async fn ensure_machine_version(&self, needs: u32) -> Result<u32, KvError> {
        let versions = &self.reader().versions;
        if versions.current() >= needs {
            return Ok(versions.current());
        }
        let (raft, network, timeout) = (self.raft(), self.network(), self.timeout());
        let here = move |deadline| async move {
            let raised = crate::upgrade::raise_at_leader(raft, network, versions, needs);
            match tokio::time::timeout_at(deadline, raised).await {
                Ok(Ok(version)) => Attempt::Done(Ok(version)),
                Ok(Err(RaiseError::NotLeader)) => Attempt::Again,
                Ok(Err(RaiseError::Refused(why))) => {
                    Attempt::Done(Err(KvError::MachineVersion(why)))
                }
                Err(_) => Attempt::Done(Err(KvError::NoLeader(timeout))),
            }
        };
        let answered = |answer, _| match answer {
            Ok(PeerResponse::RaiseMachineVersion(Ok(version))) => Attempt::Done(Ok(version)),
            Ok(PeerResponse::RaiseMachineVersion(Err(RaiseError::NotLeader))) => Attempt::Again,
            Ok(PeerResponse::RaiseMachineVersion(Err(RaiseError::Refused(why)))) => {
                Attempt::Done(Err(KvError::MachineVersion(why)))
            }
            // A leader of a release before machine versions: it cannot move.
            Ok(_) => Attempt::Done(Err(KvError::MachineVersion(format!(
                "the leader does not know machine versions; the cluster cannot run version \
                 {needs} until it is upgraded"
            )))),
            Err(CallError::Unreachable { .. } | CallError::Interrupted { .. }) => Attempt::Again,
            Err(e) => Attempt::Done(Err(KvError::ForwardInterrupted(e.to_string()))),
        };
        let forwarded = || PeerRequest::RaiseMachineVersion { needs };
        self.at_leader(timeout, forwarded, here, answered).await
    }

    pub(crate) async fn change_membership_at_leader(
        &self,
        change: MembershipChange,
    ) -> Result<ChangeDone, KvError> {
        let timeout = self.timeout().max(MEMBERSHIP_TIMEOUT);
        let (raft, network, change) = (self.raft(), self.network(), &change);
        let versions = &self.reader().versions;
        let here = move |deadline| async move {
            let changed =
                crate::membership::change_at_leader(raft, network, versions, change.clone());
            match tokio::time::timeout_at(deadline, changed).await {
                Ok(Ok(done)) => Attempt::Done(Ok(done)),
                // Leadership moved while it ran: ask again.
                Ok(Err(ChangeError::NotLeader { .. })) => Attempt::Again,
                Ok(Err(refused)) => Attempt::Done(Err(KvError::Membership(refused.to_string()))),
                Err(_) => Attempt::Done(Err(KvError::WriteOutcomeUnknown(timeout))),
            }
        };
        let answered = |answer, deadline| match answer {
            Ok(PeerResponse::ChangeMembership(Ok(done))) => Attempt::Done(Ok(done)),
            Ok(PeerResponse::ChangeMembership(Err(ChangeError::NotLeader { .. }))) => {
                Attempt::Again
            }
            Ok(PeerResponse::ChangeMembership(Err(refused))) => {
                Attempt::Done(Err(KvError::Membership(refused.to_string())))
            }
            Ok(_) => Attempt::Done(Err(KvError::ForwardInterrupted("unexpected answer".into()))),
            Err(CallError::Unreachable { .. }) => Attempt::Again,
            // Every change may be asked again: one already made is answered
            // as done (and a hand-over moves the leader, which is what
            // interrupts its call).
            Err(CallError::Interrupted { .. }) if Instant::now() < deadline => Attempt::Again,
            Err(CallError::Interrupted { .. }) => {
                Attempt::Done(Err(KvError::WriteOutcomeUnknown(timeout)))
            }
            Err(e) => Attempt::Done(Err(KvError::ForwardInterrupted(e.to_string()))),
        };
        let forwarded = || PeerRequest::ChangeMembership(change.clone());
        self.at_leader(timeout, forwarded, here, answered).await
    }
}

/// Why a command did not complete. Each is one line at the prompt.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// openraft 0.10 says so when leadership moved after the write's entry was
    /// appended: another leader may still commit it, or may not.
    #[error("the leader changed while the write was in flight; it may or may not be applied")]
    LeaderChangedMidWrite,
    #[error("this replica has stopped: {0}")]
    Stopped(String),
    #[error("reading the local state failed: {0}")]
    Storage(String),
    #[error("the request is too large to send to the leader")]
    TooLarge,
    #[error("{0}")]
    Membership(String),
    /// A command that needs a machine version the cluster does not run yet:
    /// why it cannot move there (`upgrade.rs`).
    #[error("{0}")]
    MachineVersion(String),
    /// A read at a replica that holds back applying (`store/machine_version.rs`).
    #[error("{0}")]
    HeldBack(String),
}

impl KvError {
    /// The kind `ondisk_errors_total` counts this error under.
    pub fn metric_kind(&self) -> ErrorKind {
        match self {
            KvError::NoLeader(_) => ErrorKind::NoLeader,
            KvError::WriteOutcomeUnknown(_) | KvError::ForwardInterrupted(_) => {
                ErrorKind::OutcomeUnknown
            }
            KvError::LeaderChangedMidWrite => ErrorKind::LeaderChanged,
            KvError::Stopped(_) => ErrorKind::Stopped,
            KvError::Storage(_) => ErrorKind::Storage,
            KvError::TooLarge => ErrorKind::TooLarge,
            KvError::Membership(_) => ErrorKind::Membership,
            KvError::MachineVersion(_) | KvError::HeldBack(_) => ErrorKind::MachineVersion,
        }
    }
}
