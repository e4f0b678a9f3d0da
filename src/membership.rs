//! Changing who the members are while the cluster runs.
//!
//! Membership lives in the Raft log like any write, so it survives restarts
//! and every replica agrees on it; `--peers` only seeds a brand-new cluster.
//!
//! - Adding: the new replica first joins as a *learner*. It receives the log
//!   (or a snapshot, if the log was purged) without a vote, so the quorum
//!   never waits on a replica that is still empty. Once the leader sees it
//!   caught up, one membership change makes it a voter.
//! - Removing: one membership change without it. openraft moves through a
//!   joint configuration (old and new must both agree) so there is never a
//!   moment with two majorities.
//!
//! Both run at the leader; other replicas forward the request to it.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::network::{Network, PeerRequest, PeerResponse};
use crate::types::{NodeId, Raft};

/// A change a person asked for at the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    /// Asked at a replica that does not lead: ask the leader, if one is known.
    #[error("this replica is not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("{0}")]
    Refused(String),
}

/// The answer: the voters after the change, or why it was not made.
pub type ChangeResult = Result<Vec<NodeId>, ChangeError>;

/// What an openraft write error means for a membership change.
fn change_error(
    what: &str,
    error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> ChangeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ChangeError::NotLeader {
            leader: forward
                .leader_id
                .zip(forward.leader_node.map(|node| node.addr)),
        },
        other => ChangeError::Refused(format!("{what} failed: {other}")),
    }
}

/// At the leader: carries the change out and waits until it is committed.
/// A removed replica is then told so (it may never receive the entry that
/// removes it, since the leader stops replicating to it).
pub async fn change_at_leader(
    raft: &Raft,
    network: &Network,
    change: MembershipChange,
) -> ChangeResult {
    let (voters, addresses) = {
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let addresses: Vec<(NodeId, String)> = membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        (voters, addresses)
    };
    let wanted = match &change {
        MembershipChange::Add { id, addr } => {
            if voters.contains(id) {
                return Err(ChangeError::Refused(format!(
                    "replica {id} is already a member"
                )));
            }
            // Blocks until the leader believes the learner has caught up.
            raft.add_learner(*id, BasicNode { addr: addr.clone() }, true)
                .await
                .map_err(|e| change_error(&format!("adding replica {id} as a learner"), e))?;
            voters.iter().copied().chain([*id]).collect::<BTreeSet<_>>()
        }
        MembershipChange::Remove { id } => {
            if !voters.contains(id) {
                return Err(ChangeError::Refused(format!(
                    "replica {id} is not a member"
                )));
            }
            if voters.len() == 1 {
                return Err(ChangeError::Refused(format!(
                    "replica {id} is the last member; it cannot be removed"
                )));
            }
            voters.iter().copied().filter(|v| v != id).collect()
        }
    };
    raft.change_membership(wanted.clone(), false)
        .await
        .map_err(|e| change_error("the membership change", e))?;
    if let MembershipChange::Remove { id } = change {
        if let Some((_, addr)) = addresses.iter().find(|(member, _)| *member == id) {
            // Best effort: a replica that is down learns it from its log, or
            // stays apart, when it comes back.
            let told = network
                .call(id, addr, &PeerRequest::Removed, NOTICE_TIMEOUT)
                .await;
            if let Err(e) = told {
                tracing::info!("could not tell replica {id} it was removed: {e}");
            }
        }
    }
    Ok(wanted.into_iter().collect())
}

const NOTICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// For `--join HOST:PORT`: asks the member there (or the leader it names) to
/// add this replica, until one does or says it is a member already. The
/// member's id is not known yet, so the first hello names replica 0, which
/// means "whichever replica serves this address".
pub async fn join_through(network: Network, my_id: NodeId, my_addr: String, member: String) {
    let change = PeerRequest::ChangeMembership(MembershipChange::Add {
        id: my_id,
        addr: my_addr,
    });
    let (mut target, mut addr) = (0, member.clone());
    let mut said = String::new();
    loop {
        let why = match network.call(target, &addr, &change, JOIN_TIMEOUT).await {
            Ok(PeerResponse::ChangeMembership(Ok(voters))) => {
                tracing::info!("joined the cluster; voters now {voters:?}");
                return;
            }
            Ok(PeerResponse::ChangeMembership(Err(ChangeError::NotLeader {
                leader: Some((leader, leader_addr)),
            }))) => {
                (target, addr) = (leader, leader_addr);
                continue;
            }
            Ok(PeerResponse::ChangeMembership(Err(ChangeError::Refused(why))))
                if why.contains("already a member") =>
            {
                return;
            }
            Ok(PeerResponse::ChangeMembership(Err(e))) => e.to_string(),
            Ok(_) => "an unexpected answer".to_string(),
            Err(e) => e.to_string(),
        };
        if why != said {
            eprintln!("joining through {member}: {why}; retrying");
            said = why;
        }
        (target, addr) = (0, member.clone());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// How long one request to be added may take (the leader waits for this
/// replica to catch up before it answers).
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Stops this process as a replica that is no longer a member.
pub fn stop_as_removed(my_id: NodeId) -> ! {
    eprintln!("replica {my_id} was removed from the cluster; stopping (its folder can be deleted)");
    tracing::warn!("removed from the cluster; stopping");
    std::process::exit(0);
}
