//! The one path each key-value command takes, wherever it was typed.
//!
//! - Writes go through Raft. At a follower they are forwarded to the leader.
//!   A write is retried only when it is certain it was not appended (the leader
//!   answered "not leader", or it could not be reached at all); if contact is
//!   lost after it was sent, its outcome is unknown and the person is told so,
//!   because applying it twice could resurrect an overwritten value.
//! - Reads are linearizable (Dragonboat's SyncRead, Raft's read index): ask the
//!   leader for the index a read must wait for (it confirms its leadership with
//!   a quorum first), wait until this replica has applied that index, then read
//!   locally.
//! - With no leader, both wait up to the configured timeout.
//! - Concurrent commands share Raft rounds (`batching.rs`): many writes become
//!   one log entry, many reads share one read-index round.
//!
//! - Scripts: EVALSHA becomes EVAL (the script's body in place of its SHA1)
//!   before anything else happens to it, and SCRIPT LOAD/EXISTS/FLUSH answer
//!   from this process's cache (`scripts.rs`); a log entry always carries
//!   the body.
//!
//! The prompt and the client port both turn what they receive into
//! [`Request`]s and hand them to [`Kv::execute`], so a command means the
//! same thing at either door.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tokio::time::Instant;

use crate::batching::{self, ReadIndexRounds, WriteBatcher};
use crate::command::{format_needed_by, Bytes, Op, Queued, Watched, SCRIPTLESS_FORMAT};
pub use crate::forward::KvError;
use crate::machine::{Command, Reply};
use crate::metrics::{self, ErrorKind};
use crate::network::ReadPoint;
use crate::node::Node;
use crate::scripts::{check_evalsha, ScriptCache, ScriptCommand, NOSCRIPT};
use crate::types::NodeId;

/// A key-value command, as the prompt and the client port both understand it.
/// Its words have been checked by [`Command::parse`] already.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// One command in one database: a read is served on a read index, a write
    /// is proposed (as its words: apply parses them again).
    Run { command: Command, queued: Queued },
    /// MULTI ... EXEC: one log entry, all or nothing.
    Transaction {
        watched: Vec<Watched>,
        commands: Vec<Queued>,
    },
    /// EVALSHA or EVALSHA_RO, as sent: turned into EVAL before it runs.
    EvalSha(Queued),
    /// SCRIPT LOAD, EXISTS, FLUSH or KILL: answered from this process's cache.
    Script(ScriptCommand),
}

impl Request {
    /// Understands a keyspace command's words (`None`: not a keyspace
    /// command; `Some(Err)`: a Redis error line saying what is wrong).
    pub fn parse(db: u8, args: &[impl AsRef<[u8]>]) -> Option<Result<Request, String>> {
        let queued = || Queued {
            db,
            args: args.iter().map(|a| Bytes(a.as_ref().to_vec())).collect(),
        };
        let name = String::from_utf8_lossy(args.first()?.as_ref()).to_ascii_lowercase();
        match name.as_str() {
            "evalsha" | "evalsha_ro" => {
                return Some(check_evalsha(&name, args).map(|()| Request::EvalSha(queued())))
            }
            "script" => return Some(ScriptCommand::parse(&args[1..]).map(Request::Script)),
            _ => {}
        }
        let parsed = Command::parse(args)?;
        Some(parsed.map(|command| Request::Run {
            command,
            queued: queued(),
        }))
    }
}

/// A request ready to run: what [`Kv::prepare`] leaves of a [`Request`].
#[derive(Debug)]
pub enum Runnable {
    Run {
        command: Command,
        queued: Queued,
    },
    Transaction {
        watched: Vec<Watched>,
        commands: Vec<Queued>,
    },
}

impl Runnable {
    fn is_read(&self) -> bool {
        matches!(self, Runnable::Run { command, .. } if command.is_read())
    }

    /// The machine version its entry needs (a write with a script needs 4).
    fn format_needed(&self) -> u32 {
        match self {
            Runnable::Run { command, .. } if command.is_read() => SCRIPTLESS_FORMAT,
            Runnable::Run { queued, .. } => format_needed_by([queued]),
            Runnable::Transaction { commands, .. } => format_needed_by(commands),
        }
    }

    /// How a person names it in an error line.
    fn name(&self) -> String {
        match self {
            Runnable::Run { queued, .. } => queued
                .args
                .first()
                .map(|name| String::from_utf8_lossy(name).to_ascii_uppercase())
                .unwrap_or_default(),
            Runnable::Transaction { .. } => "this transaction (it holds a script)".into(),
        }
    }

