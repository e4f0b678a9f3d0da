//! Lua scripts (EVAL, EVALSHA, SCRIPT) against a real three-replica cluster,
//! through the `redis` crate and the prompt. A script runs at apply on every
//! replica, so besides Redis's answers these tests check what replication
//! adds: every replica ends in the same state (`CHECKSUM`), a runaway script
//! is stopped the same way everywhere while the cluster keeps serving, and
//! bad input changes nothing (not even the applied index).

mod harness;

use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};
use redis::{Connection, Value};

/// How long a test waits for something that needs an election or a catch-up.
const SETTLE: Duration = Duration::from_secs(30);

const ALL: [u64; 3] = [1, 2, 3];

fn connect(port: u16) -> Connection {
    harness::redis_connection(&format!("redis://127.0.0.1:{port}/"), SETTLE)
}

fn connect_resp3(port: u16) -> Connection {
    harness::redis_connection(&format!("redis://127.0.0.1:{port}/?protocol=resp3"), SETTLE)
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
    run(connection, words).unwrap_or_else(|e| panic!("{words:?} failed: {e}"))
}

/// Runs a command that must fail; its error line as the server sent it.
fn refused(connection: &mut Connection, words: &[&str]) -> String {
    match run(connection, words) {
        Ok(value) => panic!("{words:?} answered {value:?}, not an error"),
        Err(e) => {
            let line = match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                (Some(code), None) => code.to_string(),
                _ => e.to_string(),
            };
            assert!(
                !line.contains('\n'),
                "{words:?}: a multi-line error: {line:?}"
            );
            line
        }
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// Sends `commands` on a fresh connection and returns what came back once
/// `lines` lines have (each reply expected here is one line, or an array
/// header followed by one-line elements).
fn raw_replies(port: u16, commands: &[&[&str]], lines: usize) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut request = Vec::new();
    for words in commands {
        request.extend(format!("*{}\r\n", words.len()).into_bytes());
        for word in *words {
            request.extend(format!("${}\r\n{word}\r\n", word.len()).into_bytes());
        }
    }
    stream.write_all(&request).expect("send");
    let deadline = Instant::now() + SETTLE;
    let mut reply = Vec::new();
    while reply.windows(2).filter(|w| w == b"\r\n").count() < lines {
        assert!(
            Instant::now() < deadline,
            "only {:?}",
            String::from_utf8_lossy(&reply)
        );
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn client_ports(cluster: &mut Cluster) -> Vec<u16> {
    ALL.iter()
        .map(|&id| cluster.replica(id).client_port())
        .collect()
}

#[test]
fn eval_evalsha_and_the_script_cache_answer_as_redis_does() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    let mut elsewhere = connect(cluster.replica(leader).client_port());

    ok(&mut c, &["SET", "mykey", "myval"]);
    let get = "return redis.call('get', KEYS[1])";
    assert_eq!(ok(&mut c, &["EVAL", get, "1", "mykey"]), bulk("myval"));
    // EVAL remembered the script; its SHA1 is Redis's.
    let sha = "4e6d8fc8bb01276962cce5371fa795a7763657ae";
    assert_eq!(
        ok(
            &mut c,
            &[
                "SCRIPT",
                "EXISTS",
                sha,
                "ffffffffffffffffffffffffffffffffffffffff"
            ]
        ),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    assert_eq!(
        ok(&mut c, &["EVALSHA", &sha.to_uppercase(), "1", "mykey"]),
        bulk("myval")
    );
    // The cache is this process's, as in Redis: another replica never saw it.
    assert_eq!(
        refused(&mut elsewhere, &["EVALSHA", sha, "1", "mykey"]),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    let incr = "return redis.call('incr', KEYS[1])";
    let loaded = ok(&mut elsewhere, &["SCRIPT", "LOAD", incr]);
    let Value::BulkString(incr_sha) = loaded else {
        panic!("SCRIPT LOAD answered {loaded:?}");
    };
    let incr_sha = String::from_utf8(incr_sha).expect("hex");
    assert_eq!(
        ok(&mut elsewhere, &["EVALSHA", &incr_sha, "1", "n"]),
        Value::Int(1)
    );
    assert_eq!(ok(&mut c, &["GET", "n"]), bulk("1"));

    assert_eq!(ok(&mut c, &["SCRIPT", "FLUSH"]), Value::Okay);
    assert_eq!(
        refused(&mut c, &["EVALSHA", sha, "1", "mykey"]),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    assert_eq!(
        refused(&mut c, &["SCRIPT", "KILL"]),
        "NOTBUSY No scripts in execution right now."
    );
    assert_eq!(
        refused(&mut c, &["SCRIPT", "LOAD", "return 1 +"]),
        "ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"
    );
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    assert!(info.contains("number_of_cached_scripts:0"), "{info}");
}

#[test]
fn replies_convert_between_lua_and_redis_in_resp2_and_resp3() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let port = cluster.replica(1).client_port();
    for mut c in [connect(port), connect_resp3(port)] {
        ok(&mut c, &["SET", "s", "text"]);
        let eval = |c: &mut Connection, script: &str| ok(c, &["EVAL", script, "0"]);
        assert_eq!(eval(&mut c, "return 100.5"), Value::Int(100));
        assert_eq!(eval(&mut c, "return 'hello'"), bulk("hello"));
        assert_eq!(eval(&mut c, "return true"), Value::Int(1));
        assert_eq!(eval(&mut c, "return false"), Value::Nil);
        assert_eq!(
            eval(&mut c, "return {ok='fine'}"),
            Value::SimpleString("fine".into())
        );
        assert_eq!(
            eval(&mut c, "return {1, 'two', {3}, nil, 5}"),
            Value::Array(vec![
                Value::Int(1),
                bulk("two"),
                Value::Array(vec![Value::Int(3)])
            ])
        );
        assert_eq!(
            eval(
                &mut c,
                "local v = redis.call('get', 'nothing'); \
                 local e = redis.pcall('incr', 's'); \
                 local o = redis.call('set', 'x', 'y'); \
                 return {type(v), tostring(v), e['err'], o['ok'], redis.call('strlen', 's')}"
            ),
            Value::Array(vec![
                bulk("boolean"),
                bulk("false"),
                bulk("ERR value is not an integer or out of range"),
                bulk("OK"),
                Value::Int(4)
            ])
        );
        assert_eq!(
            refused(&mut c, &["EVAL", "return {err='MY_CODE went wrong'}", "0"]),
            "MY_CODE went wrong"
        );
        let line = refused(&mut c, &["EVAL", "return redis.call('incr', 's')", "0"]);
        assert!(
            line.starts_with("ERR value is not an integer or out of range script: ")
                && line.ends_with(", on @user_script:1."),
            "{line}"
        );
    }
}

#[test]
fn a_runaway_script_is_stopped_the_same_way_on_every_replica_while_the_cluster_serves() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let ports = client_ports(&mut cluster);
    let mut at_leader = connect(cluster.replica(leader).client_port());
    let term_before = harness::raft_info(&mut at_leader).number("term");

    // Others write while the scripts run.
    let writer_port = ports[(leader as usize) % 3];
    let writer = thread::spawn(move || {
        let mut c = connect(writer_port);
        for i in 0..40 {
            ok(&mut c, &["SET", &format!("beside-{i}"), "v"]);
        }
    });
    for (i, script) in [
        "redis.call('set', 'before', 'stays') while true do end",
        "local f = function() while true do end end while true do pcall(f) end",
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let line = refused(&mut connect(ports[i]), &["EVAL", script, "0"]);
        assert!(
            line.starts_with("ERR the script was stopped after 100000000 Lua instructions"),
            "{line}"
        );
        assert!(started.elapsed() < SETTLE, "took {:?}", started.elapsed());
    }
    writer.join().expect("the writer finished");

    let mut c = connect(ports[2]);
    assert_eq!(ok(&mut c, &["GET", "before"]), bulk("stays"));
    assert_eq!(ok(&mut c, &["EXISTS", "beside-39"]), Value::Int(1));
    cluster.agreed_checksum(&ALL, SETTLE);
    // Applying the scripts held no replica up long enough for an election.
    let term_after = harness::raft_info(&mut at_leader).number("term");
    assert_eq!(term_after, term_before, "an election happened meanwhile");
}

#[test]
fn a_script_that_fails_keeps_its_earlier_writes_and_one_inside_multi_runs_in_the_entry() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());

    let script = "redis.call('set', KEYS[1], 'written')\nredis.call('incr', KEYS[1])";
    let line = refused(&mut c, &["EVAL", script, "1", "k"]);
    assert!(line.ends_with("on @user_script:2."), "{line}");
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("written"));

    // A transaction with scripts: EVAL, EVALSHA resolved at queue time, an
    // unknown EVALSHA answered in its place, a script error in its own slot.
    let incr = "return redis.call('incr', KEYS[1])";
    let sha = match ok(&mut c, &["SCRIPT", "LOAD", incr]) {
        Value::BulkString(sha) => String::from_utf8(sha).expect("hex"),
        other => panic!("SCRIPT LOAD answered {other:?}"),
    };
    let applied_before =
        harness::settled_applied_index(&mut connect(cluster.replica(leader).client_port()), SETTLE);
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("n")
        .arg(10)
        .cmd("EVAL")
        .arg(incr)
        .arg(1)
        .arg("n")
        .cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("n")
        .cmd("GET")
        .arg("n")
        .query(&mut c)
        .expect("the transaction runs");
    assert_eq!(
        replies,
        vec![Value::Okay, Value::Int(11), Value::Int(12), bulk("12")]
    );
    let applied_after =
        harness::settled_applied_index(&mut connect(cluster.replica(leader).client_port()), SETTLE);
    assert_eq!(
        applied_after,
        applied_before + 1,
        "the transaction is one entry"
    );

    // The redis crate reports only the first error of an EXEC reply, so
    // this one is read as the bytes Redis would send.
    let exec = raw_replies(
        cluster.replica(follower).client_port(),
        &[
            &["MULTI"],
            &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
            &["EVAL", "return redis.call('incr', 'k')", "0"],
            &["INCR", "n"],
            &["EXEC"],
        ],
        8,
    );
    assert!(
        exec.starts_with("+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n")
            && exec.contains("\r\n-NOSCRIPT No matching script. Please use EVAL.\r\n")
            && exec.contains("\r\n-ERR value is not an integer or out of range script: ")
            && exec.ends_with("\r\n:13\r\n"),
        "{exec:?}"
    );
    cluster.agreed_checksum(&ALL, SETTLE);
}

