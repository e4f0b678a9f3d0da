//! Rolling upgrades, as Ra does them: the cluster runs one machine version,
//! and moves to a newer one only when every member can apply it.
//!
//! - Each replica says which versions it can apply ([`report`], asked over
//!   the Raft port with `PeerRequest::MachineVersion`).
//! - The leader asks every member (voters and learners, which become voters)
//!   and, if all of them can apply a newer version than the cluster runs,
//!   commits an `Op::MachineVersion` entry to the newest version they all
//!   apply ([`raise_at_leader`]). It does so on its own, every few seconds
//!   while the cluster is behind what this build applies
//!   ([`move_to_newest_version`]), and at once when a command needs a newer
//!   version (EVAL needs 4; `Kv::execute` asks): such a command is proposed
//!   after the move, or refused with the reason, naming the members that hold
//!   the cluster back.
//! - Moving on its own is what versions 5 (binary ops) and 6 (Redis 7.0's
//!   order of checks) need (`command.rs`): every entry gains from them, so no
//!   command would ask. The price: once the
//!   cluster has moved, a replica of an older release can no longer be added
//!   (`membership.rs` asks a newcomer first), where before it could until the
//!   first EVAL. A rolling upgrade is unaffected: the cluster moves only once
//!   the last member is upgraded.
//! - A replica that meets an entry above what it can apply holds back
//!   applying (`store/machine_version.rs`). It still takes the log and votes,
//!   so it counts for the quorum, but it should not lead: a leader whose state
//!   stands still cannot answer its clients. So it stops standing for
//!   election and hands leadership to a replica that applies, if it has it
//!   ([`step_aside_when_held_back`]); a transfer to it is refused.
//!
//! Why it is safe: versions only go up, and a replica's applied version is
//! committed; so a command needing version `v` goes into the log only after
//! the entry that moved the cluster to `v`, and every member that applies it
//! has first applied that move, which only happened once they all could. A
//! member added later is asked before it joins and before it votes
//! (`membership.rs`).

use std::time::Duration;

use futures::future::join_all;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use tokio::sync::Mutex;

use crate::command::{Op, Proposal};
use crate::network::{Network, PeerRequest, PeerResponse, RaiseError, VersionReport};
use crate::raft::Raft;
use crate::store::MachineVersions;
use crate::types::NodeId;

/// How often a held-back leader looks for a replica to hand over to.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How long a member has to say which versions it applies: a command that
/// needs a move waits this long for a member that is down or frozen, and a
/// busy member must not be taken for a silent one.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the version entry may take to be committed and applied.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One move at a time: two at once would both propose an entry.
static MOVING: Mutex<()> = Mutex::const_new(());

/// What this replica says of its machine versions.
pub fn report(versions: &MachineVersions) -> VersionReport {
    VersionReport {
        can_apply: versions.can_apply(),
        current: versions.current(),
        held_back_at: versions.held_back().map(|held| held.at),
    }
}

/// At the leader: makes sure the cluster runs machine version `needs` or
/// newer, moving it to the newest version every member can apply if it does
/// not yet. Returns the version the cluster runs then.
pub async fn raise_at_leader(
    raft: &Raft,
    network: &Network,
    versions: &MachineVersions,
    needs: u32,
) -> Result<u32, RaiseError> {
    if versions.current() >= needs {
        return Ok(versions.current());
    }
    let _moving = MOVING.lock().await;
    if versions.current() >= needs {
        return Ok(versions.current());
    }
    let metrics = raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(metrics.id) {
        return Err(RaiseError::NotLeader);
    }
    let members: Vec<(NodeId, String)> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    let asked = join_all(members.iter().map(|(id, addr)| async move {
        let answer = if *id == metrics.id {
            Ok(report(versions))
        } else {
            ask(network, *id, addr).await
        };
        (*id, answer)
    }))
    .await;
    let target = common_version(&asked, needs).map_err(|why| {
        RaiseError::Refused(format!(
            "the cluster runs machine version {} until every member can apply {needs}: {why}",
            versions.current()
        ))
    })?;
    let proposal = Proposal::new(&[Op::MachineVersion { to: target }], versions.current());
    let written = tokio::time::timeout(PROPOSE_TIMEOUT, raft.client_write(proposal)).await;
    match written {
        Ok(Ok(_)) => {
            tracing::info!("moved the cluster to machine version {target}");
            Ok(target)
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(RaiseError::NotLeader)
        }
        Ok(Err(e)) => Err(RaiseError::Refused(format!(
            "moving the cluster to machine version {target} failed: {e}"
        ))),
        Err(_) => Err(RaiseError::Refused(format!(
            "moving the cluster to machine version {target} was not done within {PROPOSE_TIMEOUT:?}"
        ))),
    }
}

