//! Redis semantics that real clients rely on, through the `redis` crate in
//! RESP2 and RESP3 against a real three-replica cluster: transactions, WATCH,
//! conditional writes, counters, expiry decided by the leader's clock, SCAN,
//! and sixteen databases.

mod harness;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};
use redis::{Connection, Value};

/// How long a test waits for something that needs an election or a catch-up.
const SETTLE: Duration = Duration::from_secs(30);

/// Debian's libfaketime, for a replica whose wall clock is off.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn connect_to(url: String) -> Connection {
    harness::redis_connection(&url, SETTLE)
}

fn connect(port: u16) -> Connection {
    connect_to(format!("redis://127.0.0.1:{port}/"))
}

fn connect_resp3(port: u16) -> Connection {
    connect_to(format!("redis://127.0.0.1:{port}/?protocol=resp3"))
}

fn run(connection: &mut Connection, words: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(words[0]);
    for word in &words[1..] {
        cmd.arg(*word);
    }
    cmd.query(connection)
}

/// Runs a command that must succeed.
fn ok(connection: &mut Connection, words: &[&str]) -> Value {
    run(connection, words).unwrap_or_else(|e| panic!("{} failed: {e}", shown(words)))
}

/// The command for a failure message, each word cut to 60 characters (some
/// tests send values of megabytes).
fn shown(words: &[&str]) -> String {
    let cut: Vec<String> = words
        .iter()
        .map(|w| match w.char_indices().nth(60) {
            Some((at, _)) => format!("{}... ({} bytes)", &w[..at], w.len()),
            None => w.to_string(),
        })
        .collect();
    format!("{cut:?}")
}

