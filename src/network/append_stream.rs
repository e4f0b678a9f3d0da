//! AppendEntries to one follower, in openraft's order, with a request that
//! only tells a new commit index folded into the request after it.
//!
//! openraft sends a follower a request without entries whenever the commit
//! index moves and there is nothing new to send: that is how the follower
//! learns it may apply. Under load the next batch's entries follow within a
//! fraction of a millisecond, and every request carries the leader's commit
//! index, so the commit-only request costs a whole exchange (a send and a
//! receive at each end, a wake-up of each side's worker, a pass through each
//! side's RaftCore) for news the next request brings anyway. So a commit-only
//! request is held for up to [`COMMIT_HOLD`]; if another request for the
//! same follower comes meanwhile, only that one is sent, and its answer
//! answers both. If none comes, the held one is sent as it is.
//!
//! Why the leader may treat the answer to the request sent as the answer to
//! the one held:
//! - **Order.** Requests go out one at a time, in openraft's order, and their
//!   answers are given back in that order, the held one's first.
//! - **What the answer says.** A held request carries no entries and starts
//!   where this follower's last acknowledgement ended; the request sent for it
//!   starts at the same place and carries a commit index at least as new.
//!   Accepting it means the follower's log matches through that place, which is
//!   all the held request would have confirmed. Refusing it (a conflict, a
//!   higher vote) is what the held request would have met for the same reason.
//! - **The lease** (`read_index.rs`). openraft dates a request when it hands
//!   it over, and an acknowledged request's date becomes part of the leader's
//!   lease. A held request was handed over before the request that is finally
//!   sent for it, so its date is earlier than any message the follower
//!   actually heard: the lease it gives is shorter, never longer.
//! - **What it delays.** Only the follower's learning of the commit, by at
//!   most [`COMMIT_HOLD`] when no write follows, and so its applying. Nothing
//!   the leader waits for. A read at a follower does wait for that (it asks
//!   the leader for the index to wait for, then waits until it has applied
//!   it), and a person who writes and then reads at a follower would wait
//!   for the hold every time; so the leader notes each such index in
//!   [`FollowerReads`], and a commit-only request goes at once while a read
//!   at its follower waits for more than that follower has been told.
//!
//! Only a request that continues from what the follower has acknowledged in
//! the same stream is held, so the first request of a stream always goes at
//! once: a heartbeat (a stream of one), or a probe of where a log ends.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
};
use tokio::sync::watch;

use crate::types::{LogId, NodeId, TypeConfig};

/// How long a commit-only request waits for a request to ride on. Long
/// enough for a client that writes again at once (its next batch reaches
/// the follower a few hundred microseconds after the commit); short
/// enough that a follower idle of writes hears of a commit within a couple
/// of milliseconds (tokio's timers tick in milliseconds).
pub const COMMIT_HOLD: Duration = Duration::from_millis(1);

type Request = AppendEntriesRequest<TypeConfig>;
type Answer = Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>;
/// One item of the stream openraft reads: what one request met.
pub type Outcome = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// At the leader, per follower: the highest index a read served at that
/// follower waits to see applied (`peer_service.rs` notes it when it answers
/// the follower's `ReadIndex`). Cheap to clone.
#[derive(Clone, Default)]
pub struct FollowerReads {
    waiting: Arc<Mutex<HashMap<NodeId, watch::Sender<u64>>>>,
}

impl FollowerReads {
    /// A read at `follower` waits until `index` is applied there.
    pub fn wait_for(&self, follower: NodeId, index: u64) {
        self.sender(follower).send_if_modified(|waited| {
            let higher = index > *waited;
            *waited = (*waited).max(index);
            higher
        });
    }

    /// What reads at `follower` wait for, as it changes.
    pub fn watch(&self, follower: NodeId) -> watch::Receiver<u64> {
        self.sender(follower).subscribe()
    }

