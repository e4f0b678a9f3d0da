//! What a person can get wrong: prompt lines, flags, and data folders that belong
//! to someone else or are damaged. Each must give one clear error and change nothing.

mod harness;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use harness::{
    fresh_peers, is_error, port_of, replica_args, run_once, snapshot_files, temp_dir,
    wait_listening, Cluster, Outcome, Replica, ELECTION_TIMEOUT, EXIT_TIMEOUT,
};
use tempfile::TempDir;

/// Flag errors and start-up failures must come well within this.
const QUICK: Duration = Duration::from_secs(30);

/// The lines of stderr that start with `error:`.
fn error_lines(outcome: &Outcome) -> Vec<&str> {
    outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect()
}

/// The run failed with `code`, stderr has exactly one `error:` line, and no panic.
/// Returns that line.
fn assert_refused(outcome: &Outcome, code: i32) -> String {
    assert_eq!(outcome.code, Some(code), "{outcome}");
    assert!(
        !outcome.stderr.contains("panicked"),
        "a panic instead of an error: {outcome}"
    );
    let errors = error_lines(outcome);
    assert_eq!(errors.len(), 1, "want exactly one `error:` line: {outcome}");
    errors[0].to_string()
}

// ---------------------------------------------------------------------------
// Prompt lines
// ---------------------------------------------------------------------------

#[test]
fn bad_prompt_lines_get_an_error_and_change_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let before = cluster.replica(leader).status();

    let long_key = "k".repeat(60 * 1024 + 1);
    // One byte over the limit (32 MiB, as Redis semantics asked for).
    let long_value = "v".repeat(32 * 1024 * 1024 + 1);
    // Each bad line, and words of which its error should use at least one (the
    // contract: say what was wrong and what is expected).
    let bad_lines: [(&str, String, &[&str]); 13] = [
        (
            "unknown command",
            "frobnicate x".into(),
            &["unknown", "frobnicate"],
        ),
        ("put without key", "put".into(), &["key"]),
        ("put without value", "put onlykey".into(), &["value"]),
        (
            "put with a blank value",
            "put blankvalue    ".into(),
            &["value"],
        ),
        ("get without key", "get".into(), &["key"]),
        (
            "get with extra arguments",
            "get a b".into(),
            &["argument", "one key", "extra"],
        ),
        ("delete without key", "delete".into(), &["key"]),
        (
            "delete with extra arguments",
            "delete a b".into(),
            &["argument", "one key", "extra"],
        ),
        (
            "key over 60 KiB",
            format!("put {long_key} v"),
            &["61440", "long"],
        ),
        (
            "a quote never closed",
            r#"set "x v"#.into(),
            &["invalid argument", "quote"],
        ),
        (
            "text after a closing quote",
            r#"set "x"y v"#.into(),
            &["invalid argument", "quote"],
        ),
        (
            "set with a value of several words (Redis's SET, not put)",
            "set x hello world".into(),
            &["syntax error"],
        ),
        (
            "value over 32 MiB",
            format!("put bigvalue {long_value}"),
            &["33554432", "mib", "long"],
        ),
    ];
    for at in [leader, follower] {
        for (what, line, words) in &bad_lines {
            let reply = cluster.replica(at).send(line);
            assert!(
                is_error(&reply),
                "{what} at replica {at}: want `(error) ...`, got {:?}",
                harness::shorten(&reply)
            );
            let lower = reply.to_lowercase();
            assert!(
                words.iter().any(|word| lower.contains(word)),
                "{what}: the error should say what is wrong (one of {words:?}): {reply}"
            );
        }
    }

    let after = cluster.replica(leader).status();
    if after.term() == before.term() {
        assert_eq!(
            after.number("last_log_index"),
            before.number("last_log_index"),
            "a bad line was proposed: before {before}, after {after}"
        );
        assert_eq!(
            after.applied(),
            before.applied(),
            "before {before}, after {after}"
        );
    } else {
        // An election appends an entry of its own; the gets below still hold.
        eprintln!("the term moved during the test ({before} -> {after}); log check skipped");
    }
    // A line that is not UTF-8 is refused on its own; the next line works.
    cluster
        .replica(follower)
        .write_bytes(b"put bytes \xff\xfe\n")
        .expect("write to the prompt");
    let reply = cluster
        .replica(follower)
        .next_line_within(Duration::from_secs(10))
        .expect("an answer to a line that is not UTF-8");
    assert!(
        is_error(&reply) && reply.contains("UTF-8"),
        "a line that is not UTF-8: {reply}"
    );
    assert_eq!(cluster.replica(follower).get("bytes"), "(nil)");

    for id in 1..=3 {
        for key in ["onlykey", "blankvalue", "a", "bigvalue", "x"] {
            assert_eq!(
                cluster.replica(id).get(key),
                "(nil)",
                "get {key} at replica {id}"
            );
        }
    }
}