fn int(connection: &mut Connection, words: &[&str]) -> i64 {
    match ok(connection, words) {
        Value::Int(n) => n,
        other => panic!("{} answered {other:?}, not an integer", shown(words)),
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn applied_index(connection: &mut Connection) -> u64 {
    harness::settled_applied_index(connection, SETTLE)
}

/// Polls `check` until it holds or `timeout` passes.
fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn resp3_clients_get_resp3_shapes_and_resp2_clients_the_old_ones() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(leader).client_port();
    let mut resp3 = connect_resp3(port);
    let mut resp2 = connect(port);

    assert_eq!(ok(&mut resp3, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(ok(&mut resp3, &["GET", "missing"]), Value::Nil);
    let hello = ok(&mut resp3, &["HELLO", "3"]);
    let Value::Map(fields) = hello else {
        panic!("HELLO 3 answered {hello:?}, not a map");
    };
    assert!(
        fields.contains(&(bulk("proto"), Value::Int(3))),
        "{fields:?}"
    );
    assert!(matches!(
        ok(&mut resp3, &["CONFIG", "GET", "appendonly"]),
        Value::Map(_)
    ));
    // RESP2 gets the flat array Redis sends it.
    assert_eq!(
        ok(&mut resp2, &["CONFIG", "GET", "appendonly"]),
        Value::Array(vec![bulk("appendonly"), bulk("yes")])
    );
    assert_eq!(ok(&mut resp2, &["GET", "k"]), bulk("v"));
    assert_eq!(ok(&mut resp2, &["CLIENT", "SETNAME", "me"]), Value::Okay);
    assert_eq!(ok(&mut resp2, &["CLIENT", "GETNAME"]), bulk("me"));
    // The fields redis-cli --stat reads are in INFO.
    let info: String = redis::cmd("INFO").query(&mut resp2).unwrap();
    for field in [
        "used_memory:",
        "connected_clients:",
        "blocked_clients:",
        "total_commands_processed:",
        "total_connections_received:",
        "instantaneous_ops_per_sec:",
        "db0:keys=1,expires=0",
    ] {
        assert!(info.contains(field), "INFO lacks {field}:\n{info}");
    }
}

#[test]
fn a_transaction_is_one_entry_applied_all_or_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    // The leader has applied an entry before it answers for it.
    let mut at_leader = connect(cluster.replica(leader).client_port());

    let before = applied_index(&mut at_leader);
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .cmd("INCR")
        .arg("t")
        .cmd("INCRBY")
        .arg("counter")
        .arg(5)
        .cmd("GET")
        .arg("t")
        .query(&mut c)
        .expect("the transaction runs");
    assert_eq!(
        replies,
        vec![Value::Okay, Value::Int(2), Value::Int(5), bulk("2")]
    );
    // Forwarded from a follower, and still one log entry.
    let after = applied_index(&mut at_leader);
    assert_eq!(
        after,
        before + 1,
        "a transaction took {} entries",
        after - before
    );

    // A command refused while queueing aborts the whole transaction.
    ok(&mut c, &["MULTI"]);
    assert_eq!(
        ok(&mut c, &["SET", "t", "100"]),
        Value::SimpleString("QUEUED".into())
    );
    assert!(run(&mut c, &["SET", "only-a-key"]).is_err());
    let error = run(&mut c, &["EXEC"]).expect_err("EXEC must fail after a refused command");
    assert_eq!(error.code(), Some("EXECABORT"), "{error}");
    assert_eq!(ok(&mut c, &["GET", "t"]), bulk("2"));
    assert_eq!(applied_index(&mut at_leader), after);

    // A runtime error fails only its own command, as in Redis.
    ok(&mut c, &["MULTI"]);
    for words in [
        &["SET", "text", "abc"][..],
        &["INCR", "text"],
        &["SET", "after", "yes"],
    ] {
        assert_eq!(ok(&mut c, words), Value::SimpleString("QUEUED".into()));
    }
    // The client library reports the failed command of the EXEC reply; the
    // other two ran.
    let error = run(&mut c, &["EXEC"]).expect_err("INCR of text fails");
    assert!(error.to_string().contains("not an integer"), "{error}");
    assert_eq!(ok(&mut c, &["GET", "after"]), bulk("yes"));
    assert_eq!(ok(&mut c, &["GET", "text"]), bulk("abc"));

    // EXEC and DISCARD without MULTI are errors, and nothing is left queued.
    assert!(run(&mut c, &["EXEC"]).is_err());
    assert!(run(&mut c, &["DISCARD"]).is_err());
    assert_eq!(ok(&mut c, &["MULTI"]), Value::Okay);
    assert_eq!(
        ok(&mut c, &["SET", "discarded", "1"]),
        Value::SimpleString("QUEUED".into())
    );
    assert_eq!(ok(&mut c, &["DISCARD"]), Value::Okay);
    assert_eq!(ok(&mut c, &["EXISTS", "discarded"]), Value::Int(0));
}

#[test]
fn watch_aborts_exec_when_any_replica_wrote_the_key_since() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut watcher = connect(cluster.replica(follower).client_port());
    let mut other = connect(cluster.replica(leader).client_port());

    ok(&mut other, &["SET", "balance", "10"]);
    // Unchanged: the transaction runs.
    assert_eq!(ok(&mut watcher, &["WATCH", "balance"]), Value::Okay);
    ok(&mut watcher, &["MULTI"]);
    ok(&mut watcher, &["INCRBY", "balance", "5"]);
    assert_eq!(
        ok(&mut watcher, &["EXEC"]),
        Value::Array(vec![Value::Int(15)])
    );

    // Written at another replica after the WATCH: EXEC answers nil.
    ok(&mut watcher, &["WATCH", "balance"]);
    ok(&mut other, &["SET", "balance", "100"]);
    ok(&mut watcher, &["MULTI"]);
    ok(&mut watcher, &["INCRBY", "balance", "5"]);
    assert_eq!(ok(&mut watcher, &["EXEC"]), Value::Nil);
    assert_eq!(ok(&mut watcher, &["GET", "balance"]), bulk("100"));

    // A key that did not exist and was created meanwhile counts as written.
    ok(&mut watcher, &["WATCH", "fresh"]);
    ok(&mut other, &["SET", "fresh", "x"]);
    ok(&mut watcher, &["MULTI"]);
    ok(&mut watcher, &["SET", "fresh", "mine"]);
    assert_eq!(ok(&mut watcher, &["EXEC"]), Value::Nil);
    assert_eq!(ok(&mut watcher, &["GET", "fresh"]), bulk("x"));

    // UNWATCH forgets, and EXEC clears the watch for the next transaction.
    ok(&mut watcher, &["WATCH", "balance"]);
    ok(&mut other, &["SET", "balance", "1"]);
    ok(&mut watcher, &["UNWATCH"]);
    ok(&mut watcher, &["MULTI"]);
    ok(&mut watcher, &["GET", "balance"]);
    assert_eq!(ok(&mut watcher, &["EXEC"]), Value::Array(vec![bulk("1")]));
}

#[test]
fn conditional_writes_and_counters_follow_redis() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(leader).client_port());

    // A lock: SET NX PX, refused while held.
    assert_eq!(
        ok(&mut c, &["SET", "lock", "me", "NX", "PX", "30000"]),
        Value::Okay
    );
    assert_eq!(
        ok(&mut c, &["SET", "lock", "you", "NX", "PX", "30000"]),
        Value::Nil
    );
    let pttl = int(&mut c, &["PTTL", "lock"]);
    assert!((29_000..=30_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(
        ok(&mut c, &["SET", "lock", "me2", "XX", "KEEPTTL", "GET"]),
        bulk("me")
    );
    assert!(int(&mut c, &["PTTL", "lock"]) > 29_000);
    assert_eq!(int(&mut c, &["SETNX", "lock", "x"]), 0);
    assert_eq!(int(&mut c, &["MSETNX", "lock", "x", "other", "y"]), 0);
    assert_eq!(ok(&mut c, &["EXISTS", "other"]), Value::Int(0));

    assert_eq!(int(&mut c, &["INCR", "n"]), 1);
    assert_eq!(int(&mut c, &["DECRBY", "n", "11"]), -10);
    assert_eq!(ok(&mut c, &["INCRBYFLOAT", "n", "0.25"]), bulk("-9.75"));
    assert!(run(&mut c, &["INCR", "n"]).is_err());
    assert_eq!(int(&mut c, &["APPEND", "s", "Hello"]), 5);
    assert_eq!(int(&mut c, &["SETRANGE", "s", "0", "J"]), 5);
    assert_eq!(ok(&mut c, &["GETRANGE", "s", "1", "-1"]), bulk("ello"));
    assert_eq!(int(&mut c, &["STRLEN", "s"]), 5);
    assert_eq!(ok(&mut c, &["GETDEL", "s"]), bulk("Jello"));
    assert_eq!(
        ok(&mut c, &["TYPE", "s"]),
        Value::SimpleString("none".into())
    );
    assert_eq!(
        ok(&mut c, &["TYPE", "n"]),
        Value::SimpleString("string".into())
    );
    assert_eq!(ok(&mut c, &["RENAME", "n", "m"]), Value::Okay);
    assert_eq!(int(&mut c, &["COPY", "m", "m2"]), 1);
    assert_eq!(ok(&mut c, &["GET", "m2"]), bulk("-9.75"));

    // Sixteen databases, each its own keyspace.
    let mut db1 = connect_to(format!(
        "redis://127.0.0.1:{}/1",
        cluster.replica(leader).client_port()
    ));
    assert_eq!(ok(&mut db1, &["GET", "m"]), Value::Nil);
    ok(&mut db1, &["SET", "m", "in db 1"]);
    assert_eq!(ok(&mut c, &["GET", "m"]), bulk("-9.75"));
    assert_eq!(int(&mut db1, &["DBSIZE"]), 1);
    assert_eq!(ok(&mut db1, &["FLUSHDB"]), Value::Okay);
    assert_eq!(int(&mut db1, &["DBSIZE"]), 0);
    assert!(int(&mut c, &["DBSIZE"]) > 0);
    assert_eq!(ok(&mut c, &["FLUSHALL"]), Value::Okay);
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);
}

