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

use crate::machine::parse::shown;
pub use crate::network::{ChangeDone, ChangeError, ChangeResult, MembershipChange};
use crate::network::{Network, PeerRequest, PeerResponse};
use crate::raft::Raft;
use crate::store::MachineVersions;
use crate::types::{NodeId, TypeConfig};

/// How a person writes a change, and is told it is done (the type itself
/// travels between replicas, so it is defined with the Raft port's messages).
impl MembershipChange {
    /// `ID HOST:PORT`, as typed at the prompt (`add-replica`) or sent to the
    /// client port (`CLUSTER ADD-REPLICA`).
    pub fn parse_add(id: &str, addr: &str) -> Result<Self, String> {
        let id = parse_id(id)?;
        let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(port)) if port != 0) {
            return Err(format!("'{}' is not HOST:PORT", shown(addr.as_bytes())));
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

    /// `ID`, for `transfer-leader` and `CLUSTER TRANSFER-LEADER`.
    pub fn parse_transfer(id: &str) -> Result<Self, String> {
        Ok(MembershipChange::TransferLeader { to: parse_id(id)? })
    }

    /// What a person is told when the change is done: the members after
    /// it, or for a hand-over, who leads.
    pub fn done_text(&self, done: &ChangeDone) -> String {
        let ids: Vec<String> = done.voters.iter().map(u64::to_string).collect();
        let members = format!("OK members={}", ids.join(","));
        match self {
            MembershipChange::TransferLeader { to } => format!("OK leader={to}"),
            MembershipChange::Add { id, .. } if done.already => {
                format!("{members} (replica {id} was a member already)")
            }
            MembershipChange::Remove { id } if done.already => {
                format!("{members} (replica {id} is not a member)")
            }
            _ => members,
        }
    }
}