    /// The operation a write request proposes.
    fn into_op(self) -> Op {
        match self {
            Runnable::Run { queued, .. } => Op::Run(queued),
            Runnable::Transaction { watched, commands } => Op::Exec { watched, commands },
        }
    }
}

/// Counts a reply that is an error, by kind: the request path's own, or the
/// command's (a syntax error, a wrong type, a script's error).
fn count_error(reply: &Result<Reply, KvError>) {
    match reply {
        Ok(Reply::Error(_)) => metrics::error(ErrorKind::Command),
        Err(e) => metrics::error(e.metric_kind()),
        Ok(_) => {}
    }
}

/// What this replica is in the Raft group right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    /// Receives the log but does not vote (a replica being added).
    Learner,
    /// openraft has stopped (a fatal error, or on the way out).
    Shutdown,
}

impl Role {
    /// As `status`, INFO and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of what `status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: u64,
    pub committed: u64,
    pub applied: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub recovered_at: u64,
    pub replayed: u64,
    /// The last log index covered by this replica's newest snapshot, if any.
    pub snapshot_index: Option<u64>,
    pub snapshot_bytes: u64,
    pub snapshots_installed: u64,
    /// The first index still held in the log (earlier ones were purged).
    pub first_log_index: u64,
    /// Every member, voters first, with its address and, at the leader, how
    /// far its log is known to match the leader's.
    pub members: Vec<MemberStatus>,
    /// The cluster's machine version, as far as this replica has applied.
    pub machine_version: u32,
    /// The highest machine version this replica's build applies.
    pub machine_version_max: u32,
    /// The log index applying is held back at (an entry of a newer machine
    /// version than this build applies), if it is.
    pub held_back_at: Option<u64>,
}

impl Status {
    /// Every field, named and ordered as the prompt's `status` prints them;
    /// INFO's Raft section renders the same list (`client/mod.rs`).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let ids = |ids: &[u64]| {
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let or_none = |value: Option<u64>| value.map_or("none".to_string(), |v| v.to_string());
        vec![
            ("role", self.role.to_string()),
            ("leader", or_none(self.leader)),
            ("term", self.term.to_string()),
            ("last_log_index", self.last_log_index.to_string()),
            ("committed", self.committed.to_string()),
            ("applied", self.applied.to_string()),
            ("members", ids(&self.voters)),
            ("learners", ids(&self.learners)),
            ("recovered_at", self.recovered_at.to_string()),
            ("replayed", self.replayed.to_string()),
            ("first_log_index", self.first_log_index.to_string()),
            ("snapshot_index", or_none(self.snapshot_index)),
            ("snapshot_bytes", self.snapshot_bytes.to_string()),
            ("snapshots_installed", self.snapshots_installed.to_string()),
            ("replication", self.replication()),
            ("machine_version", self.machine_version.to_string()),
            ("machine_version_max", self.machine_version_max.to_string()),
            ("held_back_at", or_none(self.held_back_at)),
        ]
    }

    /// At the leader, `ID:INDEX` for each member: the last log index it is
    /// known to hold (`none` until it answers), so a lagging or new replica
    /// shows. Only the leader tracks this; elsewhere the field says `none`.
    fn replication(&self) -> String {
        if self.role != Role::Leader || self.members.is_empty() {
            return "none".into();
        }
        let progress: Vec<String> = self
            .members
            .iter()
            .map(|member| {
                let matched = member.matched.map_or("none".into(), |i| i.to_string());
                format!("{}:{matched}", member.id)
            })
            .collect();
        progress.join(",")
    }
}

/// One member as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub voter: bool,
    pub addr: String,
    /// Raft's match index: the last log index this member is known to hold.
    /// Only the leader tracks it (`None` elsewhere, and for a member that has
    /// not answered yet); the leader counts itself at its last log index.
    pub matched: Option<u64>,
}

/// The key-value service the front ends (prompt, Redis port, the leader's
/// expiry and sweep) use: the Raft node, plus what gathers requests into
/// shared rounds and the script cache. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    node: Node,
    write_batcher: WriteBatcher,
    read_rounds: ReadIndexRounds,
    /// Scripts by SHA1, for EVALSHA (this process's, as in Redis).
    pub scripts: Arc<ScriptCache>,
}