#[test]
fn the_size_limits_are_inclusive() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);

    let key = "k".repeat(60 * 1024);
    let value = "v".repeat(1_048_576);
    cluster.replica(1).put(&key, "longest key");
    cluster.replica(1).put("biggest", &value);

    assert_eq!(cluster.replica(2).get(&key), "longest key");
    assert!(
        cluster.replica(3).get("biggest") == value,
        "the 1 MiB value did not read back"
    );
}

#[test]
fn help_answers_one_line_and_commands_ignore_case() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let replica = cluster.replica(2);

    let help = replica.send("help");
    assert!(!is_error(&help), "help: {help}");
    for command in ["put", "get", "delete", "status"] {
        assert!(
            help.to_lowercase().contains(command),
            "help should list {command}: {help}"
        );
    }

    // Had help printed more than one line, the replies below would be off by one.
    assert_eq!(replica.send("PUT Mixed first"), "OK");
    assert_eq!(replica.send("GET Mixed"), "first");
    assert_eq!(replica.send("Put Mixed second"), "OK");
    assert_eq!(replica.send("gEt Mixed"), "second");
    assert_eq!(replica.send("DELETE Mixed"), "OK");
    assert_eq!(replica.send("Get Mixed"), "(nil)");
    assert!(replica.send("STATUS").starts_with("role="));
}

#[test]
fn blank_lines_get_no_reply() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let replica = cluster.replica(1);

    replica.write_raw("\n   \n\t\n").expect("write blank lines");
    // Had a blank line been answered, this reply would be that answer instead.
    assert_eq!(replica.send("get nothing-here"), "(nil)");
    assert!(replica.send("status").starts_with("role="));
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

/// Runs the binary with `args` plus `--data-dir <tmp>/data`, and checks it exits 2
/// with one `error:` line, creating no data folder. Returns that line.
fn assert_bad_flags(args: &[&str]) -> String {
    let tmp = temp_dir();
    let data = tmp.path().join("data");
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--data-dir".to_string(), data.display().to_string()]);

    let outcome = run_once(&all, QUICK);

    assert_eq!(outcome.code, Some(2), "flags {args:?}: {outcome}");
    let errors = error_lines(&outcome);
    assert!(
        !errors.is_empty(),
        "flags {args:?}: no `error:` line: {outcome}"
    );
    assert!(
        !data.exists(),
        "flags {args:?} still created {}",
        data.display()
    );
    errors[0].to_string()
}

#[test]
fn a_missing_replica_id_is_refused() {
    let error = assert_bad_flags(&[]);
    assert!(error.contains("--replica-id"), "{error}");
}

#[test]
fn a_replica_id_outside_the_members_is_refused() {
    let peers = fresh_peers(3);
    let error = assert_bad_flags(&["--replica-id", "7", "--peers", &peers]);
    assert!(error.contains('7'), "should name the id: {error}");
    let (_, members) = error.split_once('7').unwrap_or_default();
    for id in ['1', '2', '3'] {
        assert!(members.contains(id), "should name the members: {error}");
    }

    // The same with the default member list.
    let error = assert_bad_flags(&["--replica-id", "7"]);
    assert!(error.contains('7'), "should name the id: {error}");
}

#[test]
fn a_replica_id_that_is_not_a_number_is_refused() {
    let error = assert_bad_flags(&["--replica-id", "abc"]);
    assert!(error.contains("abc"), "{error}");
}

#[test]
fn a_malformed_member_list_is_refused() {
    for peers in [
        "1=nope",
        "1=127.0.0.1:1,1=127.0.0.1:2",
        "",
        "1=127.0.0.1:1,,2=127.0.0.1:2",
        "x=127.0.0.1:1",
        "1=127.0.0.1:99999",
    ] {
        let error = assert_bad_flags(&["--replica-id", "1", "--peers", peers]);
        assert!(error.contains("--peers"), "--peers {peers:?}: {error}");
    }
}

#[test]
fn a_bad_log_level_is_refused() {
    let error = assert_bad_flags(&["--replica-id", "1", "--log-level", "loud"]);
    assert!(error.contains("loud"), "{error}");
}

