//! Growing and shrinking the cluster while it takes writes.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{free_port, replica_args, wait_listening, Cluster, ELECTION_TIMEOUT};

const SETTLE: Duration = Duration::from_secs(60);

/// The longest the writes may stall while the cluster changes. An election here
/// takes 0.5 to 1 s of timeout plus a vote round; the rest is margin for a
/// loaded 2-core CI machine running other tests at the same time.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

fn info_field(port: u16, field: &str) -> String {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut c = client.get_connection().expect("connect");
    let text: String = redis::cmd("INFO").query(&mut c).expect("INFO");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .to_string()
}

fn wait_for_members(cluster: &mut Cluster, id: u64, members: &str) {
    cluster.wait_for_members(id, members, SETTLE);
}

#[test]
fn grow_to_five_under_writes_lose_two_and_shrink_back_to_three() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let writer_port = cluster.replica(1).client_port();
    let cluster_id = info_field(writer_port, "cluster_id");

    // A stream of writes through replica 1 the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        thread::spawn(move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{writer_port}/")).unwrap();
            let mut c = client.get_connection().expect("connect");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{i}");
                let reply: redis::RedisResult<String> =
                    redis::cmd("SET").arg(&key).arg(i).query(&mut c);
                if reply.as_deref() == Ok("OK") {
                    acknowledged.lock().unwrap().push((key, Instant::now()));
                }
                i += 1;
            }
        })
    };
    let acks = || acknowledged.lock().unwrap().len();
    let wait_for_more_acks = |more: usize| {
        let target = acks() + more;
        let deadline = Instant::now() + SETTLE;
        while acks() < target {
            assert!(
                Instant::now() < deadline,
                "writes stopped being acknowledged"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_more_acks(50);
    let follower_of = |leader: u64| if leader == 2 { 3 } else { 2 };

    // Grow. Replica 4 joins by itself through replica 1's Raft address.
    let member_addr = format!("127.0.0.1:{}", harness::port_of(&cluster.peers, 1));
    let data = cluster.data_dir().to_path_buf();
    let port4 = free_port();
    let args = replica_args(
        4,
        &data,
        &format!("4=127.0.0.1:{port4}"),
        &["--cluster-id", &cluster_id, "--join", &member_addr],
    );
    cluster.spawn_extra(4, args);
    for id in [1, 4] {
        wait_for_members(&mut cluster, id, "1,2,3,4");
    }
    wait_for_more_acks(20);
    // Replica 5's --join names an address where nobody answers; a person adds
    // it from a follower's prompt instead.
    let nobody = format!("127.0.0.1:{}", free_port());
    let port5 = free_port();
    let args = replica_args(
        5,
        &data,
        &format!("5=127.0.0.1:{port5}"),
        &["--cluster-id", &cluster_id, "--join", &nobody],
    );
    cluster.spawn_extra(5, args);
    let reply = cluster
        .replica(follower_of(leader))
        .send(&format!("add-replica 5 127.0.0.1:{port5}"));
    assert_eq!(reply, "OK members=1,2,3,4,5");
    wait_for_more_acks(20);

    // The newcomers catch up (openraft counts a learner as caught up once it
    // lags by less than its replication threshold, so this can take a moment).
    for id in 1..=5 {
        wait_for_members(&mut cluster, id, "1,2,3,4,5");
    }

    // Two of five down: three still make a quorum, and writes go on.
    let leader = cluster.wait_for_leader(SETTLE);
    let down: Vec<u64> = (2..=5).filter(|id| *id != leader).take(2).collect();
    for &id in &down {
        cluster.replica(id).kill();
    }
    wait_for_more_acks(50);
    for &id in &down {
        cluster.replica(id).restart();
    }

    // Shrink back to three, from any member.
    let at = cluster.other_than(&[4, 5]);
    assert_eq!(
        cluster.replica(at).send("remove-replica 5"),
        "OK members=1,2,3,4"
    );
    assert_eq!(
        cluster.replica(at).send("remove-replica 4"),
        "OK members=1,2,3"
    );
    wait_for_more_acks(20);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer panicked");

    // A removed replica says so and stops.
    for id in [4u64, 5] {
        let exit = cluster.replica(id).wait_own_exit(SETTLE);
        assert_eq!(exit.code(), Some(0), "replica {id}");
        assert!(cluster
            .replica(id)
            .stderr()
            .contains("was removed from the cluster"));
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    // Writes were never held up for longer than an election takes. Measured: the
    // longest pause (about 0.55 s) comes when 5 is removed: the new members
    // 1-4 need two of the replicas restarted just before, which are catching up.
    let longest_gap = acknowledged
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} acknowledged writes through the whole change; longest pause {longest_gap:?}",
        acknowledged.len()
    );
    assert!(
        longest_gap < LONGEST_PAUSE,
        "writes paused for {longest_gap:?}"
    );
    for id in 1..=3 {
        wait_for_members(&mut cluster, id, "1,2,3");
        for (key, _) in acknowledged.iter().step_by(13).chain(acknowledged.last()) {
            assert!(
                !cluster.replica(id).get(key).starts_with("(nil)"),
                "replica {id} lost {key}"
            );
        }
    }
}

fn agreed_checksum(cluster: &mut Cluster, ids: &[u64]) -> String {
    cluster.agreed_checksum(ids, SETTLE)
}

/// The operator's path when a disk dies: take the lost replica out, start a
/// new one on an empty disk with --join. The newcomer catches up by snapshot
/// (the log behind has been purged) and is then a full voter.
#[test]
fn a_replica_whose_disk_was_wiped_is_replaced_by_a_new_one() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-every", "20"]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let lost = cluster.other_than(&[leader]);
    let survivor = cluster.other_than(&[leader, lost]);
    for i in 0..60 {
        cluster.replica(leader).put(&format!("before-{i}"), "v");
    }

    cluster.replica(lost).kill();
    std::fs::remove_dir_all(&cluster.replica(lost).dir).expect("wipe the lost replica's folder");
    // Taken out through the client port, as an operator's script would.
    let leader_port = cluster.replica(leader).client_port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{leader_port}/")).unwrap();
    let mut c = client.get_connection().expect("connect");
    let reply: String = redis::cmd("CLUSTER")
        .arg("REMOVE-REPLICA")
        .arg(lost)
        .query(&mut c)
        .expect("CLUSTER REMOVE-REPLICA");
    let mut two = [leader, survivor];
    two.sort();
    assert_eq!(reply, format!("OK members={},{}", two[0], two[1]));
    for i in 0..60 {
        cluster.replica(leader).put(&format!("between-{i}"), "v");
    }

    let cluster_id = info_field(leader_port, "cluster_id");
    let leader_addr = format!("127.0.0.1:{}", harness::port_of(&cluster.peers, leader));
    let port4 = free_port();
    let data = cluster.data_dir().to_path_buf();
    let args = replica_args(
        4,
        &data,
        &format!("4=127.0.0.1:{port4}"),
        &["--cluster-id", &cluster_id, "--join", &leader_addr],
    );
    cluster.spawn_extra(4, args);
    let members = format!("{},{},4", two[0], two[1]);
    for id in [leader, survivor, 4] {
        wait_for_members(&mut cluster, id, &members);
    }
    let newcomer = cluster.replica(4).status();
    assert!(
        newcomer.number("snapshots_installed") >= 1,
        "replica 4 should have caught up by snapshot: {newcomer}"
    );
    // The leader shows how far each member's log matches its own.
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = cluster.replica(leader).status();
        let progress = status.get("replication").to_string();
        if progress
            .split(',')
            .any(|p| p.starts_with("4:") && p != "4:none")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress for replica 4: {status}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(info_field(leader_port, "member_4").starts_with("role=voter,addr="));

    // A full voter: with one of the old replicas down, 4 makes the quorum.
    cluster.replica(survivor).kill();
    cluster
        .replica(leader)
        .send_until_ok("put after-replacement yes", SETTLE);
    assert_eq!(cluster.replica(4).get("after-replacement"), "yes");
    cluster.replica(survivor).restart();
    let sum = agreed_checksum(&mut cluster, &[leader, survivor, 4]);
    assert!(sum.contains("keys=121"), "{sum}");

    // The original replicas keep their first --peers, which now differ from
    // the members: a restart says so, and keeps the members it has.
    let stderr = cluster.replica(survivor).stderr();
    assert!(
        stderr.contains("note: the cluster's members are"),
        "no note about --peers: {stderr}"
    );
    wait_for_members(&mut cluster, survivor, &members);

    // Membership is stored state: after all three are killed and restarted,
    // the members are still the new ones, and the data is intact.
    for id in [leader, survivor, 4] {
        cluster.replica(id).kill();
    }
    for id in [leader, survivor, 4] {
        cluster.replica(id).restart();
    }
    for id in [leader, survivor, 4] {
        wait_for_members(&mut cluster, id, &members);
    }
    // (An election may have added an entry since: compare keys and digest.)
    let contents = |sum: &str| sum.split_once(" keys=").map(|(_, rest)| rest.to_string());
    assert_eq!(
        contents(&agreed_checksum(&mut cluster, &[leader, survivor, 4])),
        contents(&sum)
    );
}

