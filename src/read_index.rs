//! The leader's side of a linearizable read: the index a read must wait for.
//! Reads at any replica ask for it (forwarded here by `forward.rs`), share
//! rounds (`batching.rs`), then wait until they have applied it (`kv.rs`).

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::ReadPolicy;

use crate::network::ReadPoint;
use crate::raft::Raft;
use crate::types::TypeConfig;

/// At the leader: confirms leadership with a quorum, then returns the point a
/// linearizable read must wait for.
///
/// Raft's read index is the commit index, which openraft takes as
/// `max(first entry of this term, committed)`. A leader that restarts keeps its
/// term (openraft 0.9 restores it as leader, and so does 0.10 by default:
/// `Config::enable_leader_restore`) and relearns `committed` only from the
/// hint `save_committed` left, which a power cut can roll back. So the index
/// used here is the leader's last log index instead: every acknowledged write
/// is at or below it, and waiting for it costs a read at most one commit round.
/// (A workaround for openraft #1511; notes/findings.md, "Session 7: openraft
/// 0.10", says what in 0.10 could replace it.)
///
/// `ReadPolicy::ReadIndex`: confirmed by a heartbeat round that started after
/// this call (openraft 0.10 answers all reads waiting at once with one round).
pub async fn leader_read_index(raft: &Raft) -> Result<ReadPoint, ReadIndexError> {
    let (read_log_id, _applied) = raft.get_read_log_id(ReadPolicy::ReadIndex).await?;
    let last_log_index = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    Ok(ReadPoint {
        index: read_log_id.index().max(last_log_index),
        leader_time: crate::command::wall_clock_ms(),
    })
}

pub type ReadIndexError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;
