//! Snapshots, log compaction and catching up (issue 4): a replica that fell
//! behind, or lost its folder, gets the whole state by snapshot; the log stays
//! bounded; a crash at any step of an install leaves the old state or the whole
//! new one; a restart after an install replays nothing.
//!
//! Replica 3 is the one that falls behind, loses its folder or crashes. Before it
//! comes back, each test waits until the others have purged the log entries it
//! lacks, so it can only catch up by snapshot. Replicas are compared with
//! `checksum` once writes have stopped and their applied indexes agree.

mod harness;

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use harness::{is_error, Cluster, Replica, Status, ELECTION_TIMEOUT, EXIT_TIMEOUT};

/// Small, so a test crosses several snapshot intervals in a few hundred writes.
const EVERY: u64 = 50;
/// How long to wait for replicas to converge or a snapshot to be built.
const SETTLE: Duration = Duration::from_secs(30);
/// How long to wait for a purge before writing more to provoke one.
const PURGE_WAIT: Duration = Duration::from_secs(10);
/// The replica that falls behind.
const VICTIM: u64 = 3;
/// The two that keep a quorum while it is away.
const OTHERS: [u64; 2] = [1, 2];
const ALL: [u64; 3] = [1, 2, 3];
/// The binary's test-only hook: abort at a named point of a snapshot install.
const CRASH_AT_VAR: &str = "EXAMPLE_ONDISK_CRASH_AT";

fn start(every: u64) -> Cluster {
    Cluster::start_with(3, &["--snapshot-every", &every.to_string()])
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// A parsed `checksum` line: `applied=N keys=K digest=<32 hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checksum {
    applied: u64,
    keys: u64,
    digest: String,
}

impl Checksum {
    fn parse(line: &str) -> Checksum {
        let fields: Vec<(&str, &str)> = line
            .split_whitespace()
            .map(|field| {
                field.split_once('=').unwrap_or_else(|| {
                    panic!("checksum field {field:?} is not key=value: {line:?}")
                })
            })
            .collect();
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["applied", "keys", "digest"], "checksum {line:?}");
        let number = |i: usize| -> u64 {
            let (name, text) = fields[i];
            text.parse()
                .unwrap_or_else(|_| panic!("checksum {name}={text:?} is not a number: {line:?}"))
        };
        let digest = fields[2].1;
        assert!(
            digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "the digest is not 32 hex digits: {line:?}"
        );
        Checksum {
            applied: number(0),
            keys: number(1),
            digest: digest.to_string(),
        }
    }

    /// The same keys and values, whatever the index: a new leader's blank entry
    /// moves the applied index without changing the state.
    fn same_data(&self, other: &Checksum) -> bool {
        self.keys == other.keys && self.digest == other.digest
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "applied={} keys={} digest={}",
            self.applied, self.keys, self.digest
        )
    }
}

fn checksum(replica: &mut Replica) -> Checksum {
    let line = replica.send("checksum");
    assert!(
        !is_error(&line),
        "replica {}: checksum failed: {line}",
        replica.id
    );
    Checksum::parse(&line)
}

