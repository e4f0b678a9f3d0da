//! Backup and restore, with real processes: a backup taken while a client
//! writes is restored into a new cluster on other ports, which then holds
//! exactly the state the backup says (every replica's CHECKSUM) and takes
//! writes; a cut or altered file, a wrong port and a wrong password are each
//! refused with one clear line and change nothing.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use harness::{
    fresh_peers, port_of, redis_connection, run_once, snapshot_files, temp_dir, Cluster, Outcome,
    ELECTION_TIMEOUT,
};

/// A backup or restore of a small state must finish well within this.
const QUICK: Duration = Duration::from_secs(60);
/// How long a redis connection may take to settle and to answer.
const SETTLE: Duration = Duration::from_secs(20);

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// `example-ondisk backup --from 127.0.0.1:PORT --out OUT` with `extra` flags.
fn backup(port: u16, out: &Path, extra: &[&str]) -> Outcome {
    let from = format!("127.0.0.1:{port}");
    let mut args = words(&["backup", "--from", &from, "--out", &text(out)]);
    args.extend(words(extra));
    run_once(&args, QUICK)
}

/// `example-ondisk restore` of replica `id` of `peers` into `data_dir`.
fn restore(file: &Path, data_dir: &Path, id: u64, peers: &str) -> Outcome {
    let args = words(&[
        "restore",
        "--from",
        &text(file),
        "--data-dir",
        &text(data_dir),
        "--replica-id",
        &id.to_string(),
        "--peers",
        peers,
    ]);
    run_once(&args, QUICK)
}

/// The `applied=N keys=K digest=D` a backup or restore printed (CHECKSUM's form).
fn printed_checksum(outcome: &Outcome) -> String {
    assert_eq!(outcome.code, Some(0), "{outcome}");
    let at = outcome
        .stdout
        .find("applied=")
        .unwrap_or_else(|| panic!("no checksum printed: {outcome}"));
    outcome.stdout[at..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A CHECKSUM line without its applied index: what a restored cluster must
/// match after its first election appended an entry.
fn state_part(sum: &str) -> &str {
    sum.split_once(' ').map_or(sum, |(_, rest)| rest)
}

fn field(sum: &str, name: &str) -> u64 {
    sum.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {sum:?}"))
}

/// The one `error:` line of a run that failed with exit code 1.
fn refused(outcome: &Outcome) -> String {
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(!outcome.stderr.contains("panicked"), "{outcome}");
    let errors: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "want exactly one `error:` line: {outcome}");
    errors[0].to_string()
}

/// Writes `key-0`, `key-1`, ... one at a time, each after the one before was
/// acknowledged, until told to stop; counts the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: thread::JoinHandle<Result<(), String>>,
}

impl Writer {
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut connection = redis_connection(&format!("redis://127.0.0.1:{port}/"), SETTLE);
        let thread = {
            let (stop, acked) = (stop.clone(), acked.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    redis::cmd("SET")
                        .arg(format!("key-{i}"))
                        .arg(format!("value-{i}"))
                        .query::<()>(&mut connection)
                        .map_err(|e| format!("SET key-{i}: {e}"))?;
                    i += 1;
                    acked.store(i, Ordering::Relaxed);
                }
                Ok(())
            })
        };
        Writer {
            stop,
            acked,
            thread,
        }
    }

    fn wait_for(&self, count: u64) {
        let deadline = Instant::now() + SETTLE;
        while self.acked.load(Ordering::Relaxed) < count {
            assert!(
                Instant::now() < deadline,
                "the writer never reached {count}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the writer; returns how many writes were acknowledged.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(Ok(())) => self.acked.load(Ordering::Relaxed),
            Ok(Err(e)) => panic!("a write failed while the backup ran: {e}"),
            Err(_) => panic!("the writer panicked"),
        }
    }
}

/// Restores `file` as every replica of `peers` into `data` and checks each
/// restore printed `expected`; returns the new cluster's id.
fn restore_all(file: &Path, data: &Path, peers: &str, expected: &str) -> String {
    let mut cluster_id = None;
    for id in 1..=3 {
        let outcome = restore(file, data, id, peers);
        assert_eq!(printed_checksum(&outcome), expected, "restore of {id}");
        let named = outcome
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "--cluster-id")
            .nth(1)
            .unwrap_or_else(|| panic!("no --cluster-id printed: {outcome}"))
            .to_string();
        assert!(
            cluster_id.get_or_insert(named.clone()) == &named,
            "the restores disagree on the cluster id"
        );
    }
    cluster_id.expect("three restores ran")
}