#[test]
fn a_timeout_that_is_not_positive_is_refused() {
    for timeout in ["--timeout=0", "--timeout=-1", "--timeout=soon"] {
        let error = assert_bad_flags(&["--replica-id", "1", timeout]);
        assert!(error.contains("--timeout"), "{timeout}: {error}");
    }
    // `-1` as a separate word looks like a flag to the parser; refused all the same.
    assert_bad_flags(&["--replica-id", "1", "--timeout", "-1"]);
    assert_bad_flags(&["--replica-id", "1", "--timeout", "0"]);
}

#[test]
fn raft_timing_that_cannot_work_is_refused() {
    for flags in [
        &["--heartbeat-interval", "0"][..],
        &["--heartbeat-interval", "fast"],
        &["--election-timeout", "10"],
        &["--election-timeout", "999999"],
    ] {
        let mut args = vec!["--replica-id", "1"];
        args.extend_from_slice(flags);
        let error = assert_bad_flags(&args);
        assert!(error.contains(flags[0]), "{flags:?}: {error}");
    }
    // An election timeout under three heartbeats would depose healthy leaders.
    let error = assert_bad_flags(&[
        "--replica-id",
        "1",
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        "250",
    ]);
    assert!(error.contains("three heartbeat intervals"), "{error}");
}

#[test]
fn an_unknown_read_check_is_refused() {
    let error = assert_bad_flags(&["--replica-id", "1", "--read-check", "sometimes"]);
    assert!(error.contains("sometimes"), "{error}");
    assert!(error.contains("--read-check"), "{error}");
}

#[test]
fn an_unknown_flag_is_refused() {
    let error = assert_bad_flags(&["--replica-id", "1", "--frobnicate"]);
    assert!(error.contains("--frobnicate"), "{error}");
}

// ---------------------------------------------------------------------------
// Data folders
// ---------------------------------------------------------------------------

/// Starts replica 1 of `peers` alone in `data_dir`, waits until it answers, and
/// shuts it down cleanly: afterwards `data_dir/replica-1` is a real data folder.
fn create_folder_of_replica_1(data_dir: &Path, peers: &str) {
    let mut replica = Replica::spawn(1, data_dir, replica_args(1, data_dir, peers, &[]));
    let status = replica.status();
    assert_eq!(status.replayed(), 0, "{status}");
    replica.exit();
    assert!(
        data_dir.join("replica-1").join("db").is_dir(),
        "no db folder was created"
    );
}

/// A cluster that has applied a few writes and then shut down cleanly, with the
/// applied index each replica reported just before.
fn cluster_with_data_then_stopped() -> (Cluster, Vec<u64>) {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("precious", "do not lose me");
    cluster.replica(leader).put("also", "kept");
    let target = cluster.replica(leader).status().applied();
    let applied = (1..=3)
        .map(|id| {
            cluster
                .replica(id)
                .wait_applied(target, ELECTION_TIMEOUT)
                .applied()
        })
        .collect();
    cluster.exit_all();
    (cluster, applied)
}

/// After a refused start, the owners of the folders start again as if nothing
/// happened: nothing applied is lost, and the data reads back.
///
/// (Byte-for-byte equality of the folder is not checked: fjall tidies up when a
/// database is opened, e.g. it trims its pre-allocated journal and removes
/// superseded version files, and the identity can only be read after opening.)
fn assert_cluster_data_intact(cluster: &mut Cluster, applied_before: &[u64]) {
    cluster.restart_all();
    for id in 1..=3 {
        let status = cluster.replica(id).status();
        let before = applied_before[usize::try_from(id - 1).expect("small id")];
        // `>=`: while the cluster shut down one by one, the last two may have
        // elected a new leader and applied its blank entry.
        assert!(
            status.recovered_at() >= before,
            "replica {id} applied {before}: {status}"
        );
        assert_eq!(status.replayed(), 0, "replica {id}: {status}");
    }
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    for id in 1..=3 {
        let replica = cluster.replica(id);
        assert_eq!(
            replica.send_until_ok("get precious", QUICK),
            "do not lose me"
        );
        assert_eq!(replica.get("also"), "kept");
    }
}

#[test]
fn a_folder_of_another_replica_is_refused_and_left_intact() {
    let (mut cluster, applied) = cluster_with_data_then_stopped();
    // Replica 1's folder, put where replica 2 of another data dir would look.
    let elsewhere = temp_dir();
    let moved = elsewhere.path().join("replica-2");
    std::fs::rename(cluster.data_dir().join("replica-1"), &moved)
        .expect("move replica-1's folder to <elsewhere>/replica-2");

    let outcome = run_once(
        &replica_args(2, elsewhere.path(), &cluster.peers, &[]),
        QUICK,
    );

    let error = assert_refused(&outcome, 1);
    let without_path = error.replace(&elsewhere.path().display().to_string(), "<dir>");
    assert!(
        without_path.contains('1') && without_path.contains("replica"),
        "should say the folder is replica 1's: {error}"
    );
    std::fs::rename(&moved, cluster.data_dir().join("replica-1"))
        .expect("move the folder back to replica-1");
    assert_cluster_data_intact(&mut cluster, &applied);
}