impl Kv {
    /// Starts the write batcher of `node`'s service.
    pub fn start(node: Node) -> Kv {
        let (write_batcher, write_queue) = WriteBatcher::new();
        tokio::spawn(batching::run_write_batches(node.clone(), write_queue));
        Kv {
            node,
            write_batcher,
            read_rounds: ReadIndexRounds::default(),
            scripts: Arc::default(),
        }
    }

    /// This replica's id.
    pub fn replica_id(&self) -> NodeId {
        self.node.id()
    }

    pub fn cluster_id(&self) -> &str {
        self.node.cluster_id()
    }

    /// Whether this replica leads now, as far as it knows: the leader's own
    /// housekeeping (active expiry, the sweep) runs only there.
    pub fn leads(&self) -> bool {
        self.node.current_leader() == Some(self.node.id())
    }

    /// openraft's figures for this replica, followed as they change.
    pub fn raft_metrics(&self) -> crate::raft::MetricsWatch {
        self.node.raft().metrics()
    }

    /// Reads of this replica's applied state as it is now, without a
    /// read-index round: checksums, counts, the leader's housekeeping.
    pub fn state(&self) -> &crate::store::StateReader {
        self.node.reader()
    }

    /// Runs requests that arrived in this order from one source (a pipeline),
    /// and answers each in the same order.
    ///
    /// Consecutive writes are queued as one item, so they land in one log entry
    /// in their order; consecutive reads share one read index. A read after a
    /// write waits for that write, so a pipeline sees its own writes.
    pub async fn execute(&self, requests: Vec<Request>) -> Vec<Result<Reply, KvError>> {
        // Scripts first, in order: a SCRIPT LOAD before an EVALSHA in the
        // same pipeline is there for it. What is answered here takes its
        // place among the replies.
        let mut answered = Vec::with_capacity(requests.len());
        let mut runnable = Vec::with_capacity(requests.len());
        for request in requests {
            match self.prepare(request) {
                Ok(request) => match self.admit(&request).await {
                    Ok(()) => {
                        answered.push(None);
                        runnable.push(request);
                    }
                    Err(refusal) => answered.push(Some(Err(refusal))),
                },
                Err(reply) => answered.push(Some(reply)),
            }
        }
        let mut replies = Vec::with_capacity(runnable.len());
        let mut requests = runnable.into_iter().peekable();
        while let Some(first) = requests.next() {
            let reading = first.is_read();
            let mut run = vec![first];
            while let Some(next) = requests.next_if(|next| next.is_read() == reading) {
                run.push(next);
            }
            if reading {
                replies.extend(self.read_run(run).await);
            } else {
                replies.extend(self.write_run(run).await);
            }
        }
        let mut replies = replies.into_iter();
        answered
            .into_iter()
            .map(|reply| {
                let reply = reply.unwrap_or_else(|| {
                    replies.next().unwrap_or_else(|| {
                        Err(KvError::Stopped(
                            "internal error: replies went missing".into(),
                        ))
                    })
                });
                count_error(&reply);
                reply
            })
            .collect()
    }

    /// What a request is before it runs: EVALSHA as the EVAL it stands for,
    /// an EVAL's script remembered (SCRIPT EXISTS then finds it) and refused
    /// here if it does not compile, SCRIPT answered (`Err`: the reply).
    pub fn prepare(&self, request: Request) -> Result<Runnable, Result<Reply, KvError>> {
        let request = match request {
            Request::Script(command) => return Err(Ok(self.scripts.answer(command))),
            Request::EvalSha(queued) => {
                let eval = self.scripts.resolve(&queued);
                let parsed = eval.map(|eval| {
                    let words: Vec<&[u8]> = eval.args.iter().map(|word| &word[..]).collect();
                    Request::parse(eval.db, &words)
                });
                match parsed {
                    Ok(Some(Ok(request))) => request,
                    Ok(Some(Err(refusal))) | Err(refusal) => return Err(Ok(Reply::Error(refusal))),
                    Ok(None) => return Err(Ok(Reply::Error(NOSCRIPT.into()))),
                }
            }
            request => request,
        };
        match request {
            Request::Run { command, queued } => {
                if let Command::Eval(eval) = &command {
                    if let Err(refusal) = self.scripts.remember(&eval.body) {
                        return Err(Ok(Reply::Error(refusal)));
                    }
                }
                Ok(Runnable::Run { command, queued })
            }
            Request::Transaction { watched, commands } => {
                Ok(Runnable::Transaction { watched, commands })
            }
            // `resolve` gives a Run; anything else here is a bug, answered as one.
            other => Err(Err(KvError::Stopped(format!(
                "internal error: {other:?} could not be prepared"
            )))),
        }
    }

