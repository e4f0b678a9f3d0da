//! The leader's side of a linearizable read: the index a read must wait for.
//! Reads at any replica ask for it (forwarded here by `forward.rs`), share
//! rounds (`batching.rs`), then wait until they have applied it (`kv.rs`).

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::{LinearizerOption, ReadPolicy};

use crate::cli::ReadCheck;
use crate::network::ReadPoint;
use crate::raft::Raft;
use crate::types::TypeConfig;

/// The read check with the timing it relies on; built once from the flags.
#[derive(Debug, Clone, Copy)]
pub struct LeaderReads {
    check: ReadCheck,
    /// The oldest quorum acknowledgement a leased read accepts.
    lease: Duration,
}

impl LeaderReads {
    /// `election_timeout` is the shortest wait openraft draws (its
    /// `election_timeout_min`); openraft's `election_timeout_max` is twice it.
    ///
    /// Why a lease of one election timeout is safe. openraft stamps each
    /// message with the time the leader SENT it, and keeps, per voter, the
    /// stamp of the newest one that voter accepted; a quorum's stamp T means
    /// a quorum of voters (this leader among them) heard this leader at or
    /// after T. A voter that heard a leader neither votes for another
    /// candidate nor campaigns itself until `election_timeout_max` has passed
    /// on its own clock (openraft's vote lease; the one exception, a leader
    /// hand-over, is asked for by this leader, which answers no read from
    /// then on). Every quorum that could elect a new leader shares a voter
    /// with the one behind T, so no new leader exists before T + 2 x the
    /// election timeout, and reads are answered only while now < T + 1 x it.
    /// The margin is a whole election timeout: the lease holds unless one
    /// replica's clock runs twice as fast as another's. They need not agree
    /// on the time.
    /// A pause after the check (a frozen process, a slow disk) does not
    /// matter: the check proves no other leader existed at that instant, and
    /// the read index is taken at that instant.
    pub fn new(check: ReadCheck, election_timeout: Duration) -> LeaderReads {
        LeaderReads {
            check,
            lease: election_timeout,
        }
    }

    fn linearizer_option(&self) -> LinearizerOption {
        match self.check {
            // Too old an acknowledgement: send heartbeats now and wait for
            // a quorum to answer them, as a round would.
            ReadCheck::Lease => LinearizerOption::new(Some(self.lease), true),
            ReadCheck::Round => ReadPolicy::ReadIndex.into(),
        }
    }

    /// At the leader: confirms leadership (by lease or round), then returns
    /// the point a linearizable read must wait for.
    ///
    /// Raft's read index is the commit index, which openraft takes as
    /// `max(first entry of this term, committed)`. A leader that restarts
    /// keeps its term (openraft 0.9 restores it as leader, and so does 0.10
    /// by default: `Config::enable_leader_restore`) and starts with
    /// `committed` at what its state machine holds, which a power cut can
    /// roll back (unsynced applies, rule 4 in `store/mod.rs`). So the index
    /// used here is the leader's last log index instead: every acknowledged
    /// write is at or below it, and waiting for it costs a read at most one
    /// commit round. (A workaround for openraft #1511;
    /// notes/findings.md, "Session 7: openraft 0.10", says what in 0.10 could
    /// replace it.) A restarted leader has no acknowledgements yet, so its
    /// first leased read waits for a heartbeat round.
    pub async fn read_point(&self, raft: &Raft) -> Result<ReadPoint, ReadIndexError> {
        let (read_log_id, _applied) = raft.get_read_log_id(self.linearizer_option()).await?;
        let last_log_index = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        Ok(ReadPoint {
            index: read_log_id.index().max(last_log_index),
            leader_time: crate::command::wall_clock_ms(),
        })
    }
}

pub type ReadIndexError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;
