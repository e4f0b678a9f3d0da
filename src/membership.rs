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

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::network::{Network, PeerRequest};
use crate::types::{NodeId, Raft};

/// A change a person asked for at the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

/// The answer: the voters after the change, or why it was not made.
pub type ChangeResult = Result<Vec<NodeId>, String>;

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
                return Err(format!("replica {id} is already a member"));
            }
            // Blocks until the leader believes the learner has caught up.
            raft.add_learner(*id, BasicNode { addr: addr.clone() }, true)
                .await
                .map_err(|e| format!("adding replica {id} as a learner failed: {e}"))?;
            voters.iter().copied().chain([*id]).collect::<BTreeSet<_>>()
        }
        MembershipChange::Remove { id } => {
            if !voters.contains(id) {
                return Err(format!("replica {id} is not a member"));
            }
            if voters.len() == 1 {
                return Err(format!(
                    "replica {id} is the last member; it cannot be removed"
                ));
            }
            voters.iter().copied().filter(|v| v != id).collect()
        }
    };
    raft.change_membership(wanted.clone(), false)
        .await
        .map_err(|e| format!("the membership change failed: {e}"))?;
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

/// Stops this process as a replica that is no longer a member.
pub fn stop_as_removed(my_id: NodeId) -> ! {
    eprintln!("replica {my_id} was removed from the cluster; stopping (its folder can be deleted)");
    tracing::warn!("removed from the cluster; stopping");
    std::process::exit(0);
}