/// What member `id` says of its versions, or why it said nothing.
async fn ask(network: &Network, id: NodeId, addr: &str) -> Result<VersionReport, String> {
    match network
        .call(id, addr, &PeerRequest::MachineVersion, ASK_TIMEOUT)
        .await
    {
        Ok(PeerResponse::MachineVersion(report)) => Ok(report),
        // A release before machine versions does not know the request.
        Ok(_) => Err("does not say which machine versions it applies (an older release?)".into()),
        Err(e) => Err(format!("did not answer ({e})")),
    }
}

/// The newest version every member can apply, if that is at least `needs`;
/// else who holds the cluster back, in words.
fn common_version(
    reports: &[(NodeId, Result<VersionReport, String>)],
    needs: u32,
) -> Result<u32, String> {
    let mut blockers = Vec::new();
    let mut common = u32::MAX;
    for (id, answer) in reports {
        match answer {
            Ok(report) if report.can_apply >= needs => common = common.min(report.can_apply),
            Ok(report) => blockers.push(format!(
                "replica {id} applies versions up to {}; upgrade it",
                report.can_apply
            )),
            Err(why) => blockers.push(format!("replica {id} {why}")),
        }
    }
    if blockers.is_empty() && common != u32::MAX {
        Ok(common)
    } else if blockers.is_empty() {
        Err("no member answered".into())
    } else {
        Err(blockers.join("; "))
    }
}

/// How often a leader looks whether the cluster can move to a newer version.
const MOVE_ON_EVERY: Duration = Duration::from_secs(2);

/// Runs for the life of the process: while this replica leads a cluster that
/// runs an older machine version than this build applies, it asks the members
/// and moves the cluster to the newest version they all apply. It looks as
/// soon as it becomes leader (so a new cluster moves before its first writes),
/// whenever the leader or the membership changes, and every [`MOVE_ON_EVERY`]
/// (a member upgraded in place changes neither). It watches openraft's server
/// metrics, not all of them: those change with every write, and a wake-up per
/// write costs on the write path.
pub async fn move_to_newest_version(raft: Raft, network: Network, versions: MachineVersions) {
    let mut metrics = raft.server_metrics();
    loop {
        let leads = {
            let now = metrics.borrow_watched();
            now.current_leader == Some(now.id)
        };
        let current = versions.current();
        let behind = current < versions.can_apply() && versions.held_back().is_none();
        if leads && behind {
            if let Err(why) = raise_at_leader(&raft, &network, &versions, current + 1).await {
                tracing::debug!("the cluster stays at machine version {current}: {why}");
                tokio::time::sleep(MOVE_ON_EVERY).await;
            }
            continue;
        }
        if let Ok(Err(_)) = tokio::time::timeout(MOVE_ON_EVERY, metrics.changed()).await {
            return; // Raft has stopped.
        }
    }
}

/// Runs for the life of the process: once applying is held back, this
/// replica stops standing for election (it still votes, and its log still
/// counts for the quorum) and, whenever it leads, hands leadership to a voter
/// that applies. If none does, it goes on leading: it still replicates the
/// log and tells the others what is committed, which they need in order to
/// apply, though its own clients wait in vain.
pub async fn step_aside_when_held_back(raft: Raft, network: Network, versions: MachineVersions) {
    let held = versions.wait_held_back().await;
    raft.runtime_config().elect(false);
    tracing::warn!("{held}; no longer standing for election");
    loop {
        crate::membership::step_down(&raft, &network).await;
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn says(can_apply: u32) -> Result<VersionReport, String> {
        Ok(VersionReport {
            can_apply,
            current: 3,
            held_back_at: None,
        })
    }

    #[test]
    fn the_cluster_moves_to_the_newest_version_every_member_applies() {
        let reports = [(1, says(5)), (2, says(4)), (3, says(5))];
        assert_eq!(common_version(&reports, 4), Ok(4));
        let reports = [(1, says(5)), (2, says(5))];
        assert_eq!(common_version(&reports, 4), Ok(5));
    }

    #[test]
    fn a_member_that_cannot_apply_or_does_not_answer_holds_it_back() {
        let reports = [
            (1, says(4)),
            (2, says(3)),
            (3, Err("did not answer (refused)".to_string())),
        ];
        let why = common_version(&reports, 4).unwrap_err();
        assert!(
            why.contains("replica 2 applies versions up to 3; upgrade it"),
            "{why}"
        );
        assert!(why.contains("replica 3 did not answer"), "{why}");
        assert!(common_version(&[], 4).is_err());
    }
}
