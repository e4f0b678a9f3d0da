//! The Redis-protocol client port, driven by a real Redis client library
//! (`redis`), by raw bytes for what a library would never send, and by
//! `redis-cli` where it is installed.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};
use redis::{Connection, Value};

/// How long a test waits for something that needs an election or a catch-up.
const SETTLE: Duration = Duration::from_secs(30);

fn connect(port: u16) -> Connection {
    harness::redis_connection(&format!("redis://127.0.0.1:{port}/"), SETTLE)
}

fn command(connection: &mut Connection, words: &[&[u8]]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(words[0]).expect("command names are text"));
    for word in &words[1..] {
        cmd.arg(*word);
    }
    cmd.query(connection)
}

/// Runs a command that must succeed.
fn ok(connection: &mut Connection, words: &[&str]) -> Value {
    let bytes: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    command(connection, &bytes).unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

/// Runs a command that must be refused; returns the error text.
fn refused(connection: &mut Connection, words: &[&str]) -> String {
    let bytes: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
    match command(connection, &bytes) {
        Ok(value) => panic!("{words:?} should have been refused, got {value:?}"),
        Err(e) => e.to_string(),
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// The `field:value` lines of an INFO reply.
fn info_field(connection: &mut Connection, field: &str) -> String {
    let text = match ok(connection, &["INFO"]) {
        Value::BulkString(bytes) => String::from_utf8(bytes).expect("INFO is text"),
        other => panic!("INFO answered {other:?}"),
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO has no {field}:\n{text}"))
        .trim()
        .to_string()
}

/// Sends raw bytes and reads what comes back until the server closes the
/// connection or `timeout` passes.
fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the client port");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    // The server may close before reading everything we send: ignore write errors.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[test]
fn each_command_answers_as_redis_does() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(leader).client_port());

    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    assert_eq!(ok(&mut c, &["PING", "hi"]), bulk("hi"));
    assert_eq!(ok(&mut c, &["ECHO", "hello"]), bulk("hello"));
    assert_eq!(ok(&mut c, &["SELECT", "0"]), Value::Okay);

    assert_eq!(ok(&mut c, &["GET", "missing"]), Value::Nil);
    assert_eq!(ok(&mut c, &["SET", "k1", "v1"]), Value::Okay);
    assert_eq!(ok(&mut c, &["SET", "k1", "v1 again"]), Value::Okay);
    assert_eq!(ok(&mut c, &["GET", "k1"]), bulk("v1 again"));
    assert_eq!(ok(&mut c, &["MSET", "k2", "v2", "k3", "v3"]), Value::Okay);
    assert_eq!(
        ok(&mut c, &["MGET", "k1", "nope", "k3"]),
        Value::Array(vec![bulk("v1 again"), Value::Nil, bulk("v3")])
    );
    // A key named twice counts twice, as in Redis.
    assert_eq!(ok(&mut c, &["EXISTS", "k1", "k1", "nope"]), Value::Int(2));
    assert_eq!(ok(&mut c, &["DEL", "k1", "k2", "nope"]), Value::Int(2));
    assert_eq!(ok(&mut c, &["DEL", "k1"]), Value::Int(0));
    assert_eq!(ok(&mut c, &["GET", "k1"]), Value::Nil);
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(1));

    // Keys and values are bytes, not text.
    let binary: &[u8] = b"\x00\xff\r\n\x80 bytes";
    assert_eq!(
        command(&mut c, &[b"SET", binary, binary]).unwrap(),
        Value::Okay
    );
    assert_eq!(
        command(&mut c, &[b"GET", binary]).unwrap(),
        Value::BulkString(binary.to_vec())
    );

    // INFO has the Raft section and a keyspace count.
    assert_eq!(info_field(&mut c, "role"), "leader");
    assert_eq!(info_field(&mut c, "leader"), leader.to_string());
    assert_eq!(info_field(&mut c, "members"), "1,2,3");
    assert_eq!(info_field(&mut c, "db0"), "keys=2,expires=0,avg_ttl=0");
    let applied: u64 = info_field(&mut c, "applied_index").parse().unwrap();
    let committed: u64 = info_field(&mut c, "commit_index").parse().unwrap();
    assert!(
        applied >= 5 && committed >= applied,
        "applied {applied} committed {committed}"
    );
    for field in [
        "term",
        "first_log_index",
        "snapshot_index",
        "snapshot_bytes",
    ] {
        info_field(&mut c, field);
    }
    let checksum = match ok(&mut c, &["CHECKSUM"]) {
        Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        other => panic!("CHECKSUM answered {other:?}"),
    };
    assert!(checksum.contains("keys=2 digest="), "{checksum}");

    // Refusals are errors, and the connection stays usable after each.
    for (words, says) in [
        (&["SET", "k", "v", "EX", "0"][..], "invalid expire time"),
        (&["SET", "k", "v", "NX", "XX"], "syntax error"),
        (&["GET"], "wrong number of arguments"),
        (&["MSET", "a"], "wrong number of arguments"),
        (&["FLUSHEVERYTHING"], "unknown command"),
        (&["HELLO", "4"], "NOPROTO"),
        (&["SELECT", "16"], "out of range"),
    ] {
        let error = refused(&mut c, words);
        assert!(error.contains(says), "{words:?} gave {error}");
        assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    }
    let too_long = "v".repeat(32 * 1024 * 1024 + 1);
    assert!(refused(&mut c, &["SET", "big", &too_long]).contains("values are at most"));
    assert_eq!(ok(&mut c, &["GET", "big"]), Value::Nil);
}

#[test]
fn writes_at_a_follower_are_forwarded_and_reads_are_linearizable_everywhere() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut at_follower = connect(cluster.replica(followers[0]).client_port());
    let mut at_other = connect(cluster.replica(followers[1]).client_port());

    for round in 0..20 {
        let value = format!("value {round}");
        assert_eq!(
            ok(&mut at_follower, &["SET", "shared", &value]),
            Value::Okay
        );
        // Read at once at the other follower: it must not serve a stale value.
        assert_eq!(ok(&mut at_other, &["GET", "shared"]), bulk(&value));
    }
    assert_eq!(info_field(&mut at_follower, "role"), "follower");

    // The prompt and the port share one path: each sees the other's writes.
    cluster.replica(leader).put("from-prompt", "typed");
    assert_eq!(ok(&mut at_other, &["GET", "from-prompt"]), bulk("typed"));
    assert_eq!(
        ok(&mut at_other, &["SET", "from-port", "sent"]),
        Value::Okay
    );
    assert_eq!(cluster.replica(followers[0]).get("from-port"), "sent");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_see_each_other() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());

    let answers: Vec<Value> = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg("1")
        .cmd("GET")
        .arg("p")
        .cmd("SET")
        .arg("p")
        .arg("2")
        .cmd("SET")
        .arg("p")
        .arg("3")
        .cmd("GET")
        .arg("p")
        .cmd("PING")
        .cmd("DEL")
        .arg("p")
        .cmd("GET")
        .arg("p")
        .cmd("EXISTS")
        .arg("p")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("the pipeline failed: {e}"));
    // (An error inside a pipeline is checked with raw bytes in the bad-frames
    // test: redis-rs turns it into a failure of the whole query.)
    assert_eq!(answers.len(), 9, "{answers:?}");
    assert_eq!(answers[0], Value::Okay);
    assert_eq!(answers[1], bulk("1"));
    assert_eq!(answers[4], bulk("3"));
    assert_eq!(answers[5], Value::SimpleString("PONG".into()));
    assert_eq!(answers[6], Value::Int(1));
    assert_eq!(answers[7], Value::Nil);
    assert_eq!(answers[8], Value::Int(0));

    // A long pipeline of writes: every one is acknowledged and applied.
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("bulk{i}")).arg(i).ignore();
    }
    pipe.cmd("MGET").arg("bulk0").arg("bulk999").arg("bulk1999");
    let (values,): (Vec<String>,) = pipe.query(&mut c).expect("a long pipeline");
    assert_eq!(values, vec!["0", "999", "1999"]);
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(2000));
}