#[test]
fn a_folder_of_another_cluster_is_refused_and_left_intact() {
    let (mut cluster, applied) = cluster_with_data_then_stopped();

    let other_peers = fresh_peers(3);
    let outcome = run_once(
        &replica_args(1, cluster.data_dir(), &other_peers, &[]),
        QUICK,
    );

    let error = assert_refused(&outcome, 1);
    assert!(
        error.contains("cluster"),
        "should mention the cluster: {error}"
    );
    assert_cluster_data_intact(&mut cluster, &applied);
}

/// Opens replica `id`'s stopped database and hands `edit` its identity
/// record (JSON); what `edit` leaves there is written back, durably.
fn with_identity<T>(data_dir: &Path, id: u64, edit: impl FnOnce(&mut serde_json::Value) -> T) -> T {
    let db = fjall::Database::builder(data_dir.join(format!("replica-{id}")).join("db"))
        .open()
        .expect("open the stopped replica's database");
    let meta = db
        .keyspace("raft_meta", fjall::KeyspaceCreateOptions::default)
        .expect("its raft_meta keyspace");
    let stored = meta
        .get("identity")
        .expect("read the identity")
        .expect("an identity record");
    let mut identity: serde_json::Value =
        serde_json::from_slice(&stored).expect("the identity is JSON");
    let before = identity.clone();
    let result = edit(&mut identity);
    if identity != before {
        meta.insert("identity", serde_json::to_vec(&identity).unwrap())
            .expect("write the identity");
        db.persist(fjall::PersistMode::SyncAll)
            .expect("make it durable");
    }
    result
}

/// Rewrites the layout number in replica `id`'s identity record, as a folder
/// written by another release would have it.
fn set_layout(data_dir: &Path, id: u64, layout: u32) {
    with_identity(data_dir, id, |identity| identity["layout"] = layout.into());
}

/// The layout number replica `id`'s identity record holds.
fn layout_of(data_dir: &Path, id: u64) -> u64 {
    with_identity(data_dir, id, |identity| {
        identity["layout"].as_u64().expect("a layout number")
    })
}

/// A folder from an older release (layout 1: values without type, expiry or
/// write index) or a newer one is refused with one line, and works again once
/// its layout is this release's. Layout 2 (no flush marks) opens, as layout 3.
#[test]
fn a_folder_of_another_layout_is_refused_and_left_intact() {
    let (mut cluster, applied) = cluster_with_data_then_stopped();
    for layout in [1, 4] {
        set_layout(cluster.data_dir(), 1, layout);
        let outcome = run_once(
            &replica_args(1, cluster.data_dir(), &cluster.peers, &[]),
            QUICK,
        );
        let error = assert_refused(&outcome, 1);
        assert!(
            error.contains(&format!("layout {layout}")) && error.contains("layout 3"),
            "should name both layouts: {error}"
        );
    }
    set_layout(cluster.data_dir(), 1, 2);
    assert_cluster_data_intact(&mut cluster, &applied);
    cluster.replica(1).exit();
    assert_eq!(
        layout_of(cluster.data_dir(), 1),
        3,
        "layout 2 is recorded as 3"
    );
}

#[test]
fn a_file_where_the_db_folder_should_be_is_refused() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    std::fs::create_dir_all(tmp.path().join("replica-1")).expect("create replica-1");
    std::fs::write(tmp.path().join("replica-1").join("db"), b"not a database\n")
        .expect("write a file named db");

    let outcome = run_once(&replica_args(1, tmp.path(), &peers, &[]), QUICK);

    assert_refused(&outcome, 1);
}

#[test]
fn a_damaged_version_file_is_refused_without_a_panic() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    create_folder_of_replica_1(tmp.path(), &peers);
    let version = tmp.path().join("replica-1").join("db").join("version");
    assert!(
        version.is_file(),
        "fjall keeps a version file at {}",
        version.display()
    );
    std::fs::write(&version, b"\xde\xad\xbe\xef garbage garbage garbage")
        .expect("overwrite the version file");

    let outcome = run_once(&replica_args(1, tmp.path(), &peers, &[]), QUICK);

    assert_refused(&outcome, 1);
}