#[test]
fn scan_returns_every_key_and_its_cursor_survives_a_leader_change() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("item:{i}")).arg(i).ignore();
    }
    pipe.cmd("SET").arg("other").arg("x").ignore();
    pipe.query::<()>(&mut c).expect("the writes succeed");

    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("item:*")
            .arg("COUNT")
            .arg(40)
            .query(&mut c)
            .expect("SCAN answers");
        seen.extend(keys);
        calls += 1;
        if calls == 3 {
            cluster.replica(leader).kill();
            cluster.wait_for_leader_among(
                &[follower, cluster.other_than(&[leader, follower])],
                ELECTION_TIMEOUT,
            );
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert!(calls > 3, "SCAN took only {calls} calls");
    assert_eq!(seen.len(), 300, "SCAN missed keys");
    let keys: Vec<String> = redis::cmd("KEYS").arg("item:1?").query(&mut c).unwrap();
    assert_eq!(keys.len(), 10, "{keys:?}");
}

#[test]
fn expired_keys_are_removed_everywhere_by_the_leader() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(leader).client_port());
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg(i)
            .arg("PX")
            .arg(300)
            .ignore();
    }
    pipe.cmd("SET")
        .arg("long")
        .arg("x")
        .arg("EX")
        .arg(600)
        .ignore();
    pipe.query::<()>(&mut c).unwrap();
    assert_eq!(int(&mut c, &["DBSIZE"]), 501);

    // Active expiry removes them through the log: every replica's count and
    // state agree, not merely the leader's.
    let ports: Vec<u16> = (1..=3)
        .map(|id| cluster.replica(id).client_port())
        .collect();
    for port in ports {
        let mut replica = connect(port);
        eventually(SETTLE, "expired keys removed", || {
            int(&mut replica, &["DBSIZE"]) == 1
        });
        assert_eq!(ok(&mut replica, &["GET", "short:7"]), Value::Nil);
        assert!(int(&mut replica, &["TTL", "long"]) > 590);
    }
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

