//! Snapshots, log compaction and catching up: a replica that fell behind, or
//! lost its folder, gets the whole state by snapshot; the log stays bounded;
//! a crash at any step of an install leaves the old state or the new one.

mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, Replica, ELECTION_TIMEOUT, EXIT_TIMEOUT};

/// Small, so a test crosses several snapshot intervals in a few hundred writes.
const EVERY: u64 = 50;
const SETTLE: Duration = Duration::from_secs(30);

fn start() -> Cluster {
    Cluster::start_with(3, &["--snapshot-every", &EVERY.to_string()])
}

/// `checksum` parsed: (applied index, key count, digest).
fn checksum(replica: &mut Replica) -> (u64, u64, String) {
    let line = replica.send("checksum");
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("replica {}: no {name} in {line:?}", replica.id))
    };
    let number = |name: &str| field(name).parse::<u64>().expect("a number");
    (number("applied"), number("keys"), field("digest"))
}

/// Waits until every replica in `ids` reports the same checksum at the same applied index.
fn wait_checksums_agree(cluster: &mut Cluster, ids: &[u64]) -> (u64, u64, String) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let sums: Vec<_> = ids
            .iter()
            .map(|id| checksum(cluster.replica(*id)))
            .collect();
        if sums.windows(2).all(|pair| pair[0] == pair[1]) {
            return sums[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "checksums never agreed: {sums:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a replica to exit by itself, with its stdin still open (closing
/// it would make the replica shut down on its own).
fn wait_for_own_exit(replica: &mut Replica) -> std::process::ExitStatus {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while replica.still_running() {
        assert!(
            Instant::now() < deadline,
            "replica {} kept running",
            replica.id
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    replica.wait_exit(EXIT_TIMEOUT)
}

fn write_keys(replica: &mut Replica, prefix: &str, count: u64) {
    for i in 0..count {
        replica.put(&format!("{prefix}{i}"), &format!("value of {prefix}{i}"));
    }
}

#[test]
fn a_lagging_replica_catches_up_by_snapshot_and_restarts_without_replaying() {
    let mut cluster = start();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let lagging = cluster.other_than(&[leader]);
    cluster.replica(lagging).kill();

    // Several intervals, so the installed snapshot's index (about 300) has a
    // byte >= 0x80 when encoded (Dragonboat once corrupted such indexes).
    write_keys(cluster.replica(leader), "k", 6 * EVERY + 20);
    let leader_status = cluster.replica(leader).status();
    let purged_to = leader_status.number("first_log_index");
    assert!(purged_to > 1, "the leader purged nothing: {leader_status}");

    cluster.replica(lagging).restart();
    let status = cluster
        .replica(lagging)
        .wait_applied(leader_status.applied(), SETTLE);
    assert!(status.number("snapshots_installed") >= 1, "{status}");
    let installed_at = status.number("snapshot_index");
    assert!(installed_at >= 5 * EVERY, "{status}");
    for i in (0..6 * EVERY + 20).step_by(37) {
        assert_eq!(
            cluster.replica(lagging).get(&format!("k{i}")),
            format!("value of k{i}")
        );
    }
    let agreed = wait_checksums_agree(&mut cluster, &[1, 2, 3]);
    assert_eq!(agreed.1, 6 * EVERY + 20, "key count");

    // A restart after the install resumes from disk and replays nothing.
    cluster.replica(lagging).exit();
    cluster.replica(lagging).restart();
    let status = cluster.replica(lagging).status();
    assert!(status.recovered_at() >= installed_at, "{status}");
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(checksum(cluster.replica(lagging)), agreed);
}

#[test]
fn a_replica_whose_folder_was_deleted_rejoins_with_the_whole_state() {
    let mut cluster = start();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let wiped = cluster.other_than(&[leader]);
    write_keys(cluster.replica(leader), "before", 30);
    cluster.replica(wiped).kill();
    write_keys(cluster.replica(leader), "after", 2 * EVERY);

    let folder = cluster.replica(wiped).dir.clone();
    std::fs::remove_dir_all(&folder).expect("delete the replica's folder");
    cluster.replica(wiped).restart();

    let agreed = wait_checksums_agree(&mut cluster, &[1, 2, 3]);
    assert_eq!(agreed.1, 30 + 2 * EVERY);
    assert_eq!(cluster.replica(wiped).get("before7"), "value of before7");
    assert_eq!(cluster.replica(wiped).get("after99"), "value of after99");
}

#[test]
fn the_log_stays_bounded_while_writing_ten_intervals() {
    let mut cluster = start();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    // A snapshot every EVERY entries, a tail of at most 100 kept behind it.
    let bound = 2 * EVERY + 100;
    for round in 0..10 {
        write_keys(cluster.replica(leader), &format!("r{round}-"), EVERY);
        for id in 1..=3 {
            let status = cluster.replica(id).status();
            let held = status.number("last_log_index") + 1 - status.number("first_log_index");
            assert!(held <= bound, "replica {id} holds {held} entries: {status}");
        }
    }
    let status = cluster.replica(leader).status();
    assert!(status.number("snapshot_index") >= 9 * EVERY, "{status}");
}

/// Kills a replica at `point` of a snapshot install, then checks that after a
/// restart it holds exactly its old state (`expect_new == false`) or the new
/// one, and that the cluster converges.
fn crash_during_install(point: &str, expect_new: bool) {
    let mut cluster = start();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let victim = cluster.other_than(&[leader]);
    let others: Vec<u64> = (1..=3).filter(|id| *id != victim).collect();
    write_keys(cluster.replica(leader), "old", 10);
    let old = wait_checksums_agree(&mut cluster, &[1, 2, 3]);

    cluster.replica(victim).kill();
    // Write until the leader has purged the entries the victim lacks, so it
    // can only catch up by snapshot. (The leader postpones a purge while a
    // replication request to the dead victim is still counted in flight.)
    let mut written = 0;
    loop {
        write_keys(cluster.replica(leader), &format!("new{written}-"), EVERY);
        written += EVERY;
        let status = cluster.replica(leader).status();
        if status.number("first_log_index") > old.0 + 1 && written >= 3 * EVERY {
            break;
        }
        assert!(
            written < 20 * EVERY,
            "the leader never purged its log: {status}"
        );
    }

    cluster.replica(victim).env = vec![("EXAMPLE_ONDISK_CRASH_AT".into(), point.into())];
    cluster.replica(victim).restart();
    let exit = wait_for_own_exit(cluster.replica(victim));
    assert!(
        !exit.success(),
        "the replica should have crashed at {point}"
    );
    assert!(cluster
        .replica(victim)
        .stderr()
        .contains(&format!("crashing at {point}")));

    // Freeze the others so the victim shows what it recovered, not a new catch-up.
    for id in &others {
        cluster.replica(*id).stop();
    }
    cluster.replica(victim).env.clear();
    cluster.replica(victim).restart();
    let recovered = checksum(cluster.replica(victim));
    let status = cluster.replica(victim).status();
    assert_eq!(status.replayed(), 0, "{status}");
    if expect_new {
        assert!(
            recovered.0 > old.0 + EVERY,
            "expected the new state after {point}: {recovered:?}"
        );
    } else {
        assert_eq!(
            recovered, old,
            "expected exactly the old state after {point}"
        );
    }
    for id in &others {
        cluster.replica(*id).cont();
    }

    let agreed = wait_checksums_agree(&mut cluster, &[1, 2, 3]);
    assert_eq!(agreed.1, 10 + written);
    assert_eq!(cluster.replica(victim).get("new0-42"), "value of new0-42");
}

#[test]
fn a_crash_while_receiving_a_snapshot_keeps_the_old_state() {
    crash_during_install("install:receiving", false);
}

#[test]
fn a_crash_after_loading_but_before_the_switch_keeps_the_old_state() {
    crash_during_install("install:loaded", false);
}

#[test]
fn a_crash_right_after_the_switch_keeps_the_new_state() {
    crash_during_install("install:switched", true);
}

#[test]
fn a_command_of_an_unknown_format_stops_replicas_instead_of_being_applied() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("k", "v");
    // Replica `newer` plays a newer release that proposes format 2.
    let newer = cluster.other_than(&[leader]);
    cluster.replica(newer).kill();
    cluster.replica(newer).env = vec![("EXAMPLE_ONDISK_PROPOSE_FORMAT".into(), "2".into())];
    cluster.replica(newer).restart();
    let _ = cluster.replica(newer).try_send("put k changed");

    let old = cluster.other_than(&[newer]);
    for id in (1..=3).filter(|id| *id != newer) {
        let exit = wait_for_own_exit(cluster.replica(id));
        assert_eq!(exit.code(), Some(1), "replica {id}");
        let stderr = cluster.replica(id).stderr();
        assert!(
            stderr.contains("format 2") && stderr.contains("upgrade"),
            "{stderr}"
        );
    }
    // Restarted without an upgrade, it refuses again rather than skip the entry.
    cluster.replica(old).restart();
    let exit = wait_for_own_exit(cluster.replica(old));
    assert_eq!(exit.code(), Some(1));
}