#[test]
fn scripts_with_random_numbers_time_and_randomkey_leave_every_replica_equal() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let ports = client_ports(&mut cluster);
    let script = "local t = redis.call('time') \
                  local pick = redis.call('randomkey') or 'none' \
                  redis.call('set', KEYS[1], table.concat({math.random(), math.random(1000), \
                      t[1], t[2], pick, tostring({})}, ' ')) \
                  math.randomseed(tonumber(ARGV[1])) \
                  redis.call('set', KEYS[1] .. ':seeded', tostring(math.random())) \
                  return tonumber(t[1])";
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    for (i, port) in ports.iter().enumerate() {
        let mut c = connect(*port);
        for j in 0..5 {
            ok(&mut c, &["SET", &format!("filler-{i}-{j}"), "x"]);
            let seconds = ok(
                &mut c,
                &["EVAL", script, "1", &format!("r-{i}-{j}"), &j.to_string()],
            );
            // TIME is the entry's time: the leader's clock when it proposed.
            let Value::Int(seconds) = seconds else {
                panic!("{seconds:?}")
            };
            assert!(
                (seconds as u64).abs_diff(started) < 120,
                "{seconds} vs {started}"
            );
        }
    }
    let agreed = cluster.agreed_checksum(&ALL, SETTLE);
    assert!(agreed.contains("keys=45"), "{agreed}");
    let mut values = Vec::new();
    for port in &ports {
        let mut c = connect(*port);
        values.push(ok(&mut c, &["MGET", "r-0-0", "r-2-4", "r-1-3:seeded"]));
    }
    assert!(values.iter().all(|v| v == &values[0]), "{values:?}");
}