#[test]
fn mset_is_one_log_entry() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(leader).client_port());
    ok(&mut c, &["SET", "warm", "up"]);

    let before: u64 = info_field(&mut c, "last_log_index").parse().unwrap();
    let mut mset = vec!["MSET".to_string()];
    for i in 0..500 {
        mset.push(format!("m{i}"));
        mset.push(format!("value {i}"));
    }
    let words: Vec<&str> = mset.iter().map(String::as_str).collect();
    assert_eq!(ok(&mut c, &words), Value::Okay);
    let after: u64 = info_field(&mut c, "last_log_index").parse().unwrap();
    assert_eq!(
        after,
        before + 1,
        "500 pairs went into {} entries",
        after - before
    );
    assert_eq!(ok(&mut c, &["EXISTS", "m0", "m499"]), Value::Int(2));
}

#[test]
fn bad_frames_get_an_error_and_close_only_their_connection() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(leader).client_port();
    let mut bystander = connect(port);
    ok(&mut bystander, &["SET", "safe", "kept"]);
    let quick = Duration::from_secs(10);

    // Errors the stream can go on after: the connection stays open.
    let (answer, closed) = raw_exchange(
        port,
        b"NOSUCH\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        Duration::from_secs(2),
    );
    assert!(
        answer.starts_with("-ERR unknown command 'NOSUCH'"),
        "{answer:?}"
    );
    assert!(answer.ends_with("+PONG\r\n+PONG\r\n"), "{answer:?}");
    assert!(!closed, "an unknown command must not close the connection");

    // Frames that cannot be resynchronised: an error, then the connection closes.
    let deep_nesting = {
        let mut bytes = b"*1\r\n".repeat(100_000);
        bytes.extend_from_slice(b"$1\r\na\r\n");
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a nested array",
            b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "expected '$', got '*'",
        ),
        ("deep nesting", deep_nesting, "expected '$', got '*'"),
        (
            "a bad length",
            b"*1\r\n$x\r\nPING\r\n".to_vec(),
            "invalid bulk length",
        ),
        (
            "a missing CRLF",
            b"*1\r\n$4\r\nPINGxx".to_vec(),
            "does not end in CRLF",
        ),
        (
            "random bytes",
            b"*\x00\xff\xfe\r\n".to_vec(),
            "invalid multibulk length",
        ),
        (
            "a huge count",
            b"*99999999999\r\n".to_vec(),
            "invalid multibulk length",
        ),
    ];
    for (what, bytes, says) in cases {
        let (answer, closed) = raw_exchange(port, &bytes, quick);
        assert!(
            answer.starts_with("-ERR Protocol error") && answer.contains(says),
            "{what}: {answer:?}"
        );
        assert!(closed, "{what}: the connection should be closed");
    }

    // Frames over the size limit are refused from their header, before the
    // server buffers them.
    let (answer, closed) = raw_exchange(port, b"*2\r\n$3\r\nGET\r\n$999999999\r\n", quick);
    assert!(answer.contains("invalid bulk length"), "{answer:?}");
    assert!(closed);
    let mut oversized = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n".to_vec();
    // The limit is the largest value (32 MiB) and 1 MiB for the rest.
    oversized.extend_from_slice(format!("${}\r\n", 34 << 20).as_bytes());
    oversized.extend(std::iter::repeat_n(b'v', 34 << 20));
    oversized.extend_from_slice(b"\r\n");
    let (answer, closed) = raw_exchange(port, &oversized, quick);
    assert!(answer.contains("Protocol error"), "{answer:?}");
    assert!(closed);

    // Nothing of that reached the state, and other clients never noticed.
    assert_eq!(ok(&mut bystander, &["GET", "safe"]), bulk("kept"));
    assert_eq!(ok(&mut bystander, &["GET", "k"]), Value::Nil);
    assert_eq!(ok(&mut bystander, &["DBSIZE"]), Value::Int(1));
    assert!(cluster.replica(leader).still_running());
}