    fn sender(&self, follower: NodeId) -> watch::Sender<u64> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting
            .entry(follower)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

/// Sends one AppendEntries request to the follower and waits for its answer.
pub trait SendAppend: Send {
    fn send_append(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> impl Future<Output = Answer> + Send;
}

/// The answers to `input`'s requests, in order, sent through `peer`, whose
/// reads wait for what `reads` says. Ends after the first refusal or error,
/// or when `input` ends.
pub fn answers<'s, P, S>(
    peer: &'s mut P,
    input: S,
    option: RPCOption,
    reads: watch::Receiver<u64>,
) -> BoxStream<'s, Outcome>
where
    P: SendAppend,
    S: Stream<Item = Request> + Send + Unpin + 'static,
{
    let session = Session {
        peer,
        input,
        option,
        ready: VecDeque::new(),
        held: Vec::new(),
        taken: None,
        acknowledged: None,
        told: 0,
        reads,
        input_ended: false,
        stopped: false,
    };
    Box::pin(futures::stream::unfold(session, |mut session| async move {
        let outcome = session.next_outcome().await?;
        Some((outcome, session))
    }))
}

struct Session<'s, P, S> {
    peer: &'s mut P,
    input: S,
    option: RPCOption,
    /// Outcomes worked out and not yet given to openraft.
    ready: VecDeque<Outcome>,
    /// Commit-only requests taken from openraft and not sent yet, oldest first.
    held: Vec<Request>,
    /// A request taken while holding that cannot stand for the held ones.
    taken: Option<Request>,
    /// The end of the log this follower last acknowledged in this stream.
    acknowledged: Option<LogId>,
    /// The highest commit index sent to this follower in this stream.
    told: u64,
    /// The highest index a read at this follower waits for.
    reads: watch::Receiver<u64>,
    input_ended: bool,
    /// A refusal or an error was met: nothing more is sent.
    stopped: bool,
}

