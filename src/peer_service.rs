//! What this replica answers its peers: each request on the Raft port, handed
//! over by the transport (`network/server.rs`), to openraft or to the leader's
//! own operations (`kv.rs`'s read index, `membership.rs`).
//!
//! The decisions that are not openraft's live here, not in the transport:
//! telling a candidate that was removed while away that it is no longer a
//! member, and reading a received snapshot through before it is installed.

use std::cmp::Ordering;

use openraft::async_runtime::WatchReceiver;

use openraft::errors::RaftError;
use openraft::raft::SnapshotResponse;

use crate::network::{Network, PeerRequest, PeerResponse, PeerService};
use crate::raft::Raft;
use crate::read_index::LeaderReads;
use crate::store::snapshot;
use crate::store::snapshot::Snapshot;
use crate::store::MachineVersions;
use crate::types::{NodeId, Vote};

/// The Raft node as its peers see it. Cheap to clone.
#[derive(Clone)]
pub struct RaftPeerService {
    pub raft: Raft,
    /// How a read index asked for by a follower is confirmed here.
    pub reads: LeaderReads,
    /// For a membership change carried out here, and for reporting that
    /// the leader said this replica was removed.
    pub network: Network,
    /// What this replica says of machine versions, and whether it may lead.
    pub versions: MachineVersions,
}

impl PeerService for RaftPeerService {
    async fn answer(&self, from: NodeId, request: PeerRequest) -> PeerResponse {
        let raft = &self.raft;
        match request {
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => match crate::membership::removed_while_away(raft, &rpc) {
                Some(why) => PeerResponse::NotAMember(why),
                None => PeerResponse::Vote(raft.vote(rpc).await),
            },
            PeerRequest::PreVote(rpc) => match crate::membership::removed_while_away(raft, &rpc) {
                Some(why) => PeerResponse::NotAMember(why),
                None => PeerResponse::Vote(raft.pre_vote(rpc).await),
            },
            PeerRequest::Propose(proposal) => {
                PeerResponse::Propose(raft.client_write(proposal.stamp()).await)
            }
            PeerRequest::ReadIndex => {
                let point = self.reads.read_point(raft).await;
                if let Ok(point) = &point {
                    // Tell `from` of commits up to there without delay.
                    self.network.follower_reads().wait_for(from, point.index);
                }
                PeerResponse::ReadIndex(point)
            }
            PeerRequest::ChangeMembership(change) => PeerResponse::ChangeMembership(
                crate::membership::change_at_leader(raft, &self.network, &self.versions, change)
                    .await,
            ),
            // A replica that holds back applying must not lead (`upgrade.rs`).
            PeerRequest::TransferLeader(request)
                if *request.to_node_id() == raft.metrics().borrow_watched().id =>
            {
                match self.versions.held_back() {
                    Some(held) => PeerResponse::TransferLeader(Err(held.to_string())),
                    None => PeerResponse::TransferLeader(
                        raft.handle_transfer_leader(request)
                            .await
                            .map_err(|e| e.to_string()),
                    ),
                }
            }
            PeerRequest::TransferLeader(request) => PeerResponse::TransferLeader(
                raft.handle_transfer_leader(request)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            PeerRequest::MachineVersion => {
                PeerResponse::MachineVersion(crate::upgrade::report(&self.versions))
            }
            PeerRequest::RaiseMachineVersion { needs } => PeerResponse::RaiseMachineVersion(
                crate::upgrade::raise_at_leader(raft, &self.network, &self.versions, needs).await,
            ),
            PeerRequest::Removed => {
                self.network
                    .removal()
                    .report(format!("replica {from}, the leader, said so"));
                PeerResponse::Welcome
            }
            PeerRequest::Founded => match raft.is_initialized().await {
                Ok(founded) => PeerResponse::Founded(founded),
                Err(e) => PeerResponse::Refused(format!("this replica has stopped: {e}")),
            },
            PeerRequest::Hello { .. }
            | PeerRequest::Proof { .. }
            | PeerRequest::ProofRefused
            | PeerRequest::InstallSnapshot(_) => {
                PeerResponse::Refused("the transport answers this request itself".into())
            }
        }
    }

    /// A sender with an older vote is told ours (and steps down) before it
    /// sends a whole snapshot for nothing.
    async fn admit_snapshot_chunk(&self, sender_vote: &Vote) -> Result<PeerResponse, PeerResponse> {
        let my_vote = match self.raft.with_raft_state(|state| *state.vote_ref()).await {
            Ok(vote) => vote,
            Err(fatal) => return Err(PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal)))),
        };
        let answer = PeerResponse::InstallSnapshot(Ok(SnapshotResponse { vote: my_vote }));
        // Votes are only partly ordered: anything not at least ours is refused.
        match sender_vote.partial_cmp(&my_vote) {
            Some(Ordering::Greater | Ordering::Equal) => Ok(answer),
            _ => Err(answer),
        }
    }

    /// A finished snapshot is read through before openraft is given it:
    /// openraft stops a replica whose install fails, so a damaged file must be
    /// refused here, where refusing costs nothing: the sender is told, checks
    /// its own file again, and sends a whole one.
    async fn install_snapshot(
        &self,
        from: NodeId,
        sender_vote: Vote,
        snapshot: Snapshot,
    ) -> PeerResponse {
        // openraft ignores a snapshot that holds nothing past what is
        // committed here, and answers at once. That quick answer is what
        // tells a sender that gave up waiting on a long install that it is
        // done: reading the file first would make it late every time.
        let committed = match self
            .raft
            .with_raft_state(|state| state.local_committed().copied())
            .await
        {
            Ok(committed) => committed,
            Err(fatal) => return PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
        };
        let checked = if snapshot.meta.last_log_id > committed {
            read_through(&snapshot).await
        } else {
            Ok(())
        };
        if let Err(damage) = checked {
            crate::logging::note(&format!(
                "refused snapshot {} (state at {:?}) from replica {from}: {damage}; kept the current state",
                snapshot.snapshot.path().display(),
                snapshot.meta.last_log_id,
            ));
            return PeerResponse::SnapshotDamaged(damage);
        }
        match self.raft.install_full_snapshot(sender_vote, snapshot).await {
            Ok(response) => PeerResponse::InstallSnapshot(Ok(response)),
            Err(fatal) => PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
        }
    }
}

/// Reads a received snapshot through, off the async workers.
async fn read_through(received: &Snapshot) -> Result<(), String> {
    let file = received
        .snapshot
        .file
        .try_clone()
        .await
        .map_err(|e| format!("could not read the received file: {e}"))?
        .into_std()
        .await;
    let announced = received.meta.clone();
    tokio::task::spawn_blocking(move || snapshot::check_received(file, &announced))
        .await
        .map_err(|e| format!("the check did not finish: {e}"))?
        .map_err(|e| e.to_string())
}
