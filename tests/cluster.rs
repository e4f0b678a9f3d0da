//! Three real replicas on loopback: elections, replication, restarts and crashes.
//!
//! Every test starts its own cluster on fresh ports in its own temporary folder,
//! so the tests run in parallel. The rules they check are those of
//! `notes/interface.md`: one reply line per command, linearizable reads from any
//! replica, and no acknowledged write ever lost.

mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use harness::{is_error, signal, Cluster, ELECTION_TIMEOUT};

/// How long a test waits for something that needs an election or a catch-up.
const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn a_leader_is_elected_soon_after_start() {
    let mut cluster = Cluster::start(3);

    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);

    for id in 1..=3 {
        let status = cluster.replica(id).status();
        assert_eq!(status.leader(), Some(leader), "replica {id}: {status}");
        assert_eq!(status.get("members"), "1,2,3", "replica {id}: {status}");
        let expected_role = if id == leader { "leader" } else { "follower" };
        assert_eq!(status.role(), expected_role, "replica {id}: {status}");
        assert_eq!(status.replayed(), 0, "replica {id}: {status}");
    }
}

#[test]
fn a_put_at_a_follower_is_read_at_every_replica() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);

    cluster
        .replica(follower)
        .put("greeting", "hello   big world");
    let reply = cluster
        .replica(follower)
        .send("put padded   \t  keep  inner  \t ");
    assert_eq!(reply, "OK");

    for id in 1..=3 {
        let replica = cluster.replica(id);
        assert_eq!(
            replica.get("greeting"),
            "hello   big world",
            "at replica {id}"
        );
        assert_eq!(replica.get("padded"), "keep  inner", "at replica {id}");
        assert_eq!(replica.get("never-written"), "(nil)", "at replica {id}");
    }
}

#[test]
fn a_later_put_replaces_the_value_everywhere() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);

    cluster.replica(1).put("colour", "red");
    cluster.replica(2).put("colour", "green");
    cluster.replica(3).put("colour", "blue");

    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("colour"), "blue", "at replica {id}");
    }
}

#[test]
fn a_delete_removes_the_key_everywhere() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);

    cluster.replica(leader).put("doomed", "soon gone");
    assert_eq!(cluster.replica(follower).get("doomed"), "soon gone");

    assert_eq!(cluster.replica(follower).send("delete doomed"), "OK");
    for id in 1..=3 {
        assert_eq!(
            cluster.replica(id).get("doomed"),
            "(nil)",
            "at replica {id}"
        );
    }

    assert_eq!(cluster.replica(leader).send("delete never-existed"), "OK");
    assert_eq!(
        cluster.replica(follower).send("delete doomed"),
        "OK",
        "deleting twice"
    );
    for id in 1..=3 {
        assert_eq!(
            cluster.replica(id).get("never-existed"),
            "(nil)",
            "at replica {id}"
        );
    }
}