impl<P: SendAppend, S: Stream<Item = Request> + Unpin> Session<'_, P, S> {
    async fn next_outcome(&mut self) -> Option<Outcome> {
        loop {
            if let Some(outcome) = self.ready.pop_front() {
                return Some(outcome);
            }
            if self.stopped {
                return None;
            }
            let request = match self.taken.take() {
                Some(request) => request,
                // openraft's request stream may not be polled past its end.
                None if self.input_ended => return None,
                None if self.held.is_empty() => match self.input.next().await {
                    Some(request) => request,
                    None => return None,
                },
                None => match self.next_request_or_waiting_read().await {
                    Some(Some(request)) => request,
                    Some(None) => {
                        self.input_ended = true;
                        self.send_held().await;
                        continue;
                    }
                    // Nothing to ride on, or a read waits: the newest held
                    // request goes itself.
                    None => {
                        self.send_held().await;
                        continue;
                    }
                },
            };
            if self.may_hold(&request) {
                self.held.push(request);
                continue;
            }
            let held_start = self.held.first().map(|held| &held.prev_log_id);
            if held_start.is_some_and(|start| *start != request.prev_log_id) {
                // It does not start where the held ones do: they go first,
                // the newest standing for them all.
                self.taken = Some(request);
                self.send_held().await;
                continue;
            }
            self.send(request).await;
        }
    }

    /// A commit-only request that continues from this follower's last
    /// acknowledgement in this stream, while no read there waits for a
    /// commit it has not been told.
    fn may_hold(&self, request: &Request) -> bool {
        request.entries.is_empty()
            && request.prev_log_id.is_some()
            && request.prev_log_id == self.acknowledged
            && !self.a_read_waits()
    }

    fn a_read_waits(&self) -> bool {
        *self.reads.borrow() > self.told
    }

    /// While holding: the next request (`Some(None)` if there will be none),
    /// or `None` once [`COMMIT_HOLD`] has passed or a read at the follower
    /// waits for more than it has been told.
    async fn next_request_or_waiting_read(&mut self) -> Option<Option<Request>> {
        let Session {
            input, reads, told, ..
        } = self;
        let waiting = async {
            loop {
                tokio::select! {
                    request = input.next() => return Some(request),
                    changed = reads.changed() => {
                        if changed.is_err() || *reads.borrow() > *told {
                            return None;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(COMMIT_HOLD, waiting)
            .await
            .ok()
            .flatten()
    }

    /// Sends the newest held request, which stands for the others.
    async fn send_held(&mut self) {
        if let Some(newest) = self.held.pop() {
            self.send(newest).await;
        }
    }

    /// Sends `request`; its answer answers the held requests first.
    async fn send(&mut self, request: Request) {
        let prev = request.prev_log_id;
        let last = request.entries.last().map(|entry| entry.log_id).or(prev);
        let commit = request.leader_commit.as_ref().map_or(0, |id| id.index);
        self.told = self.told.max(commit);
        let answer = self.peer.send_append(request, self.option.clone()).await;
        for held in std::mem::take(&mut self.held) {
            self.give(answer_for_held(&answer, held.prev_log_id));
        }
        let outcome = answer.map(|response| response.into_stream_result(prev, last));
        // A follower that took only part of the entries: openraft sends the
        // rest in a new stream, as its own sequential stream does.
        let partly = matches!(&outcome, Ok(Ok(matching)) if *matching != last);
        self.give(outcome);
        self.stopped |= partly;
    }

    fn give(&mut self, outcome: Outcome) {
        if self.stopped {
            return;
        }
        match &outcome {
            Ok(Ok(matching)) => self.acknowledged = *matching,
            _ => self.stopped = true,
        }
        self.ready.push_back(outcome);
    }
}

/// What a held commit-only request starting (and ending) at `start` met,
/// from the answer to the request sent in its place, which started there too.
fn answer_for_held(answer: &Answer, start: Option<LogId>) -> Outcome {
    match answer {
        Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_)) => {
            Ok(Ok(start))
        }
        Ok(AppendEntriesResponse::Conflict) => Ok(Err(StreamAppendError::Conflict(
            start.expect("held requests start at an acknowledged entry"),
        ))),
        Ok(AppendEntriesResponse::HigherVote(vote)) => {
            Ok(Err(StreamAppendError::HigherVote(*vote)))
        }
        Err(error) => Err(error.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::channel::mpsc;
    use openraft::EntryPayload;

    use super::*;
    use crate::types::{CommittedLeaderId, Entry, Vote};

    fn log_id(index: u64) -> LogId {
        LogId::new(
            CommittedLeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    /// A request carrying entries `from..=to` after `prev`, or none for
    /// `to < from`, with the leader's commit at `commit`.
    fn request(prev: u64, to: u64, commit: u64) -> Request {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: Some(log_id(commit)),
            entries: (prev + 1..=to)
                .map(|index| Entry {
                    log_id: log_id(index),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// What was sent, as (prev, last, commit) indexes; answers with
    /// `answer` (Success unless set).
    #[derive(Clone, Default)]
    struct Follower {
        sent: Arc<Mutex<Vec<(u64, u64, u64)>>>,
        answer: Arc<Mutex<Option<Answer>>>,
    }

    impl SendAppend for Follower {
        async fn send_append(&mut self, request: Request, _option: RPCOption) -> Answer {
            let index = |id: &Option<LogId>| id.as_ref().map_or(0, |id| id.index);
            let last = request.entries.last().map(|e| e.log_id);
            self.sent.lock().unwrap().push((
                index(&request.prev_log_id),
                index(&last.or(request.prev_log_id)),
                index(&request.leader_commit),
            ));
            let answer = self.answer.lock().unwrap().clone();
            answer.unwrap_or(Ok(AppendEntriesResponse::Success))
        }
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_secs(1))
    }

    fn matched(outcome: Outcome) -> u64 {
        match outcome {
            Ok(Ok(Some(id))) => id.index,
            other => panic!("expected an acknowledgement, got {other:?}"),
        }
    }

    /// A stream to follower 2 that has acknowledged entries 1 to 5, as after
    /// a first batch: the follower, what reads there wait for (leaked, to
    /// outlive the stream), where requests go in, and the answers.
    type Started = (
        Follower,
        &'static FollowerReads,
        mpsc::UnboundedSender<Request>,
        BoxStream<'static, Outcome>,
    );

    /// Every outcome of `input` sent to a new follower, and what it was sent.
    async fn run_to_end(
        input: impl Stream<Item = Request> + Send + Unpin + 'static,
    ) -> (Vec<Outcome>, Vec<(u64, u64, u64)>) {
        let follower = Follower::default();
        let reads = FollowerReads::default();
        let mut peer = follower.clone();
        let outcomes = answers(&mut peer, input, option(), reads.watch(2))
            .collect()
            .await;
        let sent = follower.sent.lock().unwrap().clone();
        (outcomes, sent)
    }

    async fn after_a_first_batch() -> Started {
        let follower = Follower::default();
        let reads: &'static FollowerReads = Box::leak(Box::default());
        let (requests, input) = mpsc::unbounded();
        let peer = Box::leak(Box::new(follower.clone()));
        let mut answers = answers(peer, input, option(), reads.watch(2));
        requests.unbounded_send(request(0, 5, 0)).unwrap();
        assert_eq!(matched(answers.next().await.unwrap()), 5);
        (follower, reads, requests, answers)
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_followed_by_entries_is_sent_once_and_answered_twice() {
        let (follower, _, requests, mut answers) = after_a_first_batch().await;
        // The commit moves to 5 with nothing new; the next batch follows.
        requests.unbounded_send(request(5, 5, 5)).unwrap();
        requests.unbounded_send(request(5, 9, 5)).unwrap();
        assert_eq!(matched(answers.next().await.unwrap()), 5);
        assert_eq!(matched(answers.next().await.unwrap()), 9);
        assert_eq!(*follower.sent.lock().unwrap(), vec![(0, 5, 0), (5, 9, 5)]);
        drop(requests);
        assert!(answers.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_with_nothing_after_it_goes_alone_after_the_hold() {
        let (follower, _, requests, mut answers) = after_a_first_batch().await;
        requests.unbounded_send(request(5, 5, 5)).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(matched(answers.next().await.unwrap()), 5);
        assert!(started.elapsed() >= COMMIT_HOLD);
        assert_eq!(*follower.sent.lock().unwrap(), vec![(0, 5, 0), (5, 5, 5)]);
        // The input ending while a commit is held sends it at once.
        requests.unbounded_send(request(5, 7, 5)).unwrap();
        requests.unbounded_send(request(7, 7, 7)).unwrap();
        drop(requests);
        assert_eq!(matched(answers.next().await.unwrap()), 7);
        assert_eq!(matched(answers.next().await.unwrap()), 7);
        assert!(answers.next().await.is_none());
        assert_eq!(follower.sent.lock().unwrap()[3], (7, 7, 7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_while_a_commit_is_held_is_not_polled_again() {
        // Like openraft's request stream, an `unfold` panics if polled past its end.
        let requests = vec![request(0, 5, 0), request(5, 5, 5)];
        let input = Box::pin(futures::stream::unfold(
            requests.into_iter(),
            |mut rest| async { rest.next().map(|request| (request, rest)) },
        ));
        let (outcomes, sent) = run_to_end(input).await;
        assert_eq!(outcomes.len(), 2);
        assert_eq!(sent, vec![(0, 5, 0), (5, 5, 5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waiting_at_the_follower_sends_a_held_commit_at_once() {
        let (follower, follower_reads, requests, mut answers) = after_a_first_batch().await;
        // Held, then a read at the follower comes to wait for index 5.
        requests.unbounded_send(request(5, 5, 5)).unwrap();
        let started = tokio::time::Instant::now();
        let (answer, ()) = tokio::join!(answers.next(), async {
            // The stream is polled first, and holds the commit.
            tokio::task::yield_now().await;
            follower_reads.wait_for(2, 5);
        });
        assert_eq!(matched(answer.unwrap()), 5);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Told 5: the next commit is held again, unless a read waits for it.
        requests.unbounded_send(request(5, 7, 5)).unwrap();
        assert_eq!(matched(answers.next().await.unwrap()), 7);
        follower_reads.wait_for(2, 7);
        requests.unbounded_send(request(7, 7, 7)).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(matched(answers.next().await.unwrap()), 7);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(
            *follower.sent.lock().unwrap(),
            vec![(0, 5, 0), (5, 5, 5), (5, 7, 5), (7, 7, 7)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_of_a_stream_is_never_held() {
        // A heartbeat is a stream of one commit-only request.
        let heartbeat = futures::stream::iter([request(5, 5, 5)]);
        let started = tokio::time::Instant::now();
        let (outcomes, sent) = run_to_end(heartbeat).await;
        assert_eq!(outcomes.len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(sent, vec![(5, 5, 5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_of_the_request_sent_is_the_held_ones_refusal_and_ends_the_stream() {
        let (follower, _, requests, mut answers) = after_a_first_batch().await;
        *follower.answer.lock().unwrap() = Some(Ok(AppendEntriesResponse::Conflict));
        requests.unbounded_send(request(5, 5, 5)).unwrap();
        requests.unbounded_send(request(5, 9, 5)).unwrap();
        match answers.next().await.unwrap() {
            Ok(Err(StreamAppendError::Conflict(at))) => assert_eq!(at.index, 5),
            other => panic!("expected a conflict at 5, got {other:?}"),
        }
        assert!(answers.next().await.is_none());
        assert_eq!(follower.sent.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_that_start_elsewhere_wait_for_the_held_commit_to_go_first() {
        let (follower, _, requests, mut answers) = after_a_first_batch().await;
        requests.unbounded_send(request(5, 5, 5)).unwrap();
        requests.unbounded_send(request(3, 4, 5)).unwrap();
        assert_eq!(matched(answers.next().await.unwrap()), 5);
        assert_eq!(matched(answers.next().await.unwrap()), 4);
        assert_eq!(
            *follower.sent.lock().unwrap(),
            vec![(0, 5, 0), (5, 5, 5), (3, 4, 5)]
        );
    }
}