/// Whether Debian's libfaketime is here; the clock tests need it.
fn have_faketime() -> bool {
    if Path::new(LIBFAKETIME).exists() {
        return true;
    }
    eprintln!("skipped: libfaketime is not installed (apt-get install -y faketime)");
    false
}

/// The environment that shifts one replica's wall clock by `offset` (e.g.
/// "+600s"), leaving its timers (the monotonic clock) alone.
fn skewed(offset: &str) -> [(&'static str, String); 3] {
    [
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

#[test]
fn a_follower_with_a_skewed_clock_still_sees_the_leaders_expiry() {
    if !have_faketime() {
        return;
    }
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    // Ten minutes ahead: by its own clock every short TTL has long passed.
    cluster.replica(follower).kill();
    let env = skewed("+600s");
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    cluster.replica(follower).restart_with_env(&vars);
    cluster.wait_for_leader(ELECTION_TIMEOUT);

    let mut at_leader = connect(cluster.replica(leader).client_port());
    let mut at_follower = connect(cluster.replica(follower).client_port());
    ok(&mut at_leader, &["SET", "session", "alive", "EX", "3"]);
    assert_eq!(ok(&mut at_follower, &["GET", "session"]), bulk("alive"));
    let ttl = int(&mut at_follower, &["TTL", "session"]);
    assert!((1..=3).contains(&ttl), "the skewed follower says TTL {ttl}");
    // A write at the skewed follower is stamped by the leader, not by it.
    ok(&mut at_follower, &["SET", "from-follower", "v", "EX", "60"]);
    let ttl = int(&mut at_leader, &["TTL", "from-follower"]);
    assert!((58..=60).contains(&ttl), "TTL {ttl}");

    eventually(SETTLE, "the key expires", || {
        ok(&mut at_follower, &["GET", "session"]) == Value::Nil
    });
    assert_eq!(ok(&mut at_leader, &["GET", "session"]), Value::Nil);
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

#[test]
fn a_ttl_runs_on_across_a_leader_change() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    ok(&mut c, &["SET", "ticket", "x", "PX", "6000"]);
    let set_at = Instant::now();

    cluster.replica(leader).kill();
    let survivors = [follower, cluster.other_than(&[leader, follower])];
    cluster.wait_for_leader_among(&survivors, ELECTION_TIMEOUT);
    cluster.replica(leader).restart();

    if set_at.elapsed() < Duration::from_millis(5000) {
        assert_eq!(ok(&mut c, &["GET", "ticket"]), bulk("x"));
        let pttl = int(&mut c, &["PTTL", "ticket"]);
        let left = 6000 - set_at.elapsed().as_millis() as i64;
        assert!(
            (pttl - left).abs() < 1500,
            "PTTL {pttl} after the leader change, expected about {left}"
        );
    }
    eventually(SETTLE, "the key expires", || {
        ok(&mut c, &["GET", "ticket"]) == Value::Nil
    });
    assert!(set_at.elapsed() >= Duration::from_millis(5900));
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

#[test]
fn values_up_to_the_limit_are_replicated_and_read_back_at_a_follower() {
    // A 32 MiB write takes seconds in a debug build on a loaded machine;
    // this test is about getting it through, not about its speed.
    let mut cluster = Cluster::start_with(3, &["--timeout", "30"]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    // Bytes that are not text travel in the log as base64.
    let largest: Vec<u8> = (0..32 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let text = "x".repeat(4_000_000);
    redis::cmd("SET")
        .arg("largest")
        .arg(&largest)
        .query::<()>(&mut c)
        .expect("a 32 MiB value is accepted");
    ok(&mut c, &["SET", "text", &text]);
    ok(&mut c, &["APPEND", "text", "!"]);
    let back: Vec<u8> = redis::cmd("GET").arg("largest").query(&mut c).unwrap();
    assert!(back == largest, "the 32 MiB value came back changed");
    assert_eq!(int(&mut c, &["STRLEN", "text"]), 4_000_001);
    let over = redis::cmd("APPEND")
        .arg("largest")
        .arg("!")
        .query::<i64>(&mut c);
    assert!(over
        .expect_err("past the limit")
        .to_string()
        .contains("maximum allowed size"),);
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

#[test]
fn a_follower_that_missed_more_large_values_than_one_frame_holds_catches_up() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let behind = cluster.other_than(&[leader]);
    cluster.replica(behind).kill();
    // Ten 8 MiB entries: more than one 64 MiB peer frame, all still in the
    // log (no snapshot yet), so the leader must send them as entries.
    let mut c = connect(cluster.replica(leader).client_port());
    let value = "v".repeat(8 * 1024 * 1024);
    for i in 0..10 {
        ok(&mut c, &["SET", &format!("big{i}"), &value]);
    }
    cluster.replica(behind).restart();
    let sum = cluster.agreed_checksum(&[1, 2, 3], SETTLE);
    assert!(!sum.is_empty());
    let mut at_behind = connect(cluster.replica(behind).client_port());
    assert_eq!(int(&mut at_behind, &["STRLEN", "big9"]), 8 * 1024 * 1024);
}

#[test]
fn expiry_survives_a_restart_and_a_snapshot_install() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-every", "20"]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let lagging = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(leader).client_port());
    ok(&mut c, &["SET", "soon", "x", "PX", "4000"]);
    ok(&mut c, &["SET", "later", "y", "EX", "600"]);
    let set_at = Instant::now();

    // One follower misses enough entries that it must catch up by snapshot:
    // the leader's log is purged past all it holds. openraft purges only when
    // no replication to that follower is in flight, which can come well after
    // the snapshot (on 0.10 a stream to a dead follower holds it until an
    // error ends the stream), so write on until the purge has happened.
    let lagging_last = cluster.replica(lagging).status().number("last_log_index");
    cluster.replica(lagging).kill();
    for i in 0..100 {
        ok(&mut c, &["INCR", &format!("n{}", i % 7)]);
    }
    let deadline = Instant::now() + SETTLE;
    for i in 0.. {
        let first = cluster.replica(leader).status().number("first_log_index");
        if first > lagging_last + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never purged its log past index {lagging_last}"
        );
        ok(&mut c, &["INCR", &format!("n{}", i % 7)]);
        thread::sleep(Duration::from_millis(50));
    }
    cluster.replica(lagging).restart();
    let deadline = Instant::now() + SETTLE;
    while cluster
        .replica(lagging)
        .status()
        .number("snapshots_installed")
        == 0
    {
        assert!(Instant::now() < deadline, "no snapshot was installed");
        thread::sleep(Duration::from_millis(100));
    }
    let mut at_lagging = connect(cluster.replica(lagging).client_port());
    let ttl = int(&mut at_lagging, &["TTL", "later"]);
    assert!((590..=600).contains(&ttl), "TTL after the install: {ttl}");
    if set_at.elapsed() < Duration::from_millis(3500) {
        assert_eq!(ok(&mut at_lagging, &["GET", "soon"]), bulk("x"));
    }

    // A full restart of every replica keeps the expiries too.
    for id in 1..=3 {
        cluster.replica(id).kill();
    }
    for id in 1..=3 {
        cluster.replica(id).restart();
    }
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(lagging).client_port());
    let ttl = int(&mut c, &["TTL", "later"]);
    assert!(
        (580..=600).contains(&ttl),
        "TTL after a full restart: {ttl}"
    );
    eventually(SETTLE, "the short key expires", || {
        ok(&mut c, &["GET", "soon"]) == Value::Nil
    });
    eventually(SETTLE, "the expired key is removed everywhere", || {
        int(&mut c, &["DBSIZE"]) == 8
    });
    cluster.agreed_checksum(&[1, 2, 3], SETTLE);
}

#[test]
fn flushall_empties_at_once_and_the_leader_sweeps_the_records_away() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(leader).client_port());
    for chunk in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let key = format!("k:{chunk}:{i}");
            pipe.cmd("SET").arg(&key).arg(i).arg("EX").arg(600).ignore();
            pipe.cmd("SET")
                .arg(format!("p:{chunk}:{i}"))
                .arg(i)
                .ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
    ok(&mut c, &["SELECT", "3"]);
    ok(&mut c, &["SET", "in-db-3", "x"]);
    ok(&mut c, &["SELECT", "0"]);
    assert_eq!(int(&mut c, &["DBSIZE"]), 20_000);

    assert_eq!(ok(&mut c, &["FLUSHALL"]), Value::Okay);
    let mut f = connect(cluster.replica(follower).client_port());
    assert_eq!(int(&mut f, &["DBSIZE"]), 0);
    assert_eq!(ok(&mut f, &["GET", "p:3:7"]), Value::Nil);
    assert_eq!(ok(&mut f, &["KEYS", "*"]), Value::Array(vec![]));
    assert_eq!(ok(&mut f, &["RANDOMKEY"]), Value::Nil);
    ok(&mut f, &["SELECT", "3"]);
    assert_eq!(int(&mut f, &["EXISTS", "in-db-3"]), 0);
    ok(&mut f, &["SELECT", "0"]);
    // A flushed key written again starts afresh: no old value, no old TTL.
    assert_eq!(int(&mut f, &["INCR", "k:1:1"]), 1);
    assert_eq!(int(&mut f, &["TTL", "k:1:1"]), -1);

    // The records themselves go through the log, on every replica alike,
    // until only the one written since is stored.
    let deadline = Instant::now() + SETTLE;
    loop {
        let sum = cluster.agreed_checksum(&[1, 2, 3], SETTLE);
        if sum.contains(" keys=1 ") {
            break;
        }
        assert!(Instant::now() < deadline, "stale records stayed: {sum}");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(int(&mut f, &["DBSIZE"]), 1);
}

/// The prompt is a client like any other: the port's connection commands,
/// transactions, WATCH and SELECT work there through the same session code,
/// read with redis-cli's quoting and answered as redis-cli prints (one line
/// each, since the harness is not a terminal).
#[test]
fn the_prompt_serves_transactions_databases_and_connection_commands() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let leader_port = cluster.replica(leader).client_port();
    let mut other = connect_to(format!("redis://127.0.0.1:{leader_port}/1"));
    let prompt = cluster.replica(follower);
    prompt.send_until_ok("put warm up", SETTLE);

    assert_eq!(prompt.send("PING"), "PONG");
    assert_eq!(prompt.send(r#"echo "hello there""#), r#""hello there""#);
    assert_eq!(
        prompt.send("select 16"),
        "(error) ERR DB index is out of range"
    );
    // SELECT gives the prompt a database of its own; put/get/delete use it.
    assert_eq!(prompt.send("select 1"), "OK");
    assert_eq!(prompt.send("put k in db one"), "OK");
    assert_eq!(prompt.send("get k"), "in db one");
    assert_eq!(ok(&mut other, &["GET", "k"]), bulk("in db one"));

    // A transaction: queued at the prompt, then one entry, answers in order.
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("set a 1"), "QUEUED");
    assert_eq!(prompt.send("incr a"), "QUEUED");
    assert_eq!(prompt.send("put b two words"), "QUEUED");
    assert_eq!(prompt.send("ping"), "QUEUED");
    assert_eq!(prompt.send("exec"), "1) OK 2) (integer) 2 3) OK 4) PONG");
    assert_eq!(ok(&mut other, &["GET", "b"]), bulk("two words"));
    // DISCARD drops what was queued.
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("set a 100"), "QUEUED");
    assert_eq!(prompt.send("discard"), "OK");
    assert_eq!(prompt.send("get a"), "2");
    // WATCH at the prompt, a write at another replica: EXEC runs nothing.
    assert_eq!(prompt.send("watch a"), "OK");
    ok(&mut other, &["SET", "a", "5"]);
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("incr a"), "QUEUED");
    assert_eq!(prompt.send("exec"), "(nil)");
    assert_eq!(prompt.send("get a"), "5");
    // A command refused while queueing aborts the transaction.
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("incr a"), "QUEUED");
    assert_eq!(
        prompt.send("set a"),
        "(error) ERR wrong number of arguments for 'set' command"
    );
    assert_eq!(
        prompt.send("exec"),
        "(error) EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(prompt.send("get a"), "5");
    // SAVE may not be queued (Redis's no-multi), CONFIG SET fails at EXEC.
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("set foo bar"), "QUEUED");
    assert_eq!(
        prompt.send("save"),
        "(error) ERR Command not allowed inside a transaction"
    );
    assert_eq!(
        prompt.send("exec"),
        "(error) EXECABORT Transaction discarded because of previous errors."
    );
    assert_eq!(prompt.send("get foo"), "(nil)");
    assert_eq!(prompt.send("multi"), "OK");
    assert_eq!(prompt.send("set foo bar"), "QUEUED");
    assert_eq!(prompt.send("config set maxmemory bla"), "QUEUED");
    assert_eq!(
        prompt.send("exec"),
        "1) OK 2) (error) ERR CONFIG SET failed (possibly related to argument 'maxmemory') \
         - argument must be a memory value"
    );
    assert_eq!(prompt.send("get foo"), "bar");

    // The connection's own commands.
    assert_eq!(prompt.send("client setname me"), "OK");
    assert_eq!(prompt.send("client getname"), r#""me""#);
    let info = prompt.send("info keyspace");
    assert!(info.contains(r"db1:keys=4,expires=0"), "{info}");
    assert_eq!(prompt.send("save"), "OK");
    let lastsave = prompt.send("lastsave");
    let seconds: u64 = lastsave
        .strip_prefix("(integer) ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("LASTSAVE answered {lastsave}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(seconds.abs_diff(now) < 60, "LASTSAVE {seconds}, now {now}");
    assert_eq!(prompt.send("select 0"), "OK");
    assert_eq!(prompt.send("get k"), "(nil)");
    assert_eq!(
        prompt.send("backup"),
        "(error) ERR BACKUP sends the whole state to a client; use `example-ondisk backup`"
    );

    // SHUTDOWN typed at the prompt stops this replica as `exit` does.
    assert_eq!(prompt.send("shutdown"), "OK");
    let exit = prompt.wait_own_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code(),
        Some(0),
        "SHUTDOWN should end it cleanly: {exit}"
    );
    assert_eq!(ok(&mut other, &["GET", "a"]), bulk("5"));
}

