//! Partitions on a real network: each replica in a network namespace of its
//! own, links cut by dropping frames (`harness/netns.rs`), clients writing
//! through the `redis` crate as users do. Issue 16's targets under these
//! faults: writes resume within 1 s of a new leader's election; a returning
//! replica never deposes a healthy leader; every membership answer is
//! definite or safely retryable. Needs root; without it each test says it
//! skipped.

mod harness;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};

const SETTLE: Duration = Duration::from_secs(60);

/// The harness's `--election-timeout` (ms): a follower waits 0.5-1 s.
const ELECTION_TIMEOUT_MS: u64 = 500;

/// Issue 16's target for writes after a leader is cut off: they resume
/// within 1 s of the new leader's election. Half a second more is allowed
/// for a loaded 2-core CI machine running debug builds of several clusters
/// (the figures measured on a quiet one are printed and in notes/findings.md).
const RESUME_AFTER_ELECTION: Duration = Duration::from_millis(1500);

fn cluster_in_namespaces() -> Option<Cluster> {
    match Cluster::start_in_namespaces(3, &[]) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            eprintln!("skipped: cannot put replicas in network namespaces here ({why})");
            None
        }
    }
}

/// One SET as a client saw it.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    value: String,
    ended: Instant,
    /// `Err`: the error line, or why the connection failed.
    outcome: Result<(), String>,
}

/// A client that SETs fresh keys one after another until stopped, through
/// one connection, and records every answer.
struct Writer {
    name: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    writes: Arc<Mutex<Vec<Write>>>,
    thread: thread::JoinHandle<()>,
}

impl Writer {
    fn start(name: &str, mut connection: redis::Connection) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, acknowledged, writes) = (stop.clone(), acknowledged.clone(), writes.clone());
            let name = name.to_string();
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("{name}-{i}"), i.to_string());
                    let reply: redis::RedisResult<String> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .query(&mut connection);
                    let outcome = match reply {
                        Ok(ok) if ok == "OK" => Ok(()),
                        Ok(other) => Err(format!("answered {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                    if outcome.is_ok() {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    writes.lock().unwrap().push(Write {
                        key,
                        value,
                        ended: Instant::now(),
                        outcome,
                    });
                    i += 1;
                }
            })
        };
        Writer {
            name: name.to_string(),
            stop,
            acknowledged,
            writes,
            thread,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond those acknowledged now are.
    fn wait_for_more(&self, more: usize) {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + SETTLE;
        while self.acknowledged() < target {
            assert!(
                Instant::now() < deadline,
                "writer {}: writes stopped being acknowledged at {}",
                self.name,
                self.acknowledged()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(self) -> Vec<Write> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer panicked");
        Arc::try_unwrap(self.writes)
            .expect("the writer thread has ended")
            .into_inner()
            .unwrap()
    }
}

/// The longest time between two acknowledged writes that ended before
/// `until`, and when it ended (the first acknowledgement after it).
fn longest_pause(writes: &[Write], until: Instant) -> (Duration, Instant) {
    let acked: Vec<Instant> = writes
        .iter()
        .filter(|w| w.outcome.is_ok() && w.ended < until)
        .map(|w| w.ended)
        .collect();
    acked
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[1]))
        .max()
        .expect("at least two acknowledged writes")
}

/// Every acknowledged write reads back with its value at replica `id`, read
/// linearizably through that replica's client port.
fn assert_acknowledged_readable(cluster: &mut Cluster, id: u64, writes: &[Write]) {
    let mut connection = cluster.redis(id, SETTLE);
    let acked: Vec<&Write> = writes.iter().filter(|w| w.outcome.is_ok()).collect();
    for chunk in acked.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|w| w.key.as_str()).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut connection)
            .unwrap_or_else(|e| panic!("MGET at replica {id}: {e}"));
        for (write, value) in chunk.iter().zip(values) {
            assert_eq!(
                value.as_deref(),
                Some(write.value.as_str()),
                "replica {id} lost the acknowledged write {}",
                write.key
            );
        }
    }
}

