//! Many clients, few Raft rounds.
//!
//! Every write costs a log append, fsynced on a quorum, and every linearizable
//! read costs a round of heartbeats that confirms the leader. On one disk that
//! fsyncs about 5,000 times a second, throughput beyond that comes only from
//! sharing those costs, so both paths here gather what is waiting:
//!
//! - [`WriteBatcher`]: writes queue up; one task takes everything waiting,
//!   proposes it as ONE log entry, and hands each writer its share of the
//!   outcome. A few such entries may be in flight at once; while they are,
//!   new writes gather into the next one, so batches grow with the load and a
//!   lone writer still goes out at once.
//! - [`ReadIndexRounds`]: reads that arrive while a read-index round is running
//!   wait for the next round, and all of them share it. A read never uses a
//!   round that started before it arrived: that round's leader check might
//!   predate a write the reader already saw acknowledged.
//!
//! Order: writes in one batch are applied in the order they were queued.
//! Batches in flight at the same time may be appended in either order, which is
//! fine for independent writers; a client connection that pipelines several
//! writes queues them as ONE item (see `Kv::execute`), so its own writes are
//! never reordered.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::Op;
use crate::forward::KvError;
use crate::machine::ProposalOutcome;
use crate::metrics;
use crate::network::ReadPoint;
use crate::node::Node;

/// Log entries proposed but not yet applied, at most. One is enough: while
/// it is in flight, new writes gather into the next batch, and openraft and
/// the log's group commit merge what queues up below. More in flight made the
/// batches smaller and 50-client SETs slower, on openraft 0.9 and again on
/// 0.10 with group commit (notes/findings.md has the figures).
const ENTRIES_IN_FLIGHT: usize = 1;
/// A batch holds at most this many operations and bytes, or one write that
/// is larger on its own (a client's request is at most
/// `client::resp::MAX_REQUEST_BYTES`), so an entry stays well under the peer
/// frame limit even with values that are not text (written as base64).
const MAX_BATCH_OPS: usize = 4096;
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// One writer's operations, waiting to be proposed.
struct QueuedWrite {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<ProposalOutcome, KvError>>,
}

/// The queue writers join. Cheap to clone.
#[derive(Clone)]
pub struct WriteBatcher {
    queue: mpsc::UnboundedSender<QueuedWrite>,
}

/// The receiving end, handed to [`run_write_batches`] once the node exists.
pub struct WriteQueue(mpsc::UnboundedReceiver<QueuedWrite>);

impl WriteBatcher {
    pub fn new() -> (WriteBatcher, WriteQueue) {
        let (queue, waiting) = mpsc::unbounded_channel();
        (WriteBatcher { queue }, WriteQueue(waiting))
    }

    /// Queues `ops` to be applied atomically (in one entry, in this order), and
    /// waits for the outcome of exactly these ops.
    pub async fn write(&self, ops: Vec<Op>) -> Result<ProposalOutcome, KvError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(QueuedWrite { ops, done })
            .map_err(|_| KvError::Stopped("the write queue has closed".into()))?;
        outcome
            .await
            .map_err(|_| KvError::Stopped("the write queue has closed".into()))?
    }
}

/// Takes queued writes in batches and proposes each batch as one log entry.
pub async fn run_write_batches(node: Node, queue: WriteQueue) {
    let WriteQueue(mut waiting) = queue;
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT));
    // A write that would have taken a batch over its limits starts the next.
    let mut held_over: Option<QueuedWrite> = None;
    loop {
        let first = match held_over.take() {
            Some(write) => write,
            None => match waiting.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        // Wait for a free slot before gathering: whatever arrives meanwhile
        // joins this batch instead of making its own entry.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut ops = first.ops.len();
        let mut bytes = write_bytes(&first);
        let mut batch = vec![first];
        while let Ok(next) = waiting.try_recv() {
            if ops + next.ops.len() > MAX_BATCH_OPS || bytes + write_bytes(&next) > MAX_BATCH_BYTES
            {
                held_over = Some(next);
                break;
            }
            ops += next.ops.len();
            bytes += write_bytes(&next);
            batch.push(next);
        }
        let node = node.clone();
        tokio::spawn(async move {
            propose_batch(&node, batch).await;
            drop(slot);
        });
    }
}

/// Proposes a batch as one entry and gives each writer its slice of the outcome.
async fn propose_batch(node: &Node, batch: Vec<QueuedWrite>) {
    let mut all_ops = Vec::with_capacity(batch.iter().map(|w| w.ops.len()).sum());
    let mut writers = Vec::with_capacity(batch.len());
    for QueuedWrite { ops, done } in batch {
        writers.push((ops.len(), done));
        all_ops.extend(ops);
    }
    let started = std::time::Instant::now();
    let op_count = all_ops.len();
    metrics::write_batch(op_count, writers.len());
    let proposed = node.propose(all_ops).await;
    tracing::debug!(
        "batch of {} writers, {op_count} ops: {:?}",
        writers.len(),
        started.elapsed()
    );
    match proposed {
        Ok(outcome) => {
            let mut replies = outcome.replies.into_iter();
            for (count, done) in writers {
                let mine = replies.by_ref().take(count).collect();
                let _ = done.send(Ok(ProposalOutcome { replies: mine }));
            }
        }
        Err(e) => {
            for (_, done) in writers {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

fn write_bytes(write: &QueuedWrite) -> usize {
    write.ops.iter().map(Op::size).sum()
}

/// Read-index rounds shared by every read that waits for one. Cheap to clone.
#[derive(Clone, Default)]
pub struct ReadIndexRounds {
    state: Arc<Mutex<RoundState>>,
}

#[derive(Default)]
struct RoundState {
    /// Reads that arrived after the running round began (or with none running).
    waiting: Vec<oneshot::Sender<Result<ReadPoint, KvError>>>,
    running: bool,
}

impl ReadIndexRounds {
    /// The index a read that begins now must wait for, from a round that
    /// started after this call did.
    pub async fn read_index(&self, node: &Node) -> Result<ReadPoint, KvError> {
        let (done, index) = oneshot::channel();
        let start_round = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.waiting.push(done);
            !std::mem::replace(&mut state.running, true)
        };
        if start_round {
            let rounds = self.clone();
            let node = node.clone();
            tokio::spawn(async move { rounds.run(&node).await });
        }
        index
            .await
            .map_err(|_| KvError::Stopped("the read-index task has ended".into()))?
    }

    /// Runs rounds until nobody is waiting.
    async fn run(&self, node: &Node) {
        loop {
            let readers = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let index = node.fetch_read_index().await;
            for reader in readers {
                let _ = reader.send(index.clone());
            }
        }
    }
}
