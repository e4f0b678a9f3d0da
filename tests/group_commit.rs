//! The log's group commit (`src/store/group_commit.rs`): an append returns
//! before its fsync, and openraft is told it is durable only after. These
//! tests slow the fsync down (`EXAMPLE_ONDISK_SLOW_LOG_SYNC_MS` makes a
//! replica's flusher sleep before each one) and time writes against it:
//! - with every disk slow, no write may be acknowledged before a quorum's
//!   sleeps are over; a flush callback completed early would answer sooner;
//! - with only the leader's disk slow, writes go at the followers' pace: the
//!   leader sends entries while its own fsync runs, and two followers make a
//!   quorum without it.

mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};

const SLOW_VAR: &str = "EXAMPLE_ONDISK_SLOW_LOG_SYNC_MS";

/// Times `put key value` at `id`'s prompt.
fn timed_put(cluster: &mut Cluster, id: u64, key: &str, value: &str) -> Duration {
    let started = Instant::now();
    cluster.replica(id).put(key, value);
    started.elapsed()
}

#[test]
fn no_write_is_acknowledged_before_a_quorum_has_synced_it() {
    let pause = Duration::from_millis(700);
    let ms = pause.as_millis().to_string();
    let env: Vec<(u64, &str, &str)> = (1..=3).map(|id| (id, SLOW_VAR, ms.as_str())).collect();
    let mut cluster = Cluster::start_with_env(3, &["--timeout", "20"], &env);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    for (round, at) in [leader, follower, leader].into_iter().enumerate() {
        let took = timed_put(&mut cluster, at, &format!("k{round}"), "v");
        assert!(
            took >= pause,
            "a write at replica {at} was acknowledged after {took:?}, before any \
             fsync could have run (each waits {pause:?})"
        );
    }
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("k2"), "v", "at {id}");
    }
}

#[test]
fn a_slow_leader_disk_does_not_slow_writes_down() {
    let pause = Duration::from_secs(3);
    let ms = pause.as_millis().to_string();
    let mut cluster = Cluster::start_with_env(3, &["--timeout", "20"], &[(1, SLOW_VAR, &ms)]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    if leader != 1 {
        let reply = cluster.replica(leader).send("transfer-leader 1");
        assert_eq!(reply, "OK leader=1");
    }
    // The hand-over's own entry waits for the slow flusher; let it pass.
    cluster.replica(1).put("warm", "up");
    let mut fastest = Duration::MAX;
    for round in 0..3 {
        let took = timed_put(&mut cluster, 1, &format!("k{round}"), "v");
        fastest = fastest.min(took);
    }
    assert!(
        fastest < pause / 2,
        "writes at the leader waited for its own slow fsync ({fastest:?} at best; it \
         takes {pause:?}): the leader should replicate while it syncs"
    );
    assert_eq!(cluster.replica(1).status().leader(), Some(1));
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("k2"), "v", "at {id}");
    }
}