    /// A write whose entry needs a newer machine version than the cluster
    /// runs (EVAL needs 4) goes on only once the cluster runs it; otherwise
    /// it is refused with the reason (`upgrade.rs`). Others go on at once.
    async fn admit(&self, request: &Runnable) -> Result<(), KvError> {
        let needs = request.format_needed();
        if needs <= self.node.reader().versions.current() {
            return Ok(());
        }
        match self.node.ensure_machine_version(needs).await {
            Ok(_) => Ok(()),
            Err(KvError::MachineVersion(why)) => Err(KvError::MachineVersion(format!(
                "{} needs machine version {needs}, but {why}",
                request.name()
            ))),
            Err(other) => Err(other),
        }
    }

    /// One request; see [`Kv::execute`].
    pub async fn execute_one(&self, request: Request) -> Result<Reply, KvError> {
        let mut replies = self.execute(vec![request]).await;
        replies
            .pop()
            .unwrap_or_else(|| Err(KvError::Stopped("no reply was produced".into())))
    }

    /// Proposes `ops` through the write batcher, for the leader's own
    /// housekeeping (active expiry, the sweep after a flush).
    pub async fn write(&self, ops: Vec<Op>) -> Result<crate::machine::ProposalOutcome, KvError> {
        self.write_batcher.write(ops).await
    }