#[test]
fn a_db_folder_full_of_garbage_is_refused_without_a_panic() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    create_folder_of_replica_1(tmp.path(), &peers);
    let db = tmp.path().join("replica-1").join("db");
    for relative in snapshot_files(&db).keys() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(db.join(relative), garbage).expect("overwrite a db file");
    }

    let outcome = run_once(&replica_args(1, tmp.path(), &peers, &[]), QUICK);

    assert_refused(&outcome, 1);
}

#[test]
fn a_busy_port_is_refused() {
    let tmp = temp_dir();
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a port to keep busy");
    let port = busy.local_addr().expect("local address").port();
    let peers = format!(
        "1=127.0.0.1:{port},2=127.0.0.1:{},3=127.0.0.1:{}",
        harness::free_port(),
        harness::free_port()
    );

    let outcome = run_once(&replica_args(1, tmp.path(), &peers, &[]), QUICK);

    let error = assert_refused(&outcome, 1);
    assert!(
        error.contains(&port.to_string()),
        "should name the port: {error}"
    );
    drop(busy);
}

#[test]
fn a_second_process_for_the_same_replica_is_refused() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    let args = replica_args(1, tmp.path(), &peers, &[]);
    let mut first = Replica::spawn(1, tmp.path(), args.clone());
    first.status();

    let outcome = run_once(&args, QUICK);

    assert_refused(&outcome, 1);
    first.status(); // the first process is undisturbed and still answers
    first.exit();
}

// ---------------------------------------------------------------------------
// Shutting down
// ---------------------------------------------------------------------------

#[test]
fn end_of_input_shuts_down_cleanly() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    let mut replica = Replica::spawn(1, tmp.path(), replica_args(1, tmp.path(), &peers, &[]));
    replica.status();

    replica.close_stdin();
    let status = replica.wait_exit(EXIT_TIMEOUT);

    assert_eq!(status.code(), Some(0), "stderr:\n{}", replica.stderr());
    assert!(
        !replica.stderr().contains("panicked"),
        "{}",
        replica.stderr()
    );
}

#[test]
fn end_of_input_right_at_start_shuts_down_cleanly() {
    let tmp = temp_dir();
    let outcome = run_once(&replica_args(1, tmp.path(), &fresh_peers(3), &[]), QUICK);

    assert_eq!(outcome.code, Some(0), "{outcome}");
    assert!(
        outcome.stdout.is_empty(),
        "no command, no output: {outcome}"
    );
    assert!(
        tmp.path().join("replica-1").join("db").is_dir(),
        "the data folder was created"
    );
}

/// Starts replica 1 of a fresh member list alone with `--no-prompt`, and waits
/// until it serves Raft on its port.
fn no_prompt_replica(tmp: &TempDir) -> (Replica, String) {
    let peers = fresh_peers(3);
    let args = replica_args(1, tmp.path(), &peers, &["--no-prompt"]);
    let replica = Replica::spawn(1, tmp.path(), args);
    wait_listening(port_of(&peers, 1), QUICK);
    (replica, peers)
}

#[test]
fn sigterm_and_sigint_stop_a_replica_without_prompt_cleanly() {
    for signal in ["TERM", "INT"] {
        let tmp = temp_dir();
        let (mut replica, _) = no_prompt_replica(&tmp);
        // `--no-prompt` gives no "ready" sign besides the open port; leave it a
        // moment to finish starting (see the test below for a signal at once).
        std::thread::sleep(Duration::from_secs(1));

        harness::signal(replica.pid(), signal);
        let status = replica.wait_exit(EXIT_TIMEOUT);

        assert_eq!(
            status.code(),
            Some(0),
            "SIG{signal}: {status}; stderr:\n{}",
            replica.stderr()
        );
    }
}

#[test]
fn sigterm_as_soon_as_the_port_is_open_exits_cleanly() {
    let tmp = temp_dir();
    let (mut replica, _) = no_prompt_replica(&tmp);

    harness::signal(replica.pid(), "TERM");
    let status = replica.wait_exit(EXIT_TIMEOUT);

    assert_eq!(
        status.code(),
        Some(0),
        "a replica that already serves Raft must treat SIGTERM as a clean stop, got {status}; \
         stderr:\n{}",
        replica.stderr()
    );
}