/// Polls `checksum` at `ids` until they all report the same applied index, then
/// requires the same digest (one index, one state). Returns the agreed checksum.
fn wait_checksums_agree(cluster: &mut Cluster, ids: &[u64]) -> Checksum {
    let deadline = Instant::now() + SETTLE;
    loop {
        let sums: Vec<(u64, Checksum)> = ids
            .iter()
            .map(|&id| (id, checksum(cluster.replica(id))))
            .collect();
        let listing = || {
            sums.iter()
                .map(|(id, sum)| format!("  replica {id}: {sum}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let first = &sums[0].1;
        if sums.iter().all(|(_, sum)| sum.applied == first.applied) {
            assert!(
                sums.iter().all(|(_, sum)| sum == first),
                "replicas at the same applied index hold different states:\n{}",
                listing()
            );
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "applied indexes still differ after {SETTLE:?}:\n{}",
            listing()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Status fields of issue 4
// ---------------------------------------------------------------------------

fn snapshot_index(status: &Status) -> Option<u64> {
    status.optional_number("snapshot_index")
}

fn first_log_index(status: &Status) -> u64 {
    status.number("first_log_index")
}

fn last_log_index(status: &Status) -> u64 {
    status.number("last_log_index")
}

fn snapshots_installed(status: &Status) -> u64 {
    status.number("snapshots_installed")
}

/// How many entries the log holds.
fn log_length(status: &Status) -> u64 {
    (last_log_index(status) + 1).saturating_sub(first_log_index(status))
}

// ---------------------------------------------------------------------------
// Writing, reading, and waiting for snapshots and purges
// ---------------------------------------------------------------------------

type Pairs = Vec<(String, String)>;

/// Puts `count` new keys `PREFIX-i` at `replica`; returns them with their values.
fn put_keys(replica: &mut Replica, prefix: &str, count: u64) -> Pairs {
    (0..count)
        .map(|i| {
            let (key, value) = (format!("{prefix}-{i}"), format!("value of {prefix}-{i}"));
            replica.put(&key, &value);
            (key, value)
        })
        .collect()
}

/// True if the replica has applied enough entries for a snapshot it has not
/// built (or reported) yet: the policy builds one after every `every` applied
/// entries, counting from index 0 (the first at `every - 1`), then at S + `every`
/// after a snapshot at S.
fn snapshot_due(status: &Status, every: u64) -> bool {
    match snapshot_index(status) {
        Some(snapshot) => status.applied() >= snapshot + every,
        None => status.applied() + 1 >= every,
    }
}

/// Polls `status` until no snapshot is due at the replica, so its snapshot
/// index stays put until more is written.
fn settled(replica: &mut Replica, every: u64) -> Status {
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = replica.status();
        if !snapshot_due(&status, every) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "replica {}: a snapshot (one every {every} entries) is still due after {SETTLE:?}: {status}",
            replica.id
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// [`settled`], for a replica that has applied enough to have a snapshot.
fn settled_snapshot(replica: &mut Replica, every: u64) -> Status {
    let status = settled(replica, every);
    assert!(
        snapshot_index(&status).is_some(),
        "replica {}: no snapshot yet: {status}",
        replica.id
    );
    status
}

/// Waits up to [`PURGE_WAIT`] until every one of [`OTHERS`] has purged its log
/// past `victim_last`, the last entry the victim holds: then the victim can only
/// catch up by snapshot. (A leader postpones a purge while a replication request
/// to the absent victim counts as in flight, so this can take a moment.)
fn others_purged_past(cluster: &mut Cluster, victim_last: u64) -> bool {
    let deadline = Instant::now() + PURGE_WAIT;
    loop {
        let purged = OTHERS
            .iter()
            .all(|&id| first_log_index(&cluster.replica(id).status()) > victim_last + 1);
        if purged {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Takes replica 3 away: notes the last index of its log, kills it, and waits
/// for a leader among the other two. Returns that index and that leader.
fn stop_the_victim(cluster: &mut Cluster) -> (u64, u64) {
    let victim_last = last_log_index(&cluster.replica(VICTIM).status());
    cluster.replica(VICTIM).kill();
    let writer = cluster.wait_for_leader_among(&OTHERS, ELECTION_TIMEOUT);
    (victim_last, writer)
}

/// Once the keys are written at `writer`, makes sure a replica that holds the
/// log up to `victim_last` can only catch up by snapshot: waits for the
/// writer's snapshot to settle and the others' logs to be purged past
/// `victim_last`, writing another interval if the purge does not come.
/// Returns the writer's settled status.
fn snapshot_needed(
    cluster: &mut Cluster,
    writer: u64,
    every: u64,
    victim_last: u64,
    prefix: &str,
    pairs: &mut Pairs,
) -> Status {
    for round in 0..5 {
        let status = settled_snapshot(cluster.replica(writer), every);
        if others_purged_past(cluster, victim_last) {
            return status;
        }
        let more = put_keys(cluster.replica(writer), &format!("{prefix}{round}"), every);
        pairs.extend(more);
    }
    panic!("the others never purged their logs past index {victim_last}");
}

/// Writes at `writer` up to the next snapshot point and stops there, so that
/// its state *is* that snapshot's state; returns its checksum then. Relies on
/// the policy (see [`snapshot_due`]); retries at the following point if an
/// entry of its own (a new leader's blank one) moved the index.
fn write_to_the_next_snapshot(
    cluster: &mut Cluster,
    writer: u64,
    every: u64,
    prefix: &str,
    pairs: &mut Pairs,
) -> Checksum {
    let replica = cluster.replica(writer);
    for round in 0..5 {
        let status = settled(replica, every);
        let target = snapshot_index(&status).map_or(every - 1, |snapshot| snapshot + every);
        let count = target - status.applied();
        pairs.extend(put_keys(replica, &format!("{prefix}{round}"), count));
        let deadline = Instant::now() + SETTLE;
        let status = loop {
            let status = replica.status();
            if snapshot_index(&status) >= Some(target) {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "replica {writer}: {count} entries written up to {target}, yet no snapshot \
                 there (one every {every} entries): {status}"
            );
            thread::sleep(Duration::from_millis(50));
        };
        if snapshot_index(&status) == Some(target) && status.applied() == target {
            let sum = checksum(replica);
            if sum.applied == target {
                return sum;
            }
        }
    }
    panic!("replica {writer}: could not stop writing exactly at a snapshot");
}

/// Writes at `writer` from snapshot point to snapshot point (at least
/// `at_least` of them) until the others' logs are purged past `victim_last`.
/// Returns the writer's checksum at each point, in order: whichever snapshot
/// the leader sends replica 3 (openraft keeps retrying the one it first took
/// while replica 3 is down, not always its latest), its state is known exactly.
fn snapshot_states_needed(
    cluster: &mut Cluster,
    writer: u64,
    every: u64,
    victim_last: u64,
    at_least: usize,
    prefix: &str,
    pairs: &mut Pairs,
) -> Vec<Checksum> {
    let mut states = Vec::new();
    for round in 0..at_least + 5 {
        let prefix = format!("{prefix}{round}-");
        states.push(write_to_the_next_snapshot(
            cluster, writer, every, &prefix, pairs,
        ));
        if states.len() >= at_least && others_purged_past(cluster, victim_last) {
            return states;
        }
    }
    panic!("the others never purged their logs past index {victim_last}");
}

/// Checks that the snapshot `installed` at the victim is one the others hold
/// (the leader sent it). Only where the others have a single snapshot and the
/// victim builds none after the install.
fn assert_installed_a_snapshot_of_the_others(cluster: &mut Cluster, installed: u64) {
    let others: Vec<Status> = OTHERS
        .iter()
        .map(|&id| cluster.replica(id).status())
        .collect();
    assert!(
        others
            .iter()
            .any(|status| snapshot_index(status) == Some(installed)),
        "replica {VICTIM} holds a snapshot at {installed}, which neither other replica has:\n{}",
        others
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Apply keeps in memory what it last wrote under recent keys
/// (`store/known_heads.rs`), and an install replaces the state under it. So the
/// victim is frozen, not killed, and keeps that memory: its keys are deleted
/// while it is away, it catches up by snapshot, and then the same keys are
/// written again. It must count them as new, as the others do. (Debug builds
/// also check every remembered head against fjall at apply.)
#[test]
fn a_replica_frozen_past_a_snapshot_forgets_what_it_knew_of_its_keys() {
    let mut cluster = start(EVERY);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let known = put_keys(cluster.replica(leader), "known", 10);
    wait_checksums_agree(&mut cluster, &ALL);

    let victim_last = last_log_index(&cluster.replica(VICTIM).status());
    cluster.replica(VICTIM).stop();
    let writer = cluster.wait_for_leader_among(&OTHERS, ELECTION_TIMEOUT);
    for (key, _) in &known {
        assert_eq!(cluster.replica(writer).send(&format!("delete {key}")), "OK");
    }
    let mut pairs = put_keys(cluster.replica(writer), "k", 2 * EVERY);
    snapshot_needed(
        &mut cluster,
        writer,
        EVERY,
        victim_last,
        "extra",
        &mut pairs,
    );
    cluster.replica(VICTIM).cont();
    wait_checksums_agree(&mut cluster, &ALL);
    let status = cluster.replica(VICTIM).status();
    assert!(
        snapshots_installed(&status) >= 1,
        "replica {VICTIM} caught up without a snapshot: {status}"
    );

    pairs.extend(put_keys(cluster.replica(writer), "known", 10));
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, pairs.len() as u64, "key count: {agreed}");
    for id in ALL {
        assert_eq!(
            cluster.replica(id).send("dbsize"),
            format!("(integer) {}", pairs.len()),
            "DBSIZE at replica {id}"
        );
    }
    cluster.assert_all_readable(VICTIM, &pairs);
}

#[test]
fn a_replica_that_missed_several_intervals_catches_up_by_snapshot_and_replays_nothing_after() {
    let mut cluster = start(EVERY);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let (victim_last, writer) = stop_the_victim(&mut cluster);

    // Six intervals: several snapshots, and replica 3 ends near index 300.
    let mut pairs = put_keys(cluster.replica(writer), "k", 6 * EVERY);
    let leader = snapshot_needed(
        &mut cluster,
        writer,
        EVERY,
        victim_last,
        "extra",
        &mut pairs,
    );

    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, pairs.len() as u64, "key count: {agreed}");
    assert!(agreed.applied >= leader.applied(), "{agreed} vs {leader}");

    // Its latest snapshot: the one it installed, or one it built since (a leader
    // may send a snapshot older than its latest; replica 3 then applies the log
    // after it and reaches its own next snapshot point).
    let status = settled_snapshot(cluster.replica(VICTIM), EVERY);
    eprintln!("replica {VICTIM} caught up: {status}");
    assert!(
        snapshots_installed(&status) >= 1,
        "replica {VICTIM} caught up without a snapshot: {status}"
    );
    let latest = snapshot_index(&status)
        .unwrap_or_else(|| panic!("replica {VICTIM} shows no snapshot: {status}"));
    assert!(
        latest + 1 >= first_log_index(&leader),
        "the snapshot at {latest} does not cover the purged log: {leader}"
    );
    assert!(latest >= 5 * EVERY, "{status}");
    assert_eq!(status.replayed(), 0, "{status}");
    cluster.assert_all_readable(VICTIM, &pairs);

    // A clean restart after the install resumes from disk and replays nothing.
    let before_exit = cluster.replica(VICTIM).status();
    cluster.replica(VICTIM).exit();
    cluster.replica(VICTIM).restart();
    let status = cluster.replica(VICTIM).status();
    assert_eq!(
        status.recovered_at(),
        before_exit.applied(),
        "applied {} before a clean exit: {status}",
        before_exit.applied()
    );
    assert!(status.recovered_at() >= latest, "{status}");
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(snapshot_index(&status), Some(latest), "{status}");
    let sum = checksum(cluster.replica(VICTIM));
    assert!(
        sum.same_data(&agreed) && sum.applied >= status.recovered_at(),
        "after the restart: {sum}, before: {agreed}"
    );
    cluster.assert_all_readable(VICTIM, &pairs);
    let status = cluster.replica(VICTIM).status();
    assert_eq!(status.replayed(), 0, "after reading everything: {status}");
}

/// The finished snapshot files in replica `id`'s folder.
fn snapshot_files_of(cluster: &mut Cluster, id: u64, suffix: &str) -> Vec<std::path::PathBuf> {
    let dir = cluster.replica(id).dir.join("snapshots");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// The lines replica `id` printed on stderr that start with `start`.
fn stderr_lines(cluster: &mut Cluster, id: u64, start: &str) -> Vec<String> {
    cluster
        .replica(id)
        .stderr()
        .lines()
        .filter(|line| line.starts_with(start))
        .map(String::from)
        .collect()
}

/// The snapshot-file notes replica `id` printed on stderr.
fn snapshot_notes(cluster: &mut Cluster, id: u64) -> Vec<String> {
    stderr_lines(cluster, id, "note: the snapshot file")
}

/// When and how the snapshot files are damaged in `damaged_snapshots_are_set_aside`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// While the replicas holding them are stopped: found as they start.
    WhileDown,
    /// Under a running replica's feet, by writing the file anew: its length
    /// and time change, so the sender reads it through before it sends it.
    WhileRunning,
    /// One byte changed in place, with the file's time put back: decay the
    /// sender cannot see without reading, so it sends the file as it is.
    InPlaceUnseen,
}

/// Both possible leaders' snapshot files are damaged while a lagging replica
/// needs a snapshot; replica 1's is cut short, except in place, where both
/// get a byte changed.
fn damaged_snapshots_are_set_aside(damage: Damage) {
    let mut cluster = start(EVERY);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let (victim_last, writer) = stop_the_victim(&mut cluster);
    let mut pairs = put_keys(cluster.replica(writer), "k", 4 * EVERY);
    snapshot_needed(
        &mut cluster,
        writer,
        EVERY,
        victim_last,
        "extra",
        &mut pairs,
    );

    if damage == Damage::WhileDown {
        for id in OTHERS {
            cluster.replica(id).exit();
        }
    }
    for id in OTHERS {
        let files = snapshot_files_of(&mut cluster, id, ".snap");
        assert_eq!(files.len(), 1, "replica {id}: {files:?}");
        let path = &files[0];
        let mut bytes = std::fs::read(path).expect("read the snapshot");
        let middle = bytes.len() / 2;
        match damage {
            Damage::WhileDown | Damage::WhileRunning if id == 1 => {
                bytes.truncate(middle);
                std::fs::write(path, bytes).expect("damage the snapshot");
            }
            Damage::WhileDown | Damage::WhileRunning => {
                bytes[middle] ^= 0x01;
                std::fs::write(path, bytes).expect("damage the snapshot");
            }
            Damage::InPlaceUnseen => flip_byte_keeping_time(path, middle as u64),
        }
    }
    if damage == Damage::WhileDown {
        for id in OTHERS {
            cluster.replica(id).restart();
        }
        cluster.wait_for_leader_among(&OTHERS, ELECTION_TIMEOUT);
        for id in OTHERS {
            let notes = snapshot_notes(&mut cluster, id);
            assert_eq!(notes.len(), 1, "replica {id}: {notes:?}");
            assert!(notes[0].contains("damaged snapshot"), "{}", notes[0]);
            assert_eq!(snapshot_files_of(&mut cluster, id, ".damaged").len(), 1);
        }
    }

    // The lagging replica gets a whole snapshot, built anew, and keeps running.
    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, pairs.len() as u64, "key count: {agreed}");
    let status = cluster.replica(VICTIM).status();
    assert!(snapshots_installed(&status) >= 1, "{status}");
    assert!(cluster.replica(VICTIM).still_running());
    cluster.assert_all_readable(VICTIM, &pairs);
    if damage != Damage::WhileDown {
        // Found by the leader when it went to send it (in place: after the
        // lagging replica refused it). On a loaded machine the leader may have
        // changed since, so every replica but the victim is asked.
        let notes: Vec<String> = OTHERS
            .iter()
            .flat_map(|&id| snapshot_notes(&mut cluster, id))
            .collect();
        assert!(!notes.is_empty(), "no sender noted the damage");
        assert!(
            notes.iter().all(|note| note.contains("damaged snapshot")),
            "{notes:?}"
        );
    }
    let refusals = stderr_lines(&mut cluster, VICTIM, "note: refused snapshot");
    if damage == Damage::InPlaceUnseen {
        assert!(!refusals.is_empty(), "the damaged file was never refused");
        assert!(
            refusals[0].contains("damaged snapshot")
                && refusals[0].ends_with("kept the current state"),
            "{refusals:?}"
        );
    } else {
        assert!(refusals.is_empty(), "a damaged file was sent: {refusals:?}");
    }
}

/// Changes the byte at `offset` in place, and puts the file's modification
/// time back, as decay on the disk would leave it.
fn flip_byte_keeping_time(path: &std::path::Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the snapshot");
    let modified = file.metadata().and_then(|m| m.modified()).expect("mtime");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read a byte");
    byte[0] ^= 0x01;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write a byte");
    file.sync_all().expect("sync");
    file.set_modified(modified).expect("put the time back");
}

#[test]
fn snapshot_files_damaged_while_down_are_set_aside_and_a_lagging_replica_catches_up() {
    damaged_snapshots_are_set_aside(Damage::WhileDown);
}

#[test]
fn a_snapshot_file_damaged_while_running_is_rebuilt_before_it_is_sent() {
    damaged_snapshots_are_set_aside(Damage::WhileRunning);
}

#[test]
fn a_snapshot_file_decayed_unseen_is_refused_by_the_receiver_and_rebuilt_by_the_sender() {
    damaged_snapshots_are_set_aside(Damage::InPlaceUnseen);
}

#[test]
fn a_replica_whose_folder_was_deleted_rejoins_with_the_whole_state() {
    let mut cluster = start(EVERY);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut pairs = put_keys(cluster.replica(leader), "before", 30);
    // Replica 3 holds them, so deleting its folder loses real data.
    wait_checksums_agree(&mut cluster, &ALL);

    cluster.replica(VICTIM).kill();
    let folder = cluster.replica(VICTIM).dir.clone();
    assert!(
        folder.join("db").is_dir(),
        "{} has no db/",
        folder.display()
    );
    std::fs::remove_dir_all(&folder).expect("delete replica 3's folder");
    assert!(!folder.exists());

    let writer = cluster.wait_for_leader_among(&OTHERS, ELECTION_TIMEOUT);
    pairs.extend(put_keys(cluster.replica(writer), "after", 2 * EVERY));
    // An empty folder holds no log at all.
    snapshot_needed(&mut cluster, writer, EVERY, 0, "extra", &mut pairs);

    let term_before = cluster.replica(writer).status().get("term").to_string();
    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, pairs.len() as u64, "key count: {agreed}");
    // An empty replica listens for the running leader before it would found a
    // cluster of its own; founding one would have forced an election.
    let status = cluster.replica(writer).status();
    assert_eq!(status.get("term"), term_before, "an election: {status}");
    assert_eq!(status.get("leader"), writer.to_string(), "{status}");
    let log = std::fs::read_to_string(cluster.replica(VICTIM).dir.join("replica.log"))
        .expect("read replica 3's log");
    assert!(
        log.contains("founding nothing") || log.contains("leads a running cluster"),
        "replica 3 did not see the running cluster"
    );
    assert!(
        !log.contains("bootstrapped a new cluster"),
        "replica 3 founded one"
    );
    let status = cluster.replica(VICTIM).status();
    assert_eq!(
        status.recovered_at(),
        0,
        "an empty folder has nothing to recover: {status}"
    );
    assert!(snapshots_installed(&status) >= 1, "{status}");
    assert_eq!(status.get("members"), "1,2,3", "{status}");
    assert_eq!(status.replayed(), 0, "{status}");
    cluster.assert_all_readable(VICTIM, &pairs);

    // A full member again: a write through it reaches the others.
    cluster
        .replica(VICTIM)
        .put("written-at", "the rejoined replica");
    for id in OTHERS {
        assert_eq!(
            cluster.replica(id).get("written-at"),
            "the rejoined replica",
            "at replica {id}"
        );
    }
}

#[test]
fn a_voter_catching_up_by_a_large_snapshot_stands_for_no_election() {
    let mut cluster = start(EVERY);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let (victim_last, writer) = stop_the_victim(&mut cluster);

    // About 40 MB of state: streaming and installing it takes longer than an
    // election timeout, and replica 3 is a voter (it has a log) all the while.
    let port = cluster.replica(writer).client_port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut connection = client.get_connection().expect("connect to the leader");
    let value = "v".repeat(10_000);
    let (batches, per_batch) = (40, 100);
    for batch in 0..batches {
        let mut mset = redis::cmd("MSET");
        for i in 0..per_batch {
            mset.arg(format!("big-{batch}-{i}")).arg(&value);
        }
        let reply: String = mset.query(&mut connection).expect("MSET");
        assert_eq!(reply, "OK");
    }
    let mut pairs = put_keys(cluster.replica(writer), "k", EVERY);
    snapshot_needed(
        &mut cluster,
        writer,
        EVERY,
        victim_last,
        "extra",
        &mut pairs,
    );

    let before = cluster.replica(writer).status();
    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, batches * per_batch + pairs.len() as u64);
    let status = cluster.replica(VICTIM).status();
    assert!(snapshots_installed(&status) >= 1, "{status}");
    // openraft 0.9 renewed a follower's lease on append-entries, not on
    // snapshot chunks, and replica 3 stood for election in the middle of the
    // stream until elections were paused while chunks came in. 0.10 sends
    // heartbeats apart from the stream, and pre-vote keeps a replica that
    // times out from raising the term, so the pause is gone; this checks it
    // is not missed.
    let after = cluster.replica(writer).status();
    assert_eq!(
        after.get("term"),
        before.get("term"),
        "an election: {after}"
    );
    assert_eq!(after.get("leader"), writer.to_string(), "{after}");
}

#[test]
fn the_log_stays_bounded_while_writing_ten_intervals() {
    // A snapshot every EVERY entries, then a purge that keeps a tail of
    // min(100, EVERY): a log holds about EVERY + tail entries, never this many.
    let bound = 2 * EVERY + 100;
    let mut cluster = start(EVERY);
    let writer = cluster.wait_for_leader(ELECTION_TIMEOUT);

    // Snapshot indexes seen at each replica, in order.
    let mut seen: Vec<Vec<Option<u64>>> = vec![Vec::new(); ALL.len()];
    let mut check = |cluster: &mut Cluster, when: &str| {
        for id in ALL {
            let status = cluster.replica(id).status();
            let held = log_length(&status);
            assert!(
                held < bound,
                "{when}: replica {id} holds {held} log entries (bound {bound}): {status}"
            );
            let history = &mut seen[id as usize - 1];
            let snapshot = snapshot_index(&status);
            if let Some(&previous) = history.last() {
                assert!(
                    snapshot >= previous,
                    "{when}: replica {id}'s snapshot went back from {previous:?}: {status}"
                );
            }
            history.push(snapshot);
        }
    };

    for i in 0..10 * EVERY {
        cluster
            .replica(writer)
            .put(&format!("b-{i}"), &format!("value of b-{i}"));
        if i % 10 == 9 {
            check(&mut cluster, &format!("after {} writes", i + 1));
        }
    }

    // Once the writes stop, every replica catches up, builds the snapshot due,
    // and its log stays under the bound.
    let applied = cluster.replica(writer).status().applied();
    for id in ALL {
        cluster.replica(id).wait_applied(applied, SETTLE);
        let status = settled_snapshot(cluster.replica(id), EVERY);
        assert!(log_length(&status) < bound, "replica {id}: {status}");
        let snapshot = snapshot_index(&status).expect("settled");
        assert!(
            snapshot >= 9 * EVERY,
            "replica {id}'s last snapshot is behind: {status}"
        );
        let mut distinct: Vec<u64> = seen[id as usize - 1].iter().flatten().copied().collect();
        distinct.dedup();
        assert!(
            distinct.len() >= 5,
            "replica {id}'s snapshot index advanced only through {distinct:?} while writing"
        );
    }
}

/// Kills replica 3 at `point` of a snapshot install (the binary's crash hook),
/// then restarts it while the others are frozen: it must hold exactly its old
/// state or exactly the new one (`expect_new` says which), never a mix. Then the
/// cluster converges.
fn crash_during_install(point: &str, expect_new: bool) {
    let mut cluster = start(EVERY);
    let first_leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut pairs = put_keys(cluster.replica(first_leader), "old", 10);
    // Replica 3's state before it goes away: "the old state", exactly.
    let old = wait_checksums_agree(&mut cluster, &ALL);
    let (victim_last, writer) = stop_the_victim(&mut cluster);
    // "A new state": the writer's at one of its snapshot points, whichever
    // snapshot it sends; "the new state": its last, which all converge on.
    let states = snapshot_states_needed(
        &mut cluster,
        writer,
        EVERY,
        victim_last,
        3,
        "new",
        &mut pairs,
    );
    let new = states.last().expect("at least one snapshot state").clone();
    assert_eq!(new.keys, pairs.len() as u64, "key count: {new}");
    let state_at = |index: u64| states.iter().find(|state| state.applied == index);

    cluster
        .replica(VICTIM)
        .restart_with_env(&[(CRASH_AT_VAR, point)]);
    let exit = cluster.replica(VICTIM).wait_own_exit(SETTLE);
    let stderr = cluster.replica(VICTIM).stderr();
    assert!(
        !exit.success(),
        "replica {VICTIM} should have crashed at {point}, but {exit}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("crashing at {point}")),
        "stderr does not mention the crash at {point}:\n{stderr}"
    );

    // Freeze the others, so that what replica 3 shows is what it recovered from
    // its disk, not a new catch-up.
    for id in OTHERS {
        cluster.replica(id).stop();
    }
    cluster.replica(VICTIM).restart();
    let recovered = checksum(cluster.replica(VICTIM));
    let status = cluster.replica(VICTIM).status();
    eprintln!("after a crash at {point}: old {old}, new {new}, recovered {recovered}");
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(status.recovered_at(), recovered.applied, "{status}");
    if recovered.applied == old.applied {
        assert_eq!(
            recovered, old,
            "after a crash at {point}: the old index with another state"
        );
    } else if let Some(state) = state_at(recovered.applied) {
        assert!(
            recovered.same_data(state),
            "after a crash at {point}: a snapshot's index with another state: {recovered}, \
             the snapshot's: {state}"
        );
    } else {
        panic!(
            "after a crash at {point}: {recovered} is neither the old {old} nor a snapshot's: {states:?}"
        );
    }
    if expect_new {
        assert!(
            recovered.applied > old.applied,
            "after a crash at {point} the new state must stay: {recovered}, old {old}"
        );
    } else {
        assert_eq!(
            recovered, old,
            "after a crash at {point} the old state must stay"
        );
    }

    for id in OTHERS {
        cluster.replica(id).cont();
    }
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert!(agreed.same_data(&new), "converged on {agreed}, new: {new}");
    cluster.assert_all_readable(VICTIM, &pairs);
    let status = cluster.replica(VICTIM).status();
    assert_eq!(status.replayed(), 0, "{status}");
    if !expect_new {
        assert!(
            snapshots_installed(&status) >= 1,
            "it can only have caught up by snapshot: {status}"
        );
    }
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

/// Dragonboat once corrupted log indexes with a byte >= 0x80. With a snapshot
/// every 150 entries, replica 3 installs one near index 150 (0x96), usually
/// with a few entries after it, then, after a second absence, one near 300 (varint 0xAC
/// 0x02) with none after it; each must come back exactly after a restart.
#[test]
fn snapshots_at_indexes_with_a_byte_of_0x80_or_more_install_and_survive_restarts() {
    const EVERY_150: u64 = 150;
    let mut cluster = start(EVERY_150);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let (victim_last, writer) = stop_the_victim(&mut cluster);

    // Round 1: a snapshot near 150, a few entries after it; a clean restart.
    let mut pairs = put_keys(cluster.replica(writer), "a", EVERY_150);
    let leader = snapshot_needed(
        &mut cluster,
        writer,
        EVERY_150,
        victim_last,
        "a",
        &mut pairs,
    );
    let first = snapshot_index(&leader).expect("settled");
    assert!(
        (128..256).contains(&first),
        "the first snapshot should have an index in 128..256: {leader}"
    );
    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert_eq!(agreed.keys, pairs.len() as u64, "key count: {agreed}");
    let status = cluster.replica(VICTIM).status();
    eprintln!("replica {VICTIM} caught up: {status}");
    assert_eq!(snapshots_installed(&status), 1, "{status}");
    let installed = snapshot_index(&status).expect("an installed snapshot");
    assert_installed_a_snapshot_of_the_others(&mut cluster, installed);
    assert!((128..256).contains(&installed), "{status}");

    let before_exit = cluster.replica(VICTIM).status();
    cluster.replica(VICTIM).exit();
    cluster.replica(VICTIM).restart();
    let status = cluster.replica(VICTIM).status();
    assert_eq!(
        status.recovered_at(),
        before_exit.applied(),
        "applied {} before a clean exit: {status}",
        before_exit.applied()
    );
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(snapshot_index(&status), Some(installed), "{status}");
    let sum = checksum(cluster.replica(VICTIM));
    assert!(
        sum.same_data(&agreed),
        "after the restart: {sum}, before: {agreed}"
    );

    // Round 2: a snapshot near 300 with nothing after it; a SIGKILL this time.
    let (victim_last, writer) = stop_the_victim(&mut cluster);
    let states = snapshot_states_needed(
        &mut cluster,
        writer,
        EVERY_150,
        victim_last,
        1,
        "b",
        &mut pairs,
    );
    let new = states.last().expect("at least one snapshot state").clone();
    assert!(states[0].applied >= 256, "{states:?}");
    cluster.replica(VICTIM).restart();
    let agreed = wait_checksums_agree(&mut cluster, &ALL);
    assert!(agreed.same_data(&new), "converged on {agreed}, new: {new}");
    // Its status (openraft's metrics) can lag the state just installed,
    // which CHECKSUM read: wait for it to show that state.
    let deadline = Instant::now() + SETTLE;
    let before_kill = loop {
        let status = cluster.replica(VICTIM).status();
        if status.applied() >= agreed.applied {
            break status;
        }
        assert!(Instant::now() < deadline, "{status}, agreed on {agreed}");
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("replica {VICTIM} caught up again: {before_kill}");
    assert!(snapshots_installed(&before_kill) >= 1, "{before_kill}");
    // Normally the one snapshot near 300 with nothing after it (the index
    // replica 3 is at); the others may have had to write on to a later one.
    let installed = snapshot_index(&before_kill).expect("an installed snapshot");
    assert!(
        states.iter().any(|state| state.applied == installed),
        "replica 3's snapshot at {installed} is none of the others' {states:?}"
    );

    // The install's switch is fsynced: a SIGKILL after it does not undo it (a
    // later apply, not fsynced by itself, may be lost and come again).
    cluster.replica(VICTIM).kill();
    cluster.replica(VICTIM).restart();
    let status = cluster.replica(VICTIM).status();
    assert!(
        (installed..=before_kill.applied()).contains(&status.recovered_at()),
        "installed a snapshot at {installed}, applied {} before the kill: {status}",
        before_kill.applied()
    );
    assert_eq!(status.replayed(), 0, "{status}");
    assert_eq!(snapshot_index(&status), Some(installed), "{status}");
    let sum = checksum(cluster.replica(VICTIM));
    assert!(sum.same_data(&new), "after the restart: {sum}, new: {new}");
    cluster.assert_all_readable(VICTIM, &pairs);
}

#[test]
fn a_command_of_an_unknown_format_is_held_back_instead_of_applied() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("k", "v");
    let before = wait_checksums_agree(&mut cluster, &ALL);
    // Replica `newer` plays a newer release that proposes format 7 (one past
    // this build's newest) without waiting for the cluster to move to it (the
    // version gate is skipped by this test hook), which no replica here can
    // apply.
    let newer = cluster.other_than(&[leader]);
    cluster.replica(newer).kill();
    cluster
        .replica(newer)
        .restart_with_env(&[("EXAMPLE_ONDISK_PROPOSE_FORMAT", "7")]);
    let answer = cluster.replica(newer).send("put k changed");
    assert!(is_error(&answer), "{answer}");

    // Every replica stores the entry and holds back there: none applies it,
    // none stops, and each says why.
    let mut held_at = None;
    for id in ALL {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let at = loop {
            let status = cluster.replica(id).status();
            if let Some(at) = status.optional_number("held_back_at") {
                break at;
            }
            assert!(Instant::now() < deadline, "replica {id}: {status}");
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(*held_at.get_or_insert(at), at, "replica {id}");
        let sum = checksum(cluster.replica(id));
        assert!(
            sum.same_data(&before),
            "replica {id} applied a command of an unknown format: {sum}, before: {before}"
        );
        let read = cluster.replica(id).get("k");
        assert!(
            read.contains("needs machine version 7") && read.contains("upgrade"),
            "{read}"
        );
    }
    let stderr = cluster.replica(leader).stderr();
    assert!(stderr.contains("holds back applying"), "{stderr}");

    // Restarted without an upgrade, it holds back again rather than skip the entry.
    let old = cluster.other_than(&[newer]);
    cluster.replica(old).kill();
    cluster.replica(old).restart();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let status = cluster.replica(old).status();
        if status.optional_number("held_back_at").is_some() {
            assert_eq!(status.optional_number("held_back_at"), held_at, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "replica {old}: {status}");
        thread::sleep(Duration::from_millis(50));
    }
    let sum = checksum(cluster.replica(old));
    assert!(sum.same_data(&before), "after the restart: {sum}");
}

/// openraft counts entries, and an entry may carry a batch of thousands of
/// writes: with a count far away, a snapshot still comes once the entries
/// applied since the last one hold `--snapshot-log-mib`, and the log behind
/// it is purged, at every replica.
#[test]
fn a_snapshot_is_taken_when_the_log_grows_by_its_size_limit() {
    let mut cluster = Cluster::start_with(
        3,
        &["--snapshot-every", "1000000", "--snapshot-log-mib", "1"],
    );
    let leader = cluster.wait_for_leader(SETTLE);
    let mut redis = cluster.redis(leader, SETTLE);
    let value = "v".repeat(16 * 1024);
    // 3.2 MiB of commands in 200-odd entries: past the limit three times,
    // and past the tail of 100 entries a snapshot keeps behind it.
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("big-{i}"))
            .arg(&value)
            .query(&mut redis)
            .expect("SET");
    }
    let deadline = Instant::now() + SETTLE;
    for id in ALL {
        loop {
            let status = cluster.replica(id).status();
            if snapshot_index(&status).is_some() && first_log_index(&status) > 1 {
                assert!(log_length(&status) < 200, "{status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id}: no snapshot by size after {SETTLE:?}: {status}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    wait_checksums_agree(&mut cluster, &ALL);
}