/// A replica that was removed, then started again with its old folder, must
/// not disturb the others (no election, no new term) and must say it is out.
/// Both ways it can have been removed: while it was down (it never saw the
/// change and still believes it is a voter), and while it ran.
#[test]
fn a_removed_replica_that_restarts_stops_without_disturbing_the_cluster() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let down = cluster.other_than(&[leader]);
    let running = cluster.other_than(&[leader, down]);

    cluster.replica(down).kill();
    let (low, high) = (leader.min(running), leader.max(running));
    assert_eq!(
        cluster
            .replica(leader)
            .send(&format!("remove-replica {down}")),
        format!("OK members={low},{high}")
    );
    assert_eq!(
        cluster
            .replica(leader)
            .send(&format!("remove-replica {running}")),
        format!("OK members={leader}")
    );
    let exit = cluster.replica(running).wait_own_exit(SETTLE);
    assert_eq!(exit.code(), Some(0));
    cluster.replica(leader).put("alone", "still-serving");
    let before = cluster.replica(leader).status();

    for id in [running, down] {
        cluster.replica(id).restart();
        let exit = cluster.replica(id).wait_own_exit(SETTLE);
        assert_eq!(exit.code(), Some(0), "replica {id}");
        let stderr = cluster.replica(id).stderr();
        let last_run = stderr.rsplit("--- run").next().unwrap_or_default();
        assert!(
            last_run.contains("was removed from the cluster"),
            "replica {id} should say it was removed: {last_run}"
        );
    }

    let after = cluster.replica(leader).status();
    assert_eq!(after.role(), "leader", "{after}");
    assert_eq!(
        after.term(),
        before.term(),
        "the removed replicas moved the term: {after}"
    );
    cluster.replica(leader).put("after", "ok");
    assert_eq!(cluster.replica(leader).get("alone"), "still-serving");
}

