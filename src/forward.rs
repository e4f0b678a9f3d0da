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
use tokio::time::Instant;

use crate::kv::KvError;
use crate::network::{CallError, PeerRequest, PeerResponse};
use crate::node::Node;
use crate::types::NodeId;

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
    /// replica leads (it gets the deadline), else `request` forwarded, whose
    /// answer (or failure to get one) `answered` reads.
    pub async fn at_leader<T, Here, HereDone>(
        &self,
        timeout: Duration,
        request: &PeerRequest,
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
                Some(leader) if leader == self.id => here(deadline).await,
                Some(leader) => {
                    answered(self.call_leader(leader, request, deadline).await, deadline)
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
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The leader's Raft address: from the committed membership, else from --peers.
    fn address_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow_watched().clone();
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
        // A leader that froze or was cut off may never answer, and the
        // batcher waits for this call before it proposes the next batch: so
        // stop waiting once another leader is known. What was sent may still
        // be committed by the new leader, or not: the caller says so.
        tokio::select! {
            answer = self.network.call(leader, &addr, request, remaining) => answer,
            successor = self.leader_other_than(leader) => Err(CallError::Interrupted {
                target: leader,
                why: format!("replica {successor} leads now"),
            }),
        }
    }

    /// Resolves once this replica knows of a leader other than `leader`.
    async fn leader_other_than(&self, leader: NodeId) -> NodeId {
        let mut metrics = self.raft.metrics();
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
        if let Err(e) = &self.raft.metrics().borrow_watched().running_state {
            return Err(KvError::Stopped(e.to_string()));
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(KvError::NoLeader(timeout));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
        Ok(())
    }
}
