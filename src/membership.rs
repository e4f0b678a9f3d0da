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

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::raft::VoteRequest;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::network::{Network, PeerRequest, PeerResponse};
use crate::types::{NodeId, Raft, TypeConfig};

/// A change a person asked for at the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
}

impl MembershipChange {
    /// `ID HOST:PORT`, as typed at the prompt (`add-replica`) or sent to the
    /// client port (`CLUSTER ADD-REPLICA`).
    pub fn parse_add(id: &str, addr: &str) -> Result<Self, String> {
        let id = parse_id(id)?;
        let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(port)) if port != 0) {
            return Err(format!("'{}' is not HOST:PORT", shorten(addr)));
        }
        Ok(MembershipChange::Add {
            id,
            addr: addr.to_string(),
        })
    }

    /// `ID`, for `remove-replica` and `CLUSTER REMOVE-REPLICA`.
    pub fn parse_remove(id: &str) -> Result<Self, String> {
        Ok(MembershipChange::Remove { id: parse_id(id)? })
    }
}

fn parse_id(word: &str) -> Result<NodeId, String> {
    match word.parse::<NodeId>() {
        // 0 means "any replica" in a hello (see `join_through`).
        Ok(0) => Err("0 is not a replica id; ids start at 1".into()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!(
            "'{}' is not a replica id (a whole number)",
            shorten(word)
        )),
    }
}

/// Input echoed in an error stays short: the line is for a person.
fn shorten(word: &str) -> String {
    const SHOWN: usize = 40;
    if word.chars().count() <= SHOWN {
        return word.to_string();
    }
    let head: String = word.chars().take(SHOWN).collect();
    format!("{head}...")
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
    error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
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
        let metrics = raft.metrics().borrow_watched().clone();
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
                let known = addresses.iter().find(|(member, _)| member == id);
                return match known {
                    // Asked again (a retry after the leader changed, say):
                    // it is done, so say so.
                    Some((_, known)) if known == addr => Ok(voters.into_iter().collect()),
                    Some((_, known)) => Err(ChangeError::Refused(format!(
                        "replica {id} is already a member, at {known}; \
                         to move it, remove it and add it again"
                    ))),
                    None => Err(ChangeError::Refused(format!(
                        "replica {id} is already a member"
                    ))),
                };
            }
            raft.add_learner(*id, BasicNode { addr: addr.clone() }, false)
                .await
                .map_err(|e| change_error(&format!("adding replica {id} as a learner"), e))?;
            wait_until_caught_up(raft, *id, addr).await?;
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

/// How long a new learner has to catch up before the change gives up (it
/// stays a learner; asking again resumes). A million keys take a few seconds.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// Waits until learner `id` holds every entry the leader had when it was
/// added. Only then may it become a voter: a voter that holds nothing counts
/// toward the quorum yet cannot help form one, so with one other replica down
/// the cluster would stall until it caught up.
///
/// openraft's own blocking `add_learner` is not enough here: it counts a
/// learner as caught up once it lags by less than `replication_lag_threshold`
/// entries, even if it never answered at all.
async fn wait_until_caught_up(raft: &Raft, id: NodeId, addr: &str) -> Result<(), ChangeError> {
    let mut metrics = raft.metrics();
    let target = metrics.borrow_watched().last_log_index.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut matched: Option<u64>;
    loop {
        {
            let now = metrics.borrow_watched();
            let Some(progress) = &now.replication else {
                return Err(ChangeError::NotLeader { leader: None });
            };
            matched = progress
                .get(&id)
                .copied()
                .flatten()
                .map(|log_id| log_id.index);
            if matched.is_some_and(|index| index >= target) {
                return Ok(());
            }
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ChangeError::Refused("this replica is stopping".into())),
            Err(_) => break,
        }
    }
    let held = matched.map_or("nothing yet".to_string(), |i| format!("up to index {i}"));
    Err(ChangeError::Refused(format!(
        "replica {id} was added as a learner but has not caught up within {}s \
         (it holds {held} of {target}; is it running and reachable at {addr}?); \
         it stays a learner until asked again",
        CATCH_UP_TIMEOUT.as_secs()
    )))
}

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

/// Is the candidate asking for this vote a replica that was removed while it
/// was down or cut off? It never got the entry that removed it, so it still
/// believes it is a voter and would campaign forever. (It cannot disturb the
/// others, whose logs are longer, so they refuse it anyway; this tells it.)
///
/// Said only when it is certain: this replica has *applied* a membership
/// without the candidate, so that membership is committed, and the
/// candidate's log ends before it, so the candidate cannot hold any later
/// membership that added it back.
pub fn removed_while_away(raft: &Raft, request: &VoteRequest<TypeConfig>) -> Option<String> {
    let metrics = raft.metrics().borrow_watched().clone();
    let stored = &metrics.membership_config;
    let at = stored.log_id().as_ref()?.index;
    let applied = metrics.last_applied.map_or(0, |id| id.index);
    let candidate = request.vote.leader_id().node_id;
    let candidate_last = request.last_log_id.map_or(0, |id| id.index);
    let is_member = stored.membership().get_node(&candidate).is_some();
    if applied < at || is_member || candidate_last >= at {
        return None;
    }
    Some(format!(
        "replica {candidate} is not a member since log index {at} (members now: {})",
        stored
            .membership()
            .nodes()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ))
}

/// Stops this process as a replica that is no longer a member.
pub fn stop_as_removed(my_id: NodeId) -> ! {
    eprintln!("replica {my_id} was removed from the cluster; stopping (its folder can be deleted)");
    tracing::warn!("removed from the cluster; stopping");
    std::process::exit(0);
}