#[test]
fn a_backup_taken_under_writes_restores_into_a_new_cluster_with_its_checksum() {
    let mut source = Cluster::start(3);
    let leader = source.wait_for_leader(ELECTION_TIMEOUT);
    let follower = source.other_than(&[leader]);
    let writer = Writer::start(source.replica(leader).client_port());
    writer.wait_for(300);

    // From a follower: its copy must still hold every write acknowledged
    // before the backup began (a linearizable read point).
    let acked_before = writer.acked.load(Ordering::Relaxed);
    let tmp = temp_dir();
    let file = tmp.path().join("under-writes.backup");
    let outcome = backup(source.replica(follower).client_port(), &file, &[]);
    let backed_up = printed_checksum(&outcome);
    writer.wait_for(acked_before + 50);
    let acked = writer.stop();
    assert!(file.exists() && !tmp.path().join("under-writes.backup.part").exists());
    let keys = field(&backed_up, "keys");
    assert!(
        (acked_before..=acked).contains(&keys),
        "the backup holds {keys} keys; {acked_before} were acknowledged before it, {acked} in all"
    );

    // A new cluster on other ports, from the file.
    let data = temp_dir();
    let peers = fresh_peers(3);
    let cluster_id = restore_all(&file, data.path(), &peers, &backed_up);
    assert!(cluster_id.starts_with("restored-"), "{cluster_id}");
    let mut restored = Cluster::start_in(data, peers, &["--cluster-id", &cluster_id]);
    let new_leader = restored.wait_for_leader(ELECTION_TIMEOUT);
    let sum = restored.agreed_checksum(&[1, 2, 3], ELECTION_TIMEOUT);
    assert_eq!(state_part(&sum), state_part(&backed_up), "restored {sum}");
    assert!(field(&sum, "applied") >= field(&backed_up, "applied"));

    // The writes were sequential, so the backup holds exactly the first `keys`.
    let other = restored.other_than(&[new_leader]);
    let last = format!("key-{}", keys - 1);
    assert_eq!(
        restored.replica(other).get(&last),
        format!("value-{}", keys - 1)
    );
    assert_eq!(restored.replica(other).get(&format!("key-{keys}")), "(nil)");

    // The new cluster takes writes.
    restored.replica(other).put("after-restore", "yes");
    assert_eq!(restored.replica(new_leader).get("after-restore"), "yes");
    let after = restored.agreed_checksum(&[1, 2, 3], ELECTION_TIMEOUT);
    assert_eq!(field(&after, "keys"), keys + 1, "{after}");

    // With the writes stopped, a backup says exactly what CHECKSUM says.
    let quiet = tmp.path().join("quiet.backup");
    let again = printed_checksum(&backup(source.replica(leader).client_port(), &quiet, &[]));
    let source_sum = source.agreed_checksum(&[1, 2, 3], ELECTION_TIMEOUT);
    assert_eq!(again, source_sum);
    assert_eq!(field(&again, "keys"), acked);
}

/// A one-replica cluster with 100 keys and a backup of it in `dir`.
fn small_backup(dir: &Path) -> (Cluster, PathBuf) {
    let mut cluster = Cluster::start(1);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(1).client_port();
    let mut connection = redis_connection(&format!("redis://127.0.0.1:{port}/"), SETTLE);
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query::<()>(&mut connection)
            .expect("SET");
    }
    let file = dir.join("small.backup");
    printed_checksum(&backup(port, &file, &[]));
    (cluster, file)
}

#[test]
fn a_cut_or_altered_backup_is_refused_and_leaves_no_folder_behind() {
    let tmp = temp_dir();
    let (_cluster, file) = small_backup(tmp.path());
    let whole = std::fs::read(&file).unwrap();
    let peers = fresh_peers(3);
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 5, 30, whole.len() / 2, whole.len() - 4, whole.len() - 1] {
        damaged.push((format!("cut at {cut}"), whole[..cut].to_vec()));
    }
    for at in [3, 20, whole.len() / 2, whole.len() - 2] {
        let mut bytes = whole.clone();
        bytes[at] ^= 0x01;
        damaged.push((format!("byte {at} flipped"), bytes));
    }
    let mut longer = whole.clone();
    longer.push(0);
    damaged.push(("a byte added".into(), longer));

    for (what, bytes) in damaged {
        let bad = tmp.path().join("bad.backup");
        std::fs::write(&bad, &bytes).unwrap();
        let data = tmp.path().join("restored");
        let error = refused(&restore(&bad, &data, 1, &peers));
        assert!(error.contains("is not a whole backup"), "{what}: {error}");
        assert!(!data.exists(), "{what}: {} was created", data.display());
        assert_eq!(
            std::fs::read(&bad).unwrap(),
            bytes,
            "{what}: the file changed"
        );
    }

    // The whole file restores; a second restore into the same folder is refused
    // and leaves the first one as it was.
    let data = tmp.path().join("restored");
    printed_checksum(&restore(&file, &data, 1, &peers));
    let before = snapshot_files(&data);
    let error = refused(&restore(&file, &data, 1, &peers));
    assert!(error.contains("already exists"), "{error}");
    assert_eq!(
        snapshot_files(&data),
        before,
        "the refused restore changed the folder"
    );
}

#[test]
fn a_backup_from_a_wrong_port_or_with_a_wrong_password_fails_with_one_line() {
    let tmp = temp_dir();
    let password = tmp.path().join("password");
    std::fs::write(&password, "right horse\n").unwrap();
    let wrong = tmp.path().join("wrong-password");
    std::fs::write(&wrong, "wrong horse\n").unwrap();
    let mut cluster = Cluster::start_with(1, &["--password-file", &text(&password)]);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let client_port = cluster.replica(1).client_port();
    let raft_port = port_of(&cluster.peers, 1);
    let nothing_there = harness::free_port();
    let out = tmp.path().join("out.backup");
    let part = tmp.path().join("out.backup.part");

    let cases: [(u16, Vec<&str>, &str); 4] = [
        (client_port, vec![], "asks for a password"),
        (
            client_port,
            vec!["--password-file", wrong.to_str().unwrap()],
            "refused the password: WRONGPASS",
        ),
        (nothing_there, vec![], "cannot reach"),
        (
            raft_port,
            vec!["--timeout", "10"],
            "did not answer as an example-ondisk client port",
        ),
    ];
    for (port, extra, says) in cases {
        let error = refused(&backup(port, &out, &extra));
        assert!(error.contains(says), "port {port} {extra:?}: {error}");
        assert!(!out.exists() && !part.exists(), "{says}: a file was left");
    }

    let with_password = ["--password-file", password.to_str().unwrap()];
    printed_checksum(&backup(client_port, &out, &with_password));
    assert!(out.exists() && !part.exists());
}