#[test]
fn no_prompt_ignores_stdin() {
    let tmp = temp_dir();
    let (mut replica, _) = no_prompt_replica(&tmp);

    // Input and its end are not commands without a prompt: it keeps running.
    let reply = replica.try_send_within("status", Duration::from_secs(2));
    assert!(reply.is_err(), "--no-prompt answered a command: {reply:?}");
    replica.close_stdin();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        replica.still_running(),
        "--no-prompt stopped at end of input: {}",
        replica.stderr()
    );

    harness::signal(replica.pid(), "TERM");
    assert_eq!(
        replica.wait_exit(EXIT_TIMEOUT).code(),
        Some(0),
        "{}",
        replica.stderr()
    );
}

/// Sends `bytes` to a Raft port and reads until the replica closes the
/// connection (or 5 s pass). Returns what came back.
fn raft_port_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn frame(json: &str) -> Vec<u8> {
    let mut bytes = (json.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

#[test]
fn garbage_on_the_raft_port_is_refused_without_harm() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("before", "garbage");
    let port = port_of(&cluster.peers, leader);
    let before = cluster.replica(leader).status();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("a truncated frame", {
            let mut bytes = 100u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(b"{\"Hello\":");
            bytes
        }),
        (
            "a frame over the size limit",
            u32::MAX.to_be_bytes().to_vec(),
        ),
        ("a frame that is not JSON", frame("not json at all")),
        (
            "a request before hello",
            frame(
                r#"{"Vote":{"vote":{"leader_id":{"term":99,"node_id":2},"committed":false},"last_log_id":null}}"#,
            ),
        ),
        (
            "a hello from another cluster",
            frame(r#"{"Hello":{"cluster_id":"someone-else","from":2,"to":1}}"#),
        ),
        (
            "a hello naming the wrong replica",
            frame(&format!(
                r#"{{"Hello":{{"cluster_id":"x","from":9,"to":{}}}}}"#,
                leader + 10
            )),
        ),
    ];
    for (what, bytes) in cases {
        let answer = raft_port_exchange(port, &bytes);
        let text = String::from_utf8_lossy(&answer);
        assert!(!text.contains("Welcome"), "{what} was welcomed: {text}");
        if what.starts_with("a hello") || what.ends_with("before hello") {
            assert!(text.contains("Refused"), "{what} got {text:?}");
        }
    }

    // The replica is unharmed: still the leader of the same term (the vote
    // request for term 99 was not heard), still writing.
    assert!(cluster.replica(leader).still_running());
    let status = cluster.replica(leader).status();
    assert_eq!(status.role(), "leader", "{status}");
    assert_eq!(status.term(), before.term(), "{status}");
    assert!(status.applied() >= before.applied());
    cluster.replica(leader).put("after", "garbage");
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("before"), "garbage", "replica {id}");
        assert_eq!(cluster.replica(id).get("after"), "garbage", "replica {id}");
    }
}

/// A frame around `body`: its length, then the bytes.
fn binary_frame(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

/// What came back after the first frame (the answer to the hello).
fn after_first_frame(answer: &[u8]) -> &[u8] {
    let Some((length, rest)) = answer.split_first_chunk::<4>() else {
        return &[];
    };
    rest.get(u32::from_be_bytes(*length) as usize..)
        .unwrap_or(&[])
}

#[test]
fn malformed_binary_frames_on_the_raft_port_are_refused_without_harm() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(leader).put("before", "binary");
    let port = port_of(&cluster.peers, leader);
    let before = cluster.replica(leader).status();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut cluster.redis(leader, QUICK))
        .expect("INFO answers");
    let cluster_id = info
        .lines()
        .find_map(|line| line.strip_prefix("cluster_id:"))
        .expect("INFO names the cluster")
        .trim()
        .to_string();
    let hello = frame(&format!(
        r#"{{"Hello":{{"cluster_id":"{cluster_id}","from":9,"to":{leader},"frames":["binary"]}}}}"#
    ));

    // The binary frames' variants, in `PeerRequest`'s order: 4 is a vote
    // request, 8 a proposal, 9 a read-index request.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..64u32).map(|i| (i * 37 + 11) as u8).collect(),
        ),
        ("an empty body", vec![]),
        ("an unknown variant", vec![200]),
        ("a vote request cut short", vec![4, 99, 2]),
        ("a request with bytes left over", vec![9, 0]),
        (
            "a proposal whose ops claim 4 GiB",
            vec![8, 3, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("a proposal whose ops are not JSON", vec![8, 3, 0, 1, b'{']),
        (
            "a JSON frame where binary was agreed",
            br#""ReadIndex""#.to_vec(),
        ),
    ];
    for (what, body) in cases {
        let bytes = [hello.clone(), binary_frame(&body)].concat();
        let answer = raft_port_exchange(port, &bytes);
        let welcome = String::from_utf8_lossy(&answer[..answer.len().min(64)]);
        assert!(
            welcome.contains(r#"{"Admitted":{"frames":"Binary"}}"#),
            "{what}: {welcome}"
        );
        assert_eq!(after_first_frame(&answer), b"", "{what} was answered");
    }
    // A well-formed binary request is answered.
    let answer = raft_port_exchange(port, &[hello, binary_frame(&[9])].concat());
    assert!(
        !after_first_frame(&answer).is_empty(),
        "read-index unanswered"
    );

    // The replica is unharmed: still the leader of the same term, writing.
    assert!(cluster.replica(leader).still_running());
    let status = cluster.replica(leader).status();
    assert_eq!(status.role(), "leader", "{status}");
    assert_eq!(status.term(), before.term(), "{status}");
    cluster.replica(leader).put("after", "binary");
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).get("before"), "binary", "replica {id}");
        assert_eq!(cluster.replica(id).get("after"), "binary", "replica {id}");
    }
}

