//! Disk faults on one replica, whose folder is a small tmpfs of its own: a
//! full disk stops it with a clear error while the others go on; a read-only
//! disk is refused at start. No acknowledged write is lost either way.
//! Mounting needs root; without it each test says it skipped.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};

const SETTLE: Duration = Duration::from_secs(60);

/// A tmpfs mounted at a folder, unmounted (lazily, so even a busy one goes)
/// when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_that_replica_with_a_clear_error_and_loses_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let victim = cluster.other_than(&[leader]);
    cluster.replica(leader).put("before", "the disk filled");

    // Give the victim a 24 MiB disk of its own; it catches up onto it.
    cluster.replica(victim).kill();
    let folder = cluster.replica(victim).dir.clone();
    std::fs::remove_dir_all(&folder).expect("remove the victim's folder");
    let Some(_disk) = SmallDisk::mount(&folder, "24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    cluster.replica(victim).restart();
    assert_eq!(cluster.replica(victim).get("before"), "the disk filled");

    // Write 100 KB values until the victim's disk is full and it stops.
    let port = cluster.replica(leader).client_port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut connection = client.get_connection().expect("connect to the leader");
    let value = "v".repeat(100_000);
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + SETTLE;
    let mut i = 0;
    while cluster.replica(victim).still_running() {
        assert!(
            Instant::now() < deadline,
            "replica {victim} kept running with a full disk"
        );
        let key = format!("big{i}");
        let reply: redis::RedisResult<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query(&mut connection);
        assert_eq!(
            reply.as_deref(),
            Ok("OK"),
            "the two healthy replicas stopped taking writes"
        );
        acknowledged.push(key);
        i += 1;
    }

    let exit = cluster
        .replica(victim)
        .wait_own_exit(Duration::from_secs(30));
    assert_eq!(exit.code(), Some(1));
    let stderr = cluster.replica(victim).stderr();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    // Said either way: the write that hit the full disk, or a later one
    // refused because an earlier write failed.
    assert!(
        errors[0].contains("disk is full") || errors[0].contains("disk full or failing"),
        "{stderr}"
    );

    // The other two go on and hold every acknowledged write.
    cluster.replica(leader).put("after", "the disk filled");
    let other = (1..=3).find(|id| *id != leader && *id != victim).unwrap();
    for key in acknowledged.iter().step_by(7).chain(acknowledged.last()) {
        assert_eq!(cluster.replica(other).get(key).len(), value.len(), "{key}");
    }
    assert_eq!(cluster.replica(other).get("after"), "the disk filled");
    eprintln!(
        "replica {victim} stopped after {} acknowledged 100 KB writes",
        acknowledged.len()
    );
}

#[test]
fn a_read_only_disk_is_refused_at_start_and_the_replica_recovers_once_writable() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let victim = cluster.other_than(&[leader]);
    cluster.replica(victim).kill();
    let folder = cluster.replica(victim).dir.clone();
    std::fs::remove_dir_all(&folder).expect("remove the victim's folder");
    let Some(_disk) = SmallDisk::mount(&folder, "64m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    cluster.replica(victim).restart();
    cluster.replica(leader).put("before", "read-only");
    assert_eq!(cluster.replica(victim).get("before"), "read-only");

    // A live filesystem with files open for writing cannot be remounted
    // read-only (EBUSY), so the disk turns read-only while the replica is down.
    let remount = |mode: &str| {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&folder)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {mode} failed");
    };
    cluster.replica(victim).kill();
    remount("ro");
    for i in 0..20 {
        cluster.replica(leader).put(&format!("while-ro-{i}"), "x");
    }

    // Started on the read-only disk: refused at start, with one line.
    cluster.replica(victim).restart();
    let exit = cluster
        .replica(victim)
        .wait_own_exit(Duration::from_secs(30));
    assert_ne!(exit.code(), Some(0));
    let stderr = cluster.replica(victim).stderr();
    let last_run = stderr.rsplit("--- run").next().unwrap_or("");
    let errors: Vec<&str> = last_run
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{last_run}");
    eprintln!("replica {victim} on a read-only disk: {}", errors[0]);

    // Writable again: it restarts and catches up; nothing acknowledged is missing.
    remount("rw");
    cluster.replica(victim).restart();
    for i in 0..20 {
        assert_eq!(cluster.replica(victim).get(&format!("while-ro-{i}")), "x");
    }
    assert_eq!(cluster.replica(victim).get("before"), "read-only");
    assert_eq!(cluster.replica(victim).status().replayed(), 0);
}