fn parse_id(word: &str) -> Result<NodeId, String> {
    match word.parse::<NodeId>() {
        // 0 means "any replica" in a hello (see `join_through`).
        Ok(0) => Err("0 is not a replica id; ids start at 1".into()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!(
            "'{}' is not a replica id (a whole number)",
            shown(word.as_bytes())
        )),
    }
}

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
/// removes it, since the leader stops replicating to it). `versions`: the
/// machine version the cluster runs, which a newcomer must be able to apply.
pub async fn change_at_leader(
    raft: &Raft,
    network: &Network,
    versions: &MachineVersions,
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
                    Some((_, known)) if known == addr => Ok(ChangeDone {
                        voters: voters.into_iter().collect(),
                        already: true,
                    }),
                    Some((_, known)) => Err(ChangeError::AlreadyMember {
                        id: *id,
                        at: Some(known.clone()),
                    }),
                    None => Err(ChangeError::AlreadyMember { id: *id, at: None }),
                };
            }
            check_newcomer_version(network, *id, addr, versions.current()).await?;
            raft.add_learner(*id, BasicNode { addr: addr.clone() }, false)
                .await
                .map_err(|e| change_error(&format!("adding replica {id} as a learner"), e))?;
            wait_until_caught_up(raft, *id, addr).await?;
            // Asked again now that it surely answers (it was perhaps not up
            // when it was added): a voter that cannot apply would hold back.
            check_newcomer_version(network, *id, addr, versions.current()).await?;
            voters.iter().copied().chain([*id]).collect::<BTreeSet<_>>()
        }
        MembershipChange::Remove { id } => {
            if !voters.contains(id) {
                // Asked again (a retry after the leader changed, or after an
                // answer that it may or may not have happened): it is done.
                return Ok(ChangeDone {
                    voters: voters.into_iter().collect(),
                    already: true,
                });
            }
            if voters.len() == 1 {
                return Err(ChangeError::Refused(format!(
                    "replica {id} is the last member; it cannot be removed"
                )));
            }
            voters.iter().copied().filter(|v| v != id).collect()
        }
        MembershipChange::TransferLeader { to } => {
            let known = addresses.iter().find(|(member, _)| member == to);
            if let Some((_, addr)) = known {
                check_not_held_back(network, *to, addr).await?;
            }
            hand_over(raft, *to, &voters).await?;
            return Ok(ChangeDone {
                voters: voters.into_iter().collect(),
                already: false,
            });
        }
    };
    raft.change_membership(wanted.clone(), false)
        .await
        .map_err(|e| change_error("the membership change", e))?;
    if let MembershipChange::Remove { id } = change {
        let me = raft.metrics().borrow_watched().id;
        // A leader that removed itself is not told: the notice would stop it
        // before it answers. It stops once openraft steps it down (main.rs,
        // `report_removal_from_log`).
        let known = addresses.iter().find(|(member, _)| *member == id);
        if let Some((_, addr)) = known.filter(|_| id != me) {
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
    Ok(ChangeDone {
        voters: wanted.into_iter().collect(),
        already: false,
    })
}

const NOTICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A newcomer that says it cannot apply the machine version the cluster runs
/// is refused (it would hold back and never catch up): before it is added,
/// and again before it becomes a voter (it stays a learner). One that does
/// not say (a release before machine versions) is added as before; the cluster
/// does not move to a newer version while it is a member (`upgrade.rs`).
async fn check_newcomer_version(
    network: &Network,
    id: NodeId,
    addr: &str,
    cluster_version: u32,
) -> Result<(), ChangeError> {
    let answer = network
        .call(id, addr, &PeerRequest::MachineVersion, NOTICE_TIMEOUT)
        .await;
    match answer {
        Ok(PeerResponse::MachineVersion(report)) if report.can_apply < cluster_version => {
            Err(ChangeError::Refused(format!(
                "replica {id} applies machine versions up to {}, but the cluster runs version \
                 {cluster_version}; start it with a build that applies {cluster_version}",
                report.can_apply
            )))
        }
        _ => Ok(()),
    }
}

/// A replica that holds back applying must not lead: its state stands still.
async fn check_not_held_back(network: &Network, id: NodeId, addr: &str) -> Result<(), ChangeError> {
    let answer = network
        .call(id, addr, &PeerRequest::MachineVersion, NOTICE_TIMEOUT)
        .await;
    match answer {
        Ok(PeerResponse::MachineVersion(report)) if report.held_back_at.is_some() => {
            Err(ChangeError::Refused(format!(
                "replica {id} holds back applying (it needs a build that applies a newer \
                 machine version); it cannot lead until it is upgraded"
            )))
        }
        _ => Ok(()),
    }
}

/// How long a hand-over may take before it is reported as not done: the
/// chosen replica must first hold the leader's whole log, then win one
/// election.
const HAND_OVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// At the leader: asks voter `to` to take over, and waits until it leads.
/// openraft sends the request to every replica; the one named starts an
/// election at once if it holds the leader's whole log (else it waits to
/// catch up), and the others grant it their vote although the leader's lease
/// has not run out.
pub async fn hand_over(
    raft: &Raft,
    to: NodeId,
    voters: &BTreeSet<NodeId>,
) -> Result<(), ChangeError> {
    let me = raft.metrics().borrow_watched().id;
    if to == me {
        return Ok(());
    }
    if !voters.contains(&to) {
        return Err(ChangeError::Refused(format!(
            "replica {to} is not a voting member; leadership goes only to a voter"
        )));
    }
    raft.trigger()
        .transfer_leader(to)
        .await
        .map_err(|e| ChangeError::Refused(format!("handing over failed: {e}")))?;
    let mut metrics = raft.metrics();
    let deadline = tokio::time::Instant::now() + HAND_OVER_TIMEOUT;
    loop {
        let leader = metrics.borrow_watched().current_leader;
        match leader {
            Some(now) if now == to => return Ok(()),
            Some(now) if now != me => {
                return Err(ChangeError::Refused(format!(
                    "replica {now} took over instead of replica {to}"
                )))
            }
            _ => {}
        }
        if tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .is_err()
        {
            return Err(ChangeError::Refused(format!(
                "replica {to} did not take over within {HAND_OVER_TIMEOUT:?}"
            )));
        }
    }
}

/// Before this replica stops, or once it holds back applying: if it leads,
/// hand over to the voter that holds the most of the log, so that the others
/// need not wait out an election timeout (a rolling restart then pauses
/// writes for one hand-over instead). Best effort: a hand-over that fails
/// leaves an ordinary election.
pub async fn step_down(raft: &Raft, network: &Network) {
    let metrics = raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(metrics.id) {
        return;
    }
    let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    let held_back = held_back_voters(network, &metrics, &voters).await;
    let Some(successor) = best_successor(&metrics, &voters, &held_back) else {
        return;
    };
    match hand_over(raft, successor, &voters).await {
        Ok(()) => tracing::info!("handed leadership to replica {successor} before stopping"),
        Err(e) => tracing::warn!("could not hand leadership over before stopping: {e}"),
    }
}

/// The voters other than this one that say they hold back applying (a
/// rolling upgrade): they refuse to lead. One that does not answer is not
/// counted: it may answer a hand-over all the same.
async fn held_back_voters(
    network: &Network,
    metrics: &openraft::RaftMetrics<TypeConfig>,
    voters: &BTreeSet<NodeId>,
) -> BTreeSet<NodeId> {
    let membership = metrics.membership_config.membership();
    let asked = voters
        .iter()
        .filter(|id| **id != metrics.id)
        .filter_map(|id| Some((*id, membership.get_node(id)?.addr.clone())))
        .map(|(id, addr)| async move {
            let answer = network
                .call(id, &addr, &PeerRequest::MachineVersion, NOTICE_TIMEOUT)
                .await;
            let held = matches!(
                answer,
                Ok(PeerResponse::MachineVersion(report)) if report.held_back_at.is_some()
            );
            held.then_some(id)
        });
    futures::future::join_all(asked)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The voter that should lead when this leader stops: the one that holds the
/// most of the log (it can win at once) among those not `held_back`, or none
/// if there is no other.
fn best_successor(
    metrics: &openraft::RaftMetrics<TypeConfig>,
    voters: &BTreeSet<NodeId>,
    held_back: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    let progress = metrics.replication.as_ref()?;
    voters
        .iter()
        .copied()
        .filter(|id| *id != metrics.id && !held_back.contains(id))
        .max_by_key(|id| {
            progress
                .get(id)
                .cloned()
                .flatten()
                .map(|log_id| log_id.index)
        })
}

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
            // A member already without a known address: nothing to ask.
            // At another address, it is said, and asked again.
            Ok(PeerResponse::ChangeMembership(Err(ChangeError::AlreadyMember {
                at: None,
                ..
            }))) => return,
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