#[test]
fn join_without_a_cluster_id_is_refused() {
    let peers = fresh_peers(1);
    let error = assert_bad_flags(&[
        "--replica-id",
        "1",
        "--peers",
        &peers,
        "--join",
        "127.0.0.1:1",
    ]);
    assert!(error.contains("--cluster-id"), "{error}");
}

#[test]
fn bad_membership_changes_are_refused_and_change_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let reply = cluster.replica(follower).send("add-replica 2 127.0.0.1:1");
    assert!(
        is_error(&reply) && reply.contains("already a member"),
        "{reply}"
    );
    // Removing a replica that is not a member is done already (so that a
    // retry is safe), and the answer says so.
    let reply = cluster.replica(follower).send("remove-replica 9");
    assert_eq!(reply, "OK members=1,2,3 (replica 9 is not a member)");
    for id in 1..=3 {
        assert_eq!(cluster.replica(id).status().get("members"), "1,2,3");
    }
}

/// A password file that cannot serve is refused before anything is written.
#[test]
fn a_missing_or_empty_password_file_is_refused_with_one_line() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    let empty = tmp.path().join("empty-password");
    std::fs::write(&empty, "\n").unwrap();
    let missing = tmp.path().join("no-such-file");
    for (file, says) in [
        (&empty, "empty password"),
        (&missing, "cannot read --password-file"),
    ] {
        let file = file.to_string_lossy().into_owned();
        let data = tmp.path().join("data");
        let outcome = run_once(
            &replica_args(1, &data, &peers, &["--password-file", &file]),
            QUICK,
        );
        let error = assert_refused(&outcome, 1);
        assert!(error.contains(says), "{error}");
        assert!(!data.exists(), "a refused start created {}", data.display());
    }
}

/// A cluster secret that cannot serve (from the file or the environment) is
/// refused in one line before anything is written.
#[test]
fn a_missing_empty_or_short_cluster_secret_is_refused_with_one_line() {
    let tmp = temp_dir();
    let peers = fresh_peers(3);
    let data = tmp.path().join("data");
    let file = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let empty = file("empty.secret", "\n");
    let short = file("short.secret", "tiny\n");
    let two_lines = file("two-lines.secret", "0123456789abcdef\n0123456789abcdef\n");
    let missing = tmp
        .path()
        .join("no-such.secret")
        .to_string_lossy()
        .into_owned();
    for (path, says) in [
        (&empty, "holds an empty cluster secret"),
        (&short, "at least 16"),
        (&two_lines, "more than one line"),
        (&missing, "cannot read --cluster-secret-file"),
    ] {
        let outcome = run_once(
            &replica_args(1, &data, &peers, &["--cluster-secret-file", path]),
            QUICK,
        );
        let error = assert_refused(&outcome, 1);
        assert!(error.contains(says), "{error}");
        assert!(!data.exists(), "a refused start created {}", data.display());
    }

    // The same from the environment.
    let output = std::process::Command::new(harness::BIN)
        .args(replica_args(1, &data, &peers, &[]))
        .env("EXAMPLE_ONDISK_CLUSTER_SECRET", "")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the binary");
    let outcome = Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let error = assert_refused(&outcome, 1);
    assert!(
        error.contains("EXAMPLE_ONDISK_CLUSTER_SECRET holds an empty cluster secret"),
        "{error}"
    );
    assert!(!data.exists(), "a refused start created {}", data.display());
}

// ---------------------------------------------------------------------------
// The backup and restore tools
// ---------------------------------------------------------------------------