#[test]
fn every_acknowledged_set_survives_a_leader_kill() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let port = cluster.replica(follower).client_port();

    // Several clients write through a follower, which survives, while the leader is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            thread::spawn(move || {
                let mut c = connect(port);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{writer}-{i}");
                    let value = format!("value of {key}");
                    // An error (no leader yet, unknown outcome) is allowed; an OK is a promise.
                    if let Ok(Value::Okay) =
                        command(&mut c, &[b"SET", key.as_bytes(), value.as_bytes()])
                    {
                        acknowledged.lock().unwrap().push((key, value));
                    }
                    i += 1;
                }
            })
        })
        .collect();

    let wait_for_acks = |at_least: usize| {
        let deadline = Instant::now() + SETTLE;
        while acknowledged.lock().unwrap().len() < at_least {
            assert!(
                Instant::now() < deadline,
                "writes stopped being acknowledged"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_acks(200);
    cluster.replica(leader).kill();
    let before_election = acknowledged.lock().unwrap().len();
    wait_for_acks(before_election + 200);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in survivors {
        let mut c = connect(cluster.replica(id).client_port());
        for chunk in acknowledged.chunks(500) {
            let mut mget = redis::cmd("MGET");
            for (key, _) in chunk {
                mget.arg(key);
            }
            let values: Vec<Option<String>> = mget.query(&mut c).expect("MGET after the kill");
            for ((key, expected), found) in chunk.iter().zip(values) {
                assert_eq!(
                    found.as_deref(),
                    Some(expected.as_str()),
                    "replica {id} lost {key}"
                );
            }
        }
    }
    eprintln!(
        "{} acknowledged writes checked at both survivors",
        acknowledged.len()
    );
}

#[test]
fn redis_cli_works_against_the_port() {
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("skipped: redis-cli is not installed (apt-get install -y redis-tools)");
        return;
    }
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let port = cluster.replica(follower).client_port().to_string();
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "cli-key", "cli value"]), "OK");
    assert_eq!(cli(&["GET", "cli-key"]), "cli value");
    assert_eq!(cli(&["DEL", "cli-key", "other"]), "1");
    assert!(cli(&["INFO", "raft"]).contains("role:follower"));
    assert_eq!(cli(&["SET", "k", "v", "NX"]), "OK");
    assert_eq!(cli(&["SET", "k", "v", "NX"]), "");
    assert_eq!(cli(&["INCR", "hits"]), "1");
    // Commands typed at redis-cli's own prompt, on one connection.
    let mut interactive = Command::new("redis-cli")
        .args(["-p", &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    interactive
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET typed yes\nGET typed\nEXISTS typed\n")
        .unwrap();
    let output = interactive.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "OK\nyes\n1\n");
}

#[test]
fn mget_never_sees_half_of_an_mset() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let writer_port = cluster.replica(leader).client_port();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut c = connect(writer_port);
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = round.to_string();
                ok(
                    &mut c,
                    &["MSET", "left", &value, "middle", &value, "right", &value],
                );
                round += 1;
            }
            round
        })
    };
    let mut readers: Vec<Connection> = [leader, follower]
        .iter()
        .map(|id| connect(cluster.replica(*id).client_port()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reads = 0;
    while Instant::now() < deadline {
        for c in readers.iter_mut() {
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg("left")
                .arg("middle")
                .arg("right")
                .query(c)
                .expect("MGET");
            assert!(
                values.iter().all(|v| *v == values[0]),
                "MGET saw part of an MSET: {values:?}"
            );
            reads += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().expect("the writer panicked");
    assert!(rounds > 10, "only {rounds} MSETs in 5 s");
    eprintln!("{reads} MGETs during {rounds} MSETs, none torn");
}