#[test]
fn the_prompt_runs_redis_commands_with_redis_cli_quoting() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let at_follower = cluster.replica(follower);

    assert_eq!(at_follower.send(r#"set "a key" "a value" ex 100"#), "OK");
    let ttl = at_follower.send(r#"ttl "a key""#);
    let seconds: i64 = ttl
        .strip_prefix("(integer) ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ttl: {ttl}"));
    assert!((90..=100).contains(&seconds), "ttl: {ttl}");
    assert_eq!(at_follower.send("incr hits"), "(integer) 1");
    assert_eq!(at_follower.send("INCRBY hits 41"), "(integer) 42");
    assert_eq!(at_follower.send(r#"getrange "a key" 0 -1"#), r#""a value""#);
    assert_eq!(at_follower.send(r#"set bytes "\x00\xff\n""#), "OK");
    assert_eq!(at_follower.send("strlen bytes"), "(integer) 3");
    assert_eq!(
        at_follower.send(r#"incr "a key""#),
        "(error) ERR value is not an integer or out of range"
    );
    // Without a terminal, an array is one line, as every answer is.
    assert_eq!(
        at_follower.send(r#"mget "a key" hits bytes nothing"#),
        r#"1) "a value" 2) "42" 3) "\x00\xff\n" 4) (nil)"#
    );
    assert_eq!(at_follower.send("keys nothing*"), "(empty array)");
    let scan = at_follower.send("scan 0 match hit*");
    assert!(scan.ends_with(r#" 2) [1) "hits"]"#), "scan: {scan}");

    // The prompt's own commands answer as they always have.
    assert_eq!(at_follower.send("get hits"), "42");
    assert_eq!(at_follower.send(r#"get "a key""#), "a value");
    assert_eq!(at_follower.send("put note two  words"), "OK");
    assert_eq!(at_follower.send("get note"), "two  words");
    assert_eq!(at_follower.send("delete note"), "OK");

    // Written through the log like any write: the leader reads the same.
    assert_eq!(
        cluster.replica(leader).send(r#"mget hits "a key" note"#),
        r#"1) "42" 2) "a value" 3) (nil)"#
    );
}

/// Puts `count` keys `prefix-i` = `value of prefix-i` at replica `at`.
fn put_keys(cluster: &mut Cluster, at: u64, prefix: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let (key, value) = (format!("{prefix}-{i}"), format!("value of {prefix}-{i}"));
            cluster.replica(at).put(&key, &value);
            (key, value)
        })
        .collect()
}

#[test]
fn a_cleanly_restarted_replica_keeps_its_data_and_replays_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let pairs = put_keys(&mut cluster, leader, "kept", 5);
    let leader_applied = cluster.replica(leader).status().applied();
    let applied_before = cluster
        .replica(3)
        .wait_applied(leader_applied, SETTLE)
        .applied();

    cluster.replica(3).exit();
    cluster.replica(3).restart();

    let status = cluster.replica(3).status();
    assert!(
        status.recovered_at() >= applied_before,
        "replica 3 applied {applied_before} before a clean exit but recovered at: {status}"
    );
    assert_eq!(status.replayed(), 0, "{status}");
    cluster.assert_all_readable(3, &pairs);
    let status = cluster.replica(3).status();
    assert_eq!(status.replayed(), 0, "after catching up: {status}");
}

#[test]
fn a_killed_replica_keeps_its_data_and_replays_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let pairs = put_keys(&mut cluster, leader, "survives", 5);
    let leader_applied = cluster.replica(leader).status().applied();
    cluster.replica(3).wait_applied(leader_applied, SETTLE);

    cluster.replica(3).kill();
    cluster.replica(3).restart();

    // After SIGKILL the last apply may not have reached the disk (the contract only
    // promises that what the state machine reports it holds, it holds), so
    // `recovered_at` may trail a little; but the folder was not empty, and nothing
    // at or below it may be applied again.
    let status = cluster.replica(3).status();
    assert!(
        status.recovered_at() > 0,
        "replica 3 recovered nothing: {status}"
    );
    assert_eq!(status.replayed(), 0, "{status}");
    cluster.assert_all_readable(3, &pairs);
    let status = cluster.replica(3).wait_applied(leader_applied, SETTLE);
    assert_eq!(status.replayed(), 0, "after catching up: {status}");
}

#[test]
fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[old_leader]);
    let mut pairs = put_keys(&mut cluster, old_leader, "before-leader", 5);
    pairs.extend(put_keys(&mut cluster, follower, "before-follower", 5));

    cluster.replica(old_leader).kill();
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != old_leader).collect();
    let new_leader = cluster.wait_for_leader_among(&survivors, Duration::from_secs(15));
    assert_ne!(new_leader, old_leader);

    for &id in &survivors {
        cluster.assert_all_readable(id, &pairs);
    }
    let after = cluster
        .replica(new_leader)
        .send_until_ok("put after the-new-leader", SETTLE);
    assert_eq!(after, "OK");
    pairs.push(("after".to_string(), "the-new-leader".to_string()));

    cluster.replica(old_leader).restart();
    cluster.assert_all_readable(old_leader, &pairs);
    assert_eq!(cluster.replica(old_leader).status().replayed(), 0);
}

/// Has a writer thread put unique keys `PREFIX-i` at replica `writer_at`,
/// SIGKILLs every replica once enough puts were acknowledged (while the writer
/// is still going), reaps them, and returns the acknowledged `(key, value)`s.
fn acknowledged_writes_then_kill_all(
    cluster: &mut Cluster,
    writer_at: u64,
    prefix: &str,
) -> Vec<(String, String)> {
    const ENOUGH_ACKS: usize = 30;
    const MAX_WRITES: usize = 100_000;

    let pids: Vec<u32> = (1..=3).map(|id| cluster.replica(id).pid()).collect();
    let acked_so_far = AtomicUsize::new(0);
    let acked: Vec<(String, String)> = thread::scope(|scope| {
        let replica = cluster.replica(writer_at);
        let acked_so_far = &acked_so_far;
        let writer = scope.spawn(move || {
            let mut acked = Vec::new();
            for i in 0..MAX_WRITES {
                let (key, value) = (format!("{prefix}-{i}"), format!("value-{i}"));
                match replica.try_send(&format!("put {key} {value}")) {
                    Ok(reply) if reply == "OK" => {
                        acked.push((key, value));
                        acked_so_far.store(acked.len(), Ordering::SeqCst);
                    }
                    Ok(reply) => assert!(is_error(&reply), "put {key}: {reply}"),
                    Err(_) => break, // the process is gone
                }
            }
            acked
        });

        let deadline = Instant::now() + SETTLE;
        while acked_so_far.load(Ordering::SeqCst) < ENOUGH_ACKS && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        for &pid in &pids {
            signal(pid, "KILL");
        }
        writer.join().expect("the writer thread does not panic")
    });
    for id in 1..=3 {
        cluster.replica(id).kill(); // reap
    }
    assert!(
        acked.len() >= ENOUGH_ACKS,
        "only {} puts were acknowledged before the kill",
        acked.len()
    );
    acked
}

#[test]
fn killing_every_replica_mid_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);

    // Round 1 writes through a follower, round 2 at the leader.
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut acked = acknowledged_writes_then_kill_all(&mut cluster, follower, "round1");
    cluster.restart_all();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.assert_all_readable(leader, &acked);
    acked.extend(acknowledged_writes_then_kill_all(
        &mut cluster,
        leader,
        "round2",
    ));
    cluster.restart_all();
    cluster.wait_for_leader(ELECTION_TIMEOUT);

    for id in 1..=3 {
        cluster.assert_all_readable(id, &acked);
        let status = cluster.replica(id).status();
        assert_eq!(status.replayed(), 0, "replica {id}: {status}");
    }
}

#[test]
fn without_a_quorum_commands_fail_with_an_error_and_the_prompt_keeps_working() {
    let mut cluster = Cluster::start_with(3, &["--timeout", "1"]);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(1).put("before", "the outage");

    cluster.replica(2).kill();
    cluster.replica(3).kill();

    let survivor = cluster.replica(1);
    let started = Instant::now();
    let reply = survivor
        .try_send_within("put during the-outage", Duration::from_secs(15))
        .expect("a reply to a put without quorum within 15 s (--timeout 1)");
    assert!(is_error(&reply), "put without quorum: {reply}");
    let lower = reply.to_lowercase();
    assert!(
        lower.contains("timeout") || lower.contains("timed out") || lower.contains("leader"),
        "the error should mention the timeout or the missing leader: {reply}"
    );
    eprintln!("put without quorum answered after {:?}", started.elapsed());

    let reply = survivor
        .try_send_within("get before", Duration::from_secs(15))
        .expect("a reply to a get without quorum within 15 s (--timeout 1)");
    assert!(
        is_error(&reply),
        "a linearizable get needs a quorum: {reply}"
    );

    let status = survivor.status();
    assert_eq!(status.get("members"), "1,2,3", "{status}");

    cluster.replica(2).restart();
    let reply = cluster
        .replica(1)
        .send_until_ok("put after the-outage", SETTLE);
    assert_eq!(reply, "OK");
    for id in [1, 2] {
        assert_eq!(
            cluster.replica(id).send_until_ok("get after", SETTLE),
            "the-outage"
        );
        assert_eq!(cluster.replica(id).get("before"), "the outage");
    }
}

#[test]
fn a_frozen_leader_is_replaced_and_catches_up_after_it_thaws() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(old_leader).put("before", "the freeze");

    cluster.replica(old_leader).stop();
    let others: Vec<u64> = (1..=3).filter(|&id| id != old_leader).collect();
    // Frozen longer than an election: the others must move on without it.
    thread::sleep(Duration::from_secs(3));
    let new_leader = cluster.wait_for_leader_among(&others, ELECTION_TIMEOUT);
    assert_ne!(new_leader, old_leader);

    let writer = others[0];
    assert_eq!(
        cluster
            .replica(writer)
            .send_until_ok("put during the-freeze", SETTLE),
        "OK"
    );
    cluster.replica(new_leader).put("counter", "2");
    let new_applied = cluster.replica(new_leader).status().applied();

    cluster.replica(old_leader).cont();
    let thawed = cluster.replica(old_leader);
    let status = thawed.wait_applied(new_applied, SETTLE);
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(thawed.send_until_ok("get during", SETTLE), "the-freeze");
    assert_eq!(thawed.get("counter"), "2");
    assert_eq!(thawed.get("before"), "the freeze");

    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let status = cluster.replica(old_leader).status();
    assert_eq!(status.leader(), Some(leader), "{status}");
}

#[test]
fn a_replica_that_missed_many_writes_catches_up_and_keeps_them_across_a_crash() {
    // More writes than the default snapshot interval (1000 entries), so the leader
    // has likely purged what replica 3 missed and must send it a snapshot.
    const WRITES: usize = 1200;

    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let lagging = cluster.other_than(&[leader]);
    cluster.replica(lagging).kill();

    let writer = cluster.other_than(&[lagging]);
    let pairs = put_keys(&mut cluster, writer, "missed", WRITES);
    cluster.replica(writer).send("delete missed-0");
    let target = cluster.replica(writer).status().applied();

    cluster.replica(lagging).restart();
    let status = cluster
        .replica(lagging)
        .wait_applied(target, Duration::from_secs(60));
    eprintln!("replica {lagging} caught up: {status}");
    assert_eq!(status.replayed(), 0, "{status}");
    let sample: Vec<(String, String)> = pairs.iter().skip(1).step_by(97).cloned().collect();
    cluster.assert_all_readable(lagging, &sample);
    assert_eq!(cluster.replica(lagging).get("missed-0"), "(nil)");

    // What it caught up with must be on its disk, not only in memory.
    cluster.replica(lagging).kill();
    cluster.replica(lagging).restart();
    let status = cluster.replica(lagging).status();
    assert!(status.recovered_at() > 0, "{status}");
    assert_eq!(status.replayed(), 0, "{status}");
    cluster.assert_all_readable(lagging, &sample);
    assert_eq!(cluster.replica(lagging).get("missed-0"), "(nil)");
}

#[test]
fn a_leader_cut_off_by_a_partition_is_replaced_and_rejoins() {
    cut_off_leader_is_replaced_and_rejoins(&[]);
}

/// The same with reads confirmed by heartbeat rounds instead of a lease.
#[test]
fn with_read_rounds_a_leader_cut_off_by_a_partition_is_replaced_and_rejoins() {
    cut_off_leader_is_replaced_and_rejoins(&["--read-check", "round"]);
}

/// Cuts the leader off, writes at the majority's new leader, checks that the
/// old one answers neither a write nor a stale read, then heals.
fn cut_off_leader_is_replaced_and_rejoins(extra: &[&str]) {
    let mut cluster = Cluster::start_partitionable(3, extra);
    let old_leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(old_leader).put("before", "cut");

    cluster
        .partitions
        .as_ref()
        .expect("started behind proxies")
        .isolate(old_leader, &[1, 2, 3]);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    let new_leader = cluster.wait_for_leader_among(&majority, SETTLE);
    assert_ne!(new_leader, old_leader);
    cluster.replica(majority[0]).put("during", "partition");
    // The cut-off replica cannot complete a write: it has no quorum.
    let reply = cluster.replica(old_leader).send("put lost maybe");
    assert!(
        is_error(&reply),
        "a write without a quorum answered {reply}"
    );
    // Nor a read: it may still think it leads, but it has not heard a quorum
    // since before the others elected a leader, and that one wrote since.
    let reply = cluster.replica(old_leader).send("get during");
    assert!(is_error(&reply), "a read without a quorum answered {reply}");

    cluster.partitions.as_ref().unwrap().heal();
    let leader = cluster.wait_for_leader(SETTLE);
    assert!(majority.contains(&leader) || leader == old_leader);
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("before"), "cut", "replica {id}");
        assert_eq!(
            cluster.replica(id).get("during"),
            "partition",
            "replica {id}"
        );
    }
}