/// Runs a tool with `args`, in which `TMP` stands for a fresh temporary
/// folder, and checks it exits 2 with one `error:` line and leaves that
/// folder empty (no backup file, no data folder). Returns that line.
fn assert_bad_tool_flags(args: &[&str]) -> String {
    let tmp = temp_dir();
    let place = tmp.path().display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("TMP", &place)).collect();
    let outcome = run_once(&args, QUICK);
    let error = assert_refused(&outcome, 2);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "flags {args:?} left {left:?}");
    error
}

#[test]
fn bad_backup_flags_are_refused_with_one_line() {
    for (args, says) in [
        (&["backup", "--out", "TMP/b"][..], "--from"),
        (&["backup", "--from", "127.0.0.1:6380"][..], "--out"),
        (
            &["backup", "--from", "nope", "--out", "TMP/b"][..],
            "--from",
        ),
        (
            &["backup", "--from", "127.0.0.1:0", "--out", "TMP/b"][..],
            "port number",
        ),
        (
            &[
                "backup",
                "--from",
                "h:1",
                "--out",
                "TMP/b",
                "--timeout",
                "0",
            ][..],
            "--timeout",
        ),
        (
            &[
                "backup",
                "--from",
                "h:1",
                "--out",
                "TMP/b",
                "--tls-cert-file",
                "c",
            ][..],
            "--tls",
        ),
        (
            &[
                "backup",
                "--from",
                "h:1",
                "--out",
                "TMP/b",
                "--replica-id",
                "1",
            ][..],
            "--replica-id",
        ),
    ] {
        let error = assert_bad_tool_flags(args);
        assert!(error.contains(says), "{args:?}: {error}");
    }
}

#[test]
fn bad_restore_flags_are_refused_with_one_line() {
    for (args, says) in [
        (
            &["restore", "--data-dir", "TMP/d", "--replica-id", "1"][..],
            "--from",
        ),
        (
            &["restore", "--from", "TMP/b", "--data-dir", "TMP/d"][..],
            "--replica-id",
        ),
        (
            &[
                "restore",
                "--from",
                "TMP/b",
                "--data-dir",
                "TMP/d",
                "--replica-id",
                "7",
            ][..],
            "not a member",
        ),
        (
            &[
                "restore",
                "--from",
                "TMP/b",
                "--data-dir",
                "TMP/d",
                "--replica-id",
                "1",
                "--peers",
                "1=nope",
            ][..],
            "--peers",
        ),
    ] {
        let error = assert_bad_tool_flags(args);
        assert!(error.contains(says), "{args:?}: {error}");
    }
}

#[test]
fn a_backup_file_that_is_missing_or_not_a_backup_is_refused_with_one_line() {
    let tmp = temp_dir();
    let data = tmp.path().join("data");
    let foreign = tmp.path().join("foreign");
    std::fs::write(&foreign, "SQLite format 3\0 and so on").unwrap();
    let missing = tmp.path().join("missing");
    for (file, says) in [
        (&foreign, "not an example-ondisk snapshot file"),
        (&missing, "cannot read the backup"),
    ] {
        let args = [
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--replica-id",
            "1",
        ];
        let outcome = harness::run_once_str(&args, QUICK);
        let error = assert_refused(&outcome, 1);
        assert!(error.contains(says), "{error}");
        assert!(
            !data.exists(),
            "a refused restore created {}",
            data.display()
        );
    }
}

#[test]
fn the_help_names_the_tools_and_each_tool_has_its_own() {
    let top = harness::run_once_str(&["--help"], QUICK);
    assert_eq!(top.code, Some(0), "{top}");
    assert!(top.stdout.contains("--replica-id"), "{top}");
    assert!(top.stdout.contains("example-ondisk backup --help"), "{top}");
    for tool in ["backup", "restore"] {
        let help = harness::run_once_str(&[tool, "--help"], QUICK);
        assert_eq!(help.code, Some(0), "{help}");
        assert!(help.stdout.contains("--from"), "{tool}: {help}");
    }
}

#[test]
fn a_client_port_that_is_taken_is_refused_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let peers = fresh_peers(1);
    let tmp = temp_dir();
    let outcome = run_once(
        &replica_args(1, tmp.path(), &peers, &["--client-addr", &addr]),
        QUICK,
    );
    assert_eq!(outcome.code, Some(1), "{outcome}");
    let errors = error_lines(&outcome);
    assert_eq!(errors.len(), 1, "{outcome}");
    assert!(
        errors[0].contains(&format!("cannot serve clients on {addr}"))
            && errors[0].contains("--client-addr"),
        "{outcome}"
    );
}