#[test]
fn bad_script_input_gets_one_line_errors_and_changes_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = connect(cluster.replica(leader).client_port());
    ok(&mut c, &["SET", "k", "v"]);
    let before = cluster.agreed_checksum(&ALL, SETTLE);
    for (words, expected) in [
        (&["EVAL"][..], "ERR wrong number of arguments for 'eval' command"),
        (&["EVAL", "return 1"], "ERR wrong number of arguments for 'eval' command"),
        (&["EVAL", "return 1", "-1"], "ERR Number of keys can't be negative"),
        (&["EVAL", "return 1", "x"], "ERR value is not an integer or out of range"),
        (&["EVAL", "return 1", "1"], "ERR Number of keys can't be greater than number of args"),
        (&["EVAL", "return 1", "2", "a"], "ERR Number of keys can't be greater than number of args"),
        (&["EVALSHA", "abc"], "ERR wrong number of arguments for 'evalsha' command"),
        (&["EVALSHA", "abc", "0"], "NOSCRIPT No matching script. Please use EVAL."),
        (&["EVAL_RO", "#!lua\nreturn 1", "0"], "ERR Can not execute a script with write flag using *_ro command."),
        (&["EVAL", "#!python\nreturn 1", "0"], "ERR Unexpected engine in script shebang: #!python"),
        (&["EVAL", "#!lua flags=fast\nreturn 1", "0"], "ERR Unexpected flag in script shebang: fast"),
        (&["EVAL", "#!lua", "0"], "ERR Invalid script shebang"),
        (&["EVAL", "return (", "0"], "ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"),
        (&["SCRIPT"], "ERR wrong number of arguments for 'script' command"),
        (&["SCRIPT", "LOAD"], "ERR wrong number of arguments for 'script|load' command"),
        (&["SCRIPT", "FLUSH", "LATER"], "ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
    ] {
        assert_eq!(refused(&mut c, words), expected, "{words:?}");
    }
    // Nothing was proposed: not a key, not an entry.
    assert_eq!(cluster.agreed_checksum(&ALL, SETTLE), before);
    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
}