/// Kill the leader in the middle of adding a replica. Whatever step the
/// change had reached, the survivors elect a leader and take writes, the
/// change can be asked again, and it ends with four voters.
#[test]
fn killing_the_leader_during_a_membership_change_leaves_a_quorum() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let asked_at = cluster.other_than(&[leader]);
    for i in 0..30 {
        cluster.replica(leader).put(&format!("k{i}"), "v");
    }
    let cluster_id = info_field(cluster.replica(leader).client_port(), "cluster_id");
    // Replica 4 waits to be added (its --join address has nobody behind it).
    let nobody = format!("127.0.0.1:{}", free_port());
    let port4 = free_port();
    let data = cluster.data_dir().to_path_buf();
    let args = replica_args(
        4,
        &data,
        &format!("4=127.0.0.1:{port4}"),
        &["--cluster-id", &cluster_id, "--join", &nobody],
    );
    cluster.spawn_extra(4, args);

    // Frozen, replica 4 cannot catch up, so the change stops half-way: 4 is a
    // learner, and the leader waits for it before making it a voter.
    wait_listening(port4, SETTLE);
    cluster.replica(4).stop();
    let add = format!("add-replica 4 127.0.0.1:{port4}");
    cluster
        .replica(asked_at)
        .write_raw(&format!("{add}\n"))
        .expect("send add-replica");
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = cluster.replica(leader).status();
        if status.get("learners") == "4" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "4 never became a learner: {status}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    cluster.replica(leader).kill();

    // The survivors keep a quorum: a write goes through (at the replica not
    // busy with the change: a prompt runs one command at a time).
    let writer = cluster.other_than(&[leader, asked_at, 4]);
    cluster
        .replica(writer)
        .send_until_ok("put during-change yes", SETTLE);
    cluster.replica(4).cont();
    // The interrupted add-replica answers (done, or why not); asking again
    // finishes the change, or says it is done.
    let first = cluster
        .replica(asked_at)
        .next_line_within(Duration::from_secs(90))
        .expect("add-replica answers");
    eprintln!("the add-replica interrupted by the leader's death answered: {first}");
    let reply = cluster.replica(asked_at).send_until_ok(&add, SETTLE);
    // Done by this call, or by the interrupted one ("... was a member already").
    assert!(reply.starts_with("OK members=1,2,3,4"), "{reply}");

    cluster.replica(leader).restart();
    for id in 1..=4 {
        wait_for_members(&mut cluster, id, "1,2,3,4");
    }
    assert_eq!(cluster.replica(4).get("during-change"), "yes");
    agreed_checksum(&mut cluster, &[1, 2, 3, 4]);
}