    async fn write_run(&self, run: Vec<Runnable>) -> Vec<Result<Reply, KvError>> {
        let count = run.len();
        let ops = run.into_iter().map(Runnable::into_op).collect();
        match self.write_batcher.write(ops).await {
            Ok(outcome) if outcome.replies.len() == count => {
                outcome.replies.into_iter().map(Ok).collect()
            }
            Ok(_) => (0..count)
                .map(|_| {
                    Err(KvError::Stopped(
                        "internal error: replies went missing".into(),
                    ))
                })
                .collect(),
            Err(e) => (0..count).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn read_run(&self, run: Vec<Runnable>) -> Vec<Result<Reply, KvError>> {
        let leader_time = match self.wait_until_readable().await {
            Ok(time) => time,
            Err(e) => return run.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut replies = Vec::with_capacity(run.len());
        for request in run {
            let reply = match request {
                Runnable::Run { command, queued } => self
                    .node
                    .reader()
                    .read(queued.db, &command, leader_time)
                    .await
                    .map_err(KvError::Storage),
                write => Err(KvError::Stopped(format!(
                    "internal error: {write:?} was taken for a read"
                ))),
            };
            replies.push(reply);
        }
        replies
    }

    /// WATCH: what a transaction must find unchanged, read linearizably.
    pub async fn watch(&self, db: u8, keys: &[Vec<u8>]) -> Result<Vec<Watched>, KvError> {
        let leader_time = self.wait_until_readable().await?;
        self.node
            .reader()
            .watch(db, keys, leader_time)
            .await
            .map_err(KvError::Storage)
    }

    /// BACKUP: a copy of the whole state in the snapshot file format, at
    /// least as new as every write acknowledged before this call (it waits
    /// for a linearizable read point, as a read does), taken from one
    /// point-in-time view of this replica. The cluster goes on serving.
    pub async fn backup(&self) -> Result<crate::store::snapshot::BackupCopy, KvError> {
        self.wait_until_readable().await?;
        self.node
            .reader()
            .write_backup()
            .await
            .map_err(|e| KvError::Storage(e.to_string()))
    }

    /// Waits until a linearizable read may be served from this replica's
    /// state: it has applied everything the leader had when a read-index round
    /// that began after this call confirmed its leadership.
    /// Returns the leader's clock at that round.
    ///
    /// A replica that holds back applying refuses at once: it would never
    /// reach the index (openraft's figures say it did; its state did not).
    async fn wait_until_readable(&self) -> Result<u64, KvError> {
        let held_back = || match self.node.reader().versions.held_back() {
            Some(held) => Err(KvError::HeldBack(held.to_string())),
            None => Ok(()),
        };
        held_back()?;
        let time = self.wait_until_applied().await?;
        held_back()?;
        Ok(time)
    }

    async fn wait_until_applied(&self) -> Result<u64, KvError> {
        let deadline = Instant::now() + self.node.timeout();
        let ReadPoint {
            index: read_index,
            leader_time,
        } = self.read_rounds.read_index(&self.node).await?;
        let applied = self
            .node
            .raft()
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |id| id.index);
        if applied >= read_index {
            return Ok(leader_time);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.node
            .raft()
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "linearizable read")
            .await
            .map(|_| leader_time)
            .map_err(|_| KvError::NoLeader(self.node.timeout()))
    }

    /// Adds or removes a member, at the leader (forwarded there from here if
    /// need be). Adding waits for the new replica to catch up, so it gets a
    /// longer deadline than a write.
    pub async fn change_membership(
        &self,
        change: crate::membership::MembershipChange,
    ) -> Result<crate::membership::ChangeDone, KvError> {
        let hand_over_to = match &change {
            crate::membership::MembershipChange::TransferLeader { to } => Some(*to),
            _ => None,
        };
        let changed = self.node.change_membership_at_leader(change).await;
        if let Err(e) = &changed {
            metrics::error(e.metric_kind());
        }
        if let (Ok(_), Some(to)) = (&changed, hand_over_to) {
            // The old leader answers once it has seen `to` lead; this replica
            // may learn of it a heartbeat later. Waiting here means whoever
            // asked finds the new leader in `status` right after the answer.
            self.wait_to_know_leader(to, Instant::now() + self.node.timeout())
                .await;
        }
        changed
    }

    /// Waits until this replica knows `leader` leads, or the deadline passes.
    async fn wait_to_know_leader(&self, leader: NodeId, deadline: Instant) {
        let mut metrics = self.node.raft().metrics();
        while metrics.borrow_watched().current_leader != Some(leader) {
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// What this replica knows of the cluster now.
    pub fn status(&self) -> Status {
        let metrics = self.node.raft().metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let role = match metrics.state {
            _ if metrics.running_state.is_err() => Role::Shutdown,
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let versions = &self.node.reader().versions;
        let held_back = versions.held_back();
        // While held back, openraft counts entries as applied that the state
        // machine let go (`store/state_machine.rs`): its own figure is the true one.
        let raft_applied = metrics.last_applied.map_or(0, |id| id.index);
        let applied = match held_back {
            Some(_) => versions.applied(),
            None => raft_applied,
        };
        let committed = self.node.committed_index().max(raft_applied);
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let matched = |id: NodeId| -> Option<u64> {
            let progress = metrics.replication.as_ref()?;
            if id == self.node.id() {
                return Some(last_log_index);
            }
            progress.get(&id)?.map(|log_id| log_id.index)
        };
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                voter: voters.contains(id),
                addr: node.addr.clone(),
                matched: matched(*id),
            })
            .collect();
        members.sort_by_key(|member| (!member.voter, member.id));
        Status {
            role,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index,
            committed,
            applied,
            voters,
            learners: membership.learner_ids().collect(),
            recovered_at: self.node.reader().stats.recovered_at.load(Relaxed),
            replayed: self.node.reader().stats.replayed.load(Relaxed),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            snapshot_bytes: self.node.reader().stats.snapshot_bytes.load(Relaxed),
            snapshots_installed: self.node.reader().stats.snapshots_installed.load(Relaxed),
            first_log_index: metrics.purged.map_or(0, |id| id.index + 1),
            members,
            machine_version: versions.current(),
            machine_version_max: versions.can_apply(),
            held_back_at: held_back.map(|held| held.at),
        }
    }
}

/// For the front ends' unit tests: a leader of three at term 3, with 42
/// entries, every field plain; a test changes what it looks at.
#[cfg(test)]
impl Status {
    pub fn example() -> Status {
        Status {
            role: Role::Leader,
            leader: Some(1),
            term: 3,
            last_log_index: 42,
            committed: 42,
            applied: 41,
            voters: vec![1, 2, 3],
            learners: vec![],
            recovered_at: 0,
            replayed: 0,
            snapshot_index: None,
            snapshot_bytes: 0,
            snapshots_installed: 0,
            first_log_index: 1,
            members: vec![],
            machine_version: 4,
            machine_version_max: 4,
            held_back_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    /// `ondisk_raft_role` has a series for every role `status` can show.
    #[test]
    fn every_role_has_a_metrics_series() {
        for role in [
            Role::Leader,
            Role::Follower,
            Role::Candidate,
            Role::Learner,
            Role::Shutdown,
        ] {
            assert!(crate::metrics::ROLES.contains(&role.as_str()), "{role}");
        }
    }
}