/// Polls `among` until one of them leads in a term above `term`. Returns
/// it, when that was first seen, and when it was last not seen: the
/// election happened between the two.
fn wait_for_leader_above(
    cluster: &mut Cluster,
    among: &[u64],
    term: u64,
) -> (u64, Instant, Instant) {
    let deadline = Instant::now() + SETTLE;
    let mut not_yet = Instant::now();
    loop {
        for &id in among {
            let status = cluster.replica(id).status();
            if status.role() == "leader" && status.term() > term {
                return (id, Instant::now(), not_yet);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader above term {term} among {among:?}"
        );
        not_yet = Instant::now();
        thread::sleep(Duration::from_millis(5));
    }
}

/// Counts of the distinct error answers, for the printed summary.
fn error_summary(writes: &[Write]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for write in writes {
        if let Err(e) = &write.outcome {
            *counts.entry(e.clone()).or_insert(0) += 1;
        }
    }
    if counts.is_empty() {
        return "no errors".into();
    }
    counts
        .iter()
        .map(|(e, n)| format!("{n} x {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn writes_resume_within_a_second_of_electing_a_new_leader_when_the_old_one_is_cut_off() {
    let Some(mut cluster) = cluster_in_namespaces() else {
        return;
    };
    let old = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let old_term = cluster.replica(old).status().term();
    let majority: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    // A client at each replica of the side that keeps the quorum: both
    // forward to the old leader until they learn of the new one.
    let writers: Vec<Writer> = majority
        .iter()
        .map(|&id| Writer::start(&format!("at{id}"), cluster.redis(id, SETTLE)))
        .collect();
    for writer in &writers {
        writer.wait_for_more(20);
    }

    let cut_at = Instant::now();
    cluster.network().cut(old);
    let (new, seen, not_yet) = wait_for_leader_above(&mut cluster, &majority, old_term);
    let new_term = cluster.replica(new).status().term();
    for writer in &writers {
        writer.wait_for_more(50);
    }

    let healed_at = Instant::now();
    cluster.network().heal(old);
    // The old leader returns with an older term: it follows, it deposes no one.
    let leader = cluster.wait_for_leader(SETTLE);
    assert_eq!(leader, new, "the returning old leader took over");
    for writer in &writers {
        writer.wait_for_more(50);
    }
    let status = cluster.replica(new).status();
    assert_eq!(
        status.term(),
        new_term,
        "the returning old leader moved the term: {status}"
    );

    let writes: Vec<(String, Vec<Write>)> = writers
        .into_iter()
        .map(|w| (w.name.clone(), w.finish()))
        .collect();
    eprintln!(
        "leader {old} (term {old_term}) cut off; replica {new} seen leading (term {new_term}) {:?}-{:?} after the cut",
        not_yet - cut_at,
        seen - cut_at
    );
    for (name, writes) in &writes {
        let (pause, resumed) = longest_pause(writes, healed_at);
        // Measured from the last poll that did not see the new leader, so a
        // late poll cannot make the figure look better than it is.
        let after_election = resumed.saturating_duration_since(not_yet);
        eprintln!(
            "writer {name}: writes stopped for {pause:?}, resumed {after_election:?} after the election \
             ({} acknowledged; {})",
            writes.iter().filter(|w| w.outcome.is_ok()).count(),
            error_summary(writes)
        );
        assert!(
            after_election < RESUME_AFTER_ELECTION,
            "writer {name}: writes resumed only {after_election:?} after replica {new} was elected"
        );
    }
    for id in 1..=3 {
        for (_, writes) in &writes {
            assert_acknowledged_readable(&mut cluster, id, writes);
        }
    }
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

#[test]
fn a_follower_cut_off_for_many_election_timeouts_returns_without_deposing_the_leader() {
    let Some(mut cluster) = cluster_in_namespaces() else {
        return;
    };
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let cut = cluster.other_than(&[leader]);
    let other = cluster.other_than(&[leader, cut]);
    let term = cluster.replica(leader).status().term();
    let writers: Vec<Writer> = [leader, other]
        .iter()
        .map(|&id| Writer::start(&format!("at{id}"), cluster.redis(id, SETTLE)))
        .collect();
    for writer in &writers {
        writer.wait_for_more(20);
    }
    // Every poll: the same leader in the same term. An isolated replica with
    // pre-vote never wins a pre-vote, so its own term stays too: a higher
    // one is what would depose the leader on its return.
    let check = |cluster: &mut Cluster, what: &str| {
        let status = cluster.replica(leader).status();
        assert!(
            status.role() == "leader" && status.term() == term,
            "{what}: replica {leader} no longer leads in term {term}: {status}"
        );
        let isolated = cluster.replica(cut).status();
        assert_eq!(
            isolated.term(),
            term,
            "{what}: the isolated replica raised its term: {isolated}"
        );
    };

    cluster.network().cut(cut);
    let away = Duration::from_millis(8 * ELECTION_TIMEOUT_MS);
    let cut_at = Instant::now();
    while cut_at.elapsed() < away {
        check(&mut cluster, "while cut off");
        thread::sleep(Duration::from_millis(50));
    }
    let left_behind = cluster.replica(cut).status().applied();
    cluster.network().heal(cut);
    let healed_at = Instant::now();

    // It catches up with what it missed, and meanwhile nothing moves the term.
    let target = cluster.replica(leader).status().applied();
    let deadline = Instant::now() + SETTLE;
    loop {
        check(&mut cluster, "after the heal");
        let status = cluster.replica(cut).status();
        if status.applied() >= target && status.leader() == Some(leader) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the healed replica never caught up with {target}: {status}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let caught_up = healed_at.elapsed();
    // Its election timer ran out many times while cut off; give it a few
    // more timeouts back on the network to do harm, watching the term.
    while healed_at.elapsed() < caught_up + Duration::from_millis(4 * ELECTION_TIMEOUT_MS) {
        check(&mut cluster, "after catching up");
        thread::sleep(Duration::from_millis(50));
    }
    for writer in &writers {
        writer.wait_for_more(20);
    }

    let writes: Vec<(String, Vec<Write>)> = writers
        .into_iter()
        .map(|w| (w.name.clone(), w.finish()))
        .collect();
    eprintln!(
        "replica {cut} cut off for {away:?} (applied {left_behind} then), caught up {caught_up:?} after the heal; \
         leader {leader} kept term {term}"
    );
    for (name, writes) in &writes {
        let (pause, _) = longest_pause(writes, Instant::now());
        eprintln!(
            "writer {name}: {} acknowledged, longest pause {pause:?}; {}",
            writes.iter().filter(|w| w.outcome.is_ok()).count(),
            error_summary(writes)
        );
        assert!(
            writes.iter().all(|w| w.outcome.is_ok()),
            "writer {name} saw errors although a quorum stood throughout: {}",
            error_summary(writes)
        );
    }
    for id in 1..=3 {
        for (_, writes) in &writes {
            assert_acknowledged_readable(&mut cluster, id, writes);
        }
    }
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

/// True for an answer that leaves the outcome open.
fn is_unknown(answer: &str) -> bool {
    answer.contains("may or may not")
}

#[test]
fn removing_the_leader_as_it_is_cut_off_answers_definitely() {
    let Some(mut cluster) = cluster_in_namespaces() else {
        return;
    };
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let term = cluster.replica(leader).status().term();
    let asked_at = cluster.other_than(&[leader]);
    let other = cluster.other_than(&[leader, asked_at]);
    let writer = Writer::start(&format!("at{other}"), cluster.redis(other, SETTLE));
    writer.wait_for_more(20);
    let mut rest = [asked_at, other];
    rest.sort();
    let members = format!("{},{}", rest[0], rest[1]);

    // An operator's script at a follower asks; the request is forwarded to
    // the leader, which is cut off a moment later: before, during or after
    // it makes the change.
    let mut connection = cluster.redis(asked_at, SETTLE);
    let remove = move |connection: &mut redis::Connection| -> String {
        match redis::cmd("CLUSTER")
            .arg("REMOVE-REPLICA")
            .arg(leader)
            .query::<String>(connection)
        {
            Ok(answer) => answer,
            Err(e) => format!("error: {e}"),
        }
    };
    let asked = Instant::now();
    let first = thread::spawn(move || {
        let answer = remove(&mut connection);
        (answer, asked.elapsed(), connection)
    });
    cluster.network().cut(leader);
    let (first, took, mut connection) = first.join().expect("the asking thread panicked");
    eprintln!("remove-replica {leader} as it was cut off answered in {took:?}: {first}");
    let done = if is_unknown(&first) {
        // Safe to ask again: a change already made is answered as done.
        let again = remove(&mut connection);
        eprintln!("asked again: {again}");
        again
    } else {
        first.clone()
    };
    assert!(
        done.starts_with(&format!("OK members={members}")),
        "remove-replica {leader} ended with {done:?} (first answer {first:?})"
    );
    for id in rest {
        cluster.wait_for_members(id, &members, SETTLE);
    }
    let new = cluster.wait_for_leader_among(&rest, SETTLE);
    writer.wait_for_more(50);
    let new_term = cluster.replica(new).status().term();
    assert!(new_term > term, "no election after the leader was cut off");

    // Back on the network, the removed replica stops (told so by a refused
    // vote) or stays out: either way the two members keep their leader.
    // It may have stopped already: a leader that committed its own removal
    // before the cut took effect stops once openraft steps it down.
    let mut stopped = !cluster.replica(leader).still_running();
    if stopped {
        eprintln!("the removed replica stopped before the heal");
    }
    cluster.network().heal(leader);
    let healed_at = Instant::now();
    while healed_at.elapsed() < Duration::from_millis(8 * ELECTION_TIMEOUT_MS) {
        let status = cluster.replica(new).status();
        assert!(
            status.role() == "leader" && status.term() == new_term,
            "the removed replica's return moved the leader: {status}"
        );
        if !stopped && !cluster.replica(leader).still_running() {
            stopped = true;
            eprintln!(
                "the removed replica stopped {:?} after the heal",
                healed_at.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    if stopped {
        let stderr = cluster.replica(leader).stderr();
        assert!(
            stderr.contains("was removed from the cluster"),
            "replica {leader} stopped without saying it was removed: {stderr}"
        );
    } else {
        eprintln!("the removed replica is still running, refused by both members");
    }
    writer.wait_for_more(20);
    let writes = writer.finish();
    eprintln!(
        "writer at{other}: {} acknowledged, longest pause {:?}; {}",
        writes.iter().filter(|w| w.outcome.is_ok()).count(),
        longest_pause(&writes, Instant::now()).0,
        error_summary(&writes)
    );
    for id in rest {
        assert_acknowledged_readable(&mut cluster, id, &writes);
    }
    cluster.agreed_checksum(&rest, SETTLE);
}