#[test]
fn leadership_is_handed_over_on_request_and_when_the_leader_stops() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let to = cluster.other_than(&[leader]);
    let asker = cluster.other_than(&[leader, to]);

    // At a follower's prompt: forwarded to the leader, answered once `to` leads.
    let reply = cluster
        .replica(asker)
        .send(&format!("transfer-leader {to}"));
    assert_eq!(reply, format!("OK leader={to}"));
    for id in [leader, to, asker] {
        assert_eq!(cluster.replica(id).status().leader(), Some(to), "at {id}");
    }
    cluster.replica(asker).put("after-transfer", "1");

    // On the Redis port, back to the first leader; asking for the one that
    // leads already is done at once.
    let client = redis::Client::open(format!(
        "redis://127.0.0.1:{}/",
        cluster.replica(leader).client_port()
    ))
    .unwrap();
    let mut c = client.get_connection().expect("connect");
    let answer: String = redis::cmd("CLUSTER")
        .arg("TRANSFER-LEADER")
        .arg(leader)
        .query(&mut c)
        .expect("CLUSTER TRANSFER-LEADER");
    assert_eq!(answer, format!("OK leader={leader}"));
    let again: String = redis::cmd("CLUSTER")
        .arg("TRANSFER-LEADER")
        .arg(leader)
        .query(&mut c)
        .expect("CLUSTER TRANSFER-LEADER to the leader");
    assert_eq!(again, format!("OK leader={leader}"));

    // Only to a voter.
    let refused = cluster.replica(asker).send("transfer-leader 9");
    assert!(refused.contains("not a voting member"), "{refused}");
    let usage = cluster.replica(asker).send("transfer-leader");
    assert!(usage.contains("transfer-leader ID"), "{usage}");

    // A leader that stops hands over first, so nobody waits for an election.
    let before = cluster.replica(leader).status().term();
    cluster.replica(leader).exit();
    let successor = handed_over_on_stopping(&mut cluster, leader, before);
    cluster.replica(successor).put("after-stop", "1");
    cluster.replica(leader).restart();
    cluster.assert_all_readable(
        leader,
        &[
            ("after-transfer".into(), "1".into()),
            ("after-stop".into(), "1".into()),
        ],
    );
}

#[test]
fn removing_a_replica_twice_is_done_twice() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let gone = cluster.other_than(&[leader]);
    let left: Vec<String> = (1..=3)
        .filter(|id| *id != gone)
        .map(|id| id.to_string())
        .collect();
    let expected = format!("OK members={}", left.join(","));
    assert_eq!(
        cluster
            .replica(leader)
            .send(&format!("remove-replica {gone}")),
        expected
    );
    // A retry (say, after an answer that it may or may not have happened) is
    // told it is done, as a second add-replica is.
    assert_eq!(
        cluster
            .replica(leader)
            .send(&format!("remove-replica {gone}")),
        format!("{expected} (replica {gone} is not a member)")
    );
}

/// The leader asked at its own prompt to remove itself: it carries the change
/// through and answers, and only then stops. It used to stop as soon as the
/// entry without it was appended: no answer, and the others left in the
/// joint configuration.
#[test]
fn removing_the_leader_at_its_own_prompt_answers_before_it_stops() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let rest: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let members = format!("{},{}", rest[0], rest[1]);
    let reply = cluster
        .replica(leader)
        .try_send(&format!("remove-replica {leader}"));
    assert_eq!(
        reply.as_deref().map_err(|e| e.to_string()),
        Ok(format!("OK members={members}").as_str())
    );
    let exit = cluster.replica(leader).wait_own_exit(SETTLE);
    assert_eq!(exit.code(), Some(0));
    assert!(cluster
        .replica(leader)
        .stderr()
        .contains("was removed from the cluster"));

    let new = cluster.wait_for_leader_among(&rest, ELECTION_TIMEOUT);
    cluster.replica(new).put("after", "removal");
    for id in rest {
        wait_for_members(&mut cluster, id, &members);
        assert_eq!(cluster.replica(id).get("after"), "removal");
    }
}

#[test]
fn a_leader_stopped_by_sigterm_at_its_prompt_hands_over_first() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("before-sigterm", "1");
    let before = cluster.replica(leader).status().term();

    // Its stdin stays open: the prompt is still reading when SIGTERM comes.
    cluster.replica(leader).terminate();
    let exit = cluster
        .replica(leader)
        .wait_own_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM should end it cleanly: {exit}"
    );
    let successor = handed_over_on_stopping(&mut cluster, leader, before);
    cluster.replica(successor).put("after-sigterm", "1");
    cluster.replica(leader).restart();
    cluster.assert_all_readable(
        leader,
        &[
            ("before-sigterm".into(), "1".into()),
            ("after-sigterm".into(), "1".into()),
        ],
    );
}

/// Checks that `leader`, now stopped, handed leadership over on its way out
/// (its log says so) rather than leaving an election to a timeout: the
/// successor leads one term after `term_before`, not more. Returns it.
fn handed_over_on_stopping(cluster: &mut Cluster, leader: u64, term_before: u64) -> u64 {
    let log = std::fs::read_to_string(cluster.replica(leader).dir.join("replica.log")).unwrap();
    assert!(
        log.contains("handed leadership to replica"),
        "the stopping leader did not hand over; its log ends:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let successor = cluster.wait_for_leader_among(&others, ELECTION_TIMEOUT);
    assert_eq!(cluster.replica(successor).status().term(), term_before + 1);
    successor
}