/// CONFIG SET, SAVE, BGSAVE, LASTSAVE and SHUTDOWN through a client library,
/// as Redis answers them; SHUTDOWN of the leader hands leadership over first.
#[test]
fn server_commands_answer_as_redis_does_and_shutdown_stops_the_replica() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());

    // Redis's "MULTI with config error": EXEC holds OK for the SET and the
    // CONFIG SET's error in its place.
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "foo", "bar"]);
    ok(&mut c, &["CONFIG", "SET", "maxmemory", "bla"]);
    let error = run(&mut c, &["EXEC"]).expect_err("the CONFIG SET fails");
    assert!(error.to_string().contains("CONFIG SET failed"), "{error}");
    assert_eq!(ok(&mut c, &["GET", "foo"]), bulk("bar"));
    let unknown = run(&mut c, &["CONFIG", "SET", "nosuch", "1"]).unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("Unknown option or number of arguments for CONFIG SET - 'nosuch'"),
        "{unknown}"
    );
    assert_eq!(
        ok(&mut c, &["CONFIG", "SET", "appendonly", "yes"]),
        Value::Okay
    );
    let refused = run(&mut c, &["CONFIG", "SET", "appendonly", "no"]).unwrap_err();
    assert!(refused.to_string().contains("fsynced"), "{refused}");

    // SAVE and BGSAVE: everything acknowledged is on disk already.
    let before = int(&mut c, &["LASTSAVE"]);
    assert_eq!(ok(&mut c, &["SAVE"]), Value::Okay);
    assert_eq!(
        ok(&mut c, &["BGSAVE"]),
        Value::SimpleString("Background saving started".into())
    );
    let after = int(&mut c, &["LASTSAVE"]);
    assert!(
        after >= before,
        "LASTSAVE went back from {before} to {after}"
    );
    let persistence: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(
        persistence.contains("rdb_bgsave_in_progress:0")
            && persistence.contains(&format!("rdb_last_save_time:{after}")),
        "{persistence}"
    );

    // CONFIG RESETSTAT: INFO's counters start again.
    let processed = |c: &mut Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(c).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_commands_processed in {info}"))
    };
    assert!(processed(&mut c) > 10);
    assert_eq!(ok(&mut c, &["CONFIG", "RESETSTAT"]), Value::Okay);
    assert!(processed(&mut c) <= 2);

    // Redis's "MULTI with SAVE" and "MULTI with SHUTDOWN".
    for command in ["SAVE", "SHUTDOWN"] {
        ok(&mut c, &["DEL", "foo"]);
        ok(&mut c, &["MULTI"]);
        ok(&mut c, &["SET", "foo", "bar"]);
        let refused = run(&mut c, &[command]).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("Command not allowed inside a transaction"),
            "{command}: {refused}"
        );
        let aborted = run(&mut c, &["EXEC"]).unwrap_err();
        assert_eq!(aborted.code(), Some("EXECABORT"), "{aborted}");
        assert_eq!(ok(&mut c, &["GET", "foo"]), Value::Nil);
    }
    let abort = run(&mut c, &["SHUTDOWN", "ABORT"]).unwrap_err();
    assert!(
        abort.to_string().contains("No shutdown in progress"),
        "{abort}"
    );
    assert!(run(&mut c, &["SHUTDOWN", "SAVE", "NOSAVE"]).is_err());
    assert!(cluster.replica(follower).is_running());

    // SHUTDOWN at the leader: no reply, the replica hands over and exits.
    ok(&mut c, &["SET", "before-shutdown", "1"]);
    let term_before = cluster.replica(leader).status().term();
    let mut at_leader = connect(cluster.replica(leader).client_port());
    let _ = run(&mut at_leader, &["SHUTDOWN", "NOSAVE"]);
    let exit = cluster
        .replica(leader)
        .wait_own_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code(),
        Some(0),
        "SHUTDOWN should end it cleanly: {exit}"
    );
    let log = std::fs::read_to_string(cluster.replica(leader).dir.join("replica.log")).unwrap();
    assert!(
        log.contains("SHUTDOWN from client") && log.contains("handed leadership to replica"),
        "the leader did not stop by hand-over; its log ends:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let successor = cluster.wait_for_leader_among(&others, ELECTION_TIMEOUT);
    assert_eq!(cluster.replica(successor).status().term(), term_before + 1);
    assert_eq!(ok(&mut c, &["GET", "before-shutdown"]), bulk("1"));
}