#[test]
fn read_only_scripts_are_served_as_reads_and_the_prompt_runs_scripts() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let mut c = connect(cluster.replica(follower).client_port());
    ok(&mut c, &["SET", "k", "v"]);
    let before = cluster.agreed_checksum(&ALL, SETTLE);
    let get = "return redis.call('get', KEYS[1])";
    assert_eq!(ok(&mut c, &["EVAL_RO", get, "1", "k"]), bulk("v"));
    let no_writes = format!("#!lua flags=no-writes\n{get}");
    assert_eq!(ok(&mut c, &["EVAL", &no_writes, "1", "k"]), bulk("v"));
    let line = refused(
        &mut c,
        &["EVAL_RO", "return redis.call('del', KEYS[1])", "1", "k"],
    );
    assert!(
        line.starts_with("ERR Write commands are not allowed from read-only scripts. script: "),
        "{line}"
    );
    // Reads: no entry was added, the key is still there.
    assert_eq!(cluster.agreed_checksum(&ALL, SETTLE), before);

    // The prompt: the same commands, through the same request path.
    let prompt = cluster.replica(follower);
    assert_eq!(
        prompt
            .send(r#"eval "return redis.call('set', KEYS[1], ARGV[1])" 1 greeting "hello world""#),
        "OK"
    );
    assert_eq!(prompt.send("get greeting"), "hello world");
    assert_eq!(
        prompt.send(r#"script load "return redis.call('strlen', KEYS[1])""#),
        "\"4bda0a00e5541c8717dca29525d5e02f297b52da\""
    );
    assert_eq!(
        prompt.send("evalsha 4bda0a00e5541c8717dca29525d5e02f297b52da 1 greeting"),
        "(integer) 11"
    );
    assert_eq!(
        prompt.send("eval \"return {1, 'a', {ok='fine'}}\" 0"),
        "1) (integer) 1 2) \"a\" 3) fine"
    );
    assert_eq!(
        prompt.send("evalsha ffffffffffffffffffffffffffffffffffffffff 0"),
        "(error) NOSCRIPT No matching script. Please use EVAL."
    );
    assert_eq!(
        prompt.send("eval \"return 1\" -1"),
        "(error) ERR Number of keys can't be negative"
    );
    cluster.agreed_checksum(&ALL, SETTLE);
}
