//! Rolling upgrades with a versioned machine (issue 16, as Ra does them).
//!
//! A replica started with `EXAMPLE_ONDISK_MACHINE_VERSION_LIMIT=3` plays an
//! older release: it applies machine version 3 (commands without scripts)
//! and not 4 (EVAL) or 5 (binary ops); with `=4`, the release before binary
//! ops. These tests check that such a replica holds the cluster at its
//! version while it is a member, without stopping the writes of the old
//! kinds; that a replica which meets a newer version holds back applying yet
//! still counts for the quorum; and that after the upgrade the cluster moves
//! on, every replica applies everything and all end in the same state.

mod harness;

use std::thread;
use std::time::{Duration, Instant};

use harness::{free_port, is_error, replica_args, Cluster, ELECTION_TIMEOUT};
use redis::Connection;

const LIMIT_VAR: &str = "EXAMPLE_ONDISK_MACHINE_VERSION_LIMIT";
const SETTLE: Duration = Duration::from_secs(30);
const ALL: [u64; 3] = [1, 2, 3];
/// The newest machine version this build applies (`command::PROPOSAL_FORMAT`).
const NEWEST: u64 = 6;

/// A script that writes, so it goes through the log (format 4).
const SET_BY_SCRIPT: &str = "return redis.call('SET', KEYS[1], ARGV[1])";

/// A command's reply as text (nil as "(nil)"), or its error line.
fn answer(connection: &mut Connection, words: &[&str]) -> String {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    match command.query::<redis::Value>(connection) {
        Ok(redis::Value::Nil) => "(nil)".into(),
        Ok(redis::Value::Okay) => "OK".into(),
        Ok(redis::Value::Int(n)) => n.to_string(),
        Ok(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(other) => format!("{other:?}"),
        Err(e) => match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        },
    }
}

/// EVAL of [`SET_BY_SCRIPT`]: the reply, or the error line.
fn eval_set(connection: &mut Connection, key: &str, value: &str) -> Result<String, String> {
    redis::cmd("EVAL")
        .arg(SET_BY_SCRIPT)
        .arg(1)
        .arg(key)
        .arg(value)
        .query::<String>(connection)
        .map_err(|e| match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        })
}

/// Polls until every replica in `ids` says the cluster runs `version`.
fn wait_machine_version(cluster: &mut Cluster, ids: &[u64], version: u64) {
    let deadline = Instant::now() + SETTLE;
    for &id in ids {
        loop {
            let status = cluster.replica(id).status();
            if status.number("machine_version") == version {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} never ran machine version {version}: {status}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls until replica `id` says it holds back applying, and returns where.
fn wait_held_back(cluster: &mut Cluster, id: u64) -> u64 {
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = cluster.replica(id).status();
        if let Some(at) = status.optional_number("held_back_at") {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "replica {id} does not hold back: {status}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replica_of_the_previous_version_holds_the_cluster_back_until_it_is_upgraded() {
    let mut cluster = Cluster::start_with_env(3, &[], &[(3, LIMIT_VAR, "3")]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let status = cluster.replica(3).status();
    assert_eq!(status.number("machine_version_max"), 3, "{status}");
    assert_eq!(status.get("held_back_at"), "none", "{status}");
    let status = cluster.replica(leader).status();
    assert_eq!(status.number("machine_version_max"), NEWEST, "{status}");
    let mut c = cluster.redis(3, SETTLE);
    let info = harness::raft_info(&mut c);
    assert_eq!(info.number("machine_version"), 3);
    assert_eq!(info.number("machine_version_max"), 3);

    // Writes of the old kinds go on, wherever they are sent.
    cluster.replica(leader).put("old", "kind");
    cluster.replica(3).put("from3", "also");

    // EVAL needs version 4, which replica 3 cannot apply: refused, in one
    // line that says why, at the leader and at the limited replica alike.
    for id in [leader, 3] {
        let mut c = cluster.redis(id, SETTLE);
        let refusal = eval_set(&mut c, "s", "1").expect_err("EVAL before the upgrade");
        assert!(
            refusal.contains("EVAL needs machine version 4")
                && refusal.contains("replica 3 applies versions up to 3"),
            "{refusal}"
        );
        assert!(!refusal.contains('\n'), "{refusal:?}");
        eprintln!("replica {id} refused: {refusal}");
    }
    // A SET pipelined beside an EVAL is not held back by it; a transaction
    // that holds a script is refused whole.
    let mut c = cluster.redis(leader, SETTLE);
    let pipelined = redis::pipe()
        .cmd("SET")
        .arg("beside")
        .arg("ok")
        .cmd("EVAL")
        .arg(SET_BY_SCRIPT)
        .arg(1)
        .arg("s")
        .arg("1")
        .query::<redis::Value>(&mut c);
    assert!(pipelined.is_err(), "{pipelined:?}");
    assert_eq!(cluster.replica(leader).get("beside"), "ok");
    let multi = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .cmd("EVAL")
        .arg(SET_BY_SCRIPT)
        .arg(1)
        .arg("s")
        .arg("1")
        .query::<redis::Value>(&mut c);
    assert!(multi.is_err(), "a transaction with EVAL: {multi:?}");
    assert_eq!(cluster.replica(leader).get("t"), "(nil)");
    for id in ALL {
        let status = cluster.replica(id).status();
        assert_eq!(status.number("machine_version"), 3, "{status}");
    }
    assert_eq!(
        cluster.replica(leader).get("s"),
        "(nil)",
        "a refused EVAL wrote"
    );

    // Replica 3 is upgraded: the same data folder, without the limit.
    cluster.replica(3).exit();
    cluster.replica(3).env.clear();
    cluster.replica(3).restart();
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    // The leader moves the cluster on its own, to the newest version.
    wait_machine_version(&mut cluster, &ALL, NEWEST);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "s", "1").as_deref(), Ok("OK"));
    let mut c = cluster.redis(3, SETTLE);
    assert_eq!(eval_set(&mut c, "s3", "3").as_deref(), Ok("OK"));
    cluster.replica(leader).put("after", "upgrade");
    let sum = cluster.agreed_checksum(&ALL, SETTLE);
    eprintln!("converged: {sum}");
    for (key, value) in [("old", "kind"), ("from3", "also"), ("s", "1"), ("s3", "3")] {
        assert_eq!(cluster.replica(3).get(key), value, "{key}");
    }
}

#[test]
fn a_replica_restarted_at_the_previous_version_holds_back_yet_counts_for_the_quorum() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "script", "ran").as_deref(), Ok("OK"));
    wait_machine_version(&mut cluster, &ALL, NEWEST);
    cluster.replica(leader).put("before", "1");
    let before = cluster.agreed_checksum(&ALL, SETTLE);

    // A follower goes back to the previous release after the cluster moved
    // on: its state is of the newest version, so it applies nothing more.
    let old = cluster.other_than(&[leader]);
    let other = cluster.other_than(&[leader, old]);
    cluster.replica(old).exit();
    cluster.replica(old).restart_with_env(&[(LIMIT_VAR, "3")]);
    let held_at = wait_held_back(&mut cluster, old);
    let status = cluster.replica(old).status();
    assert_eq!(status.number("machine_version"), NEWEST, "{status}");
    assert_eq!(status.number("machine_version_max"), 3, "{status}");

    // Reads there are refused at once, with the reason, not after a timeout.
    let started = Instant::now();
    let read = cluster
        .replica(old)
        .try_send_within("get before", Duration::from_secs(10))
        .expect("an answer");
    assert!(
        is_error(&read) && read.contains("holds back applying") && read.contains("upgrade"),
        "{read}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{read}");
    let port = cluster.replica(old).http_port();
    let ready = http_get(port, "/ready");
    assert!(
        ready.starts_with("HTTP/1.1 503") && ready.contains("held back"),
        "{ready}"
    );
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains("ondisk_held_back 1"), "{metrics}");

    // It must not lead: a hand-over to it is refused, with the reason.
    let refused = cluster
        .replica(leader)
        .send(&format!("transfer-leader {old}"));
    assert!(
        is_error(&refused) && refused.contains("holds back applying"),
        "{refused}"
    );

    // It still takes the log and counts for the quorum: with the third
    // replica frozen, the leader and the held-back one commit writes.
    cluster.replica(other).stop();
    for i in 0..5 {
        let reply = cluster.replica(leader).send(&format!("put during{i} x"));
        assert_eq!(reply, "OK", "a write with replica {other} frozen");
    }
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "script2", "ran").as_deref(), Ok("OK"));
    let status = cluster.replica(old).status();
    assert!(
        status.number("last_log_index") > held_at,
        "replica {old} took no log: {status}"
    );
    assert_eq!(status.optional_number("held_back_at"), Some(held_at));
    assert_ne!(status.role(), "leader", "{status}");
    let sum = cluster.replica(old).send("checksum");
    assert!(
        sum.contains(&format!("digest={}", field(&before, "digest"))),
        "replica {old} applied while held back: {sum}, before: {before}"
    );
    cluster.replica(other).cont();

    // Upgraded again, it applies everything outstanding.
    cluster.replica(old).exit();
    cluster.replica(old).restart();
    let sum = cluster.agreed_checksum(&ALL, SETTLE);
    eprintln!("converged: {sum}");
    assert_eq!(cluster.replica(old).get("during4"), "x");
    assert_eq!(cluster.replica(old).get("script2"), "ran");
    let status = cluster.replica(old).status();
    assert_eq!(status.get("held_back_at"), "none", "{status}");
}

#[test]
fn add_replica_refuses_a_newcomer_that_cannot_apply_the_clusters_version() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "script", "ran").as_deref(), Ok("OK"));
    wait_machine_version(&mut cluster, &[leader], NEWEST);
    let cluster_id: String = redis::cmd("INFO")
        .arg("server")
        .query::<String>(&mut c)
        .expect("INFO")
        .lines()
        .find_map(|line| line.strip_prefix("cluster_id:"))
        .expect("a cluster_id line")
        .trim()
        .to_string();

    // Replica 4 plays the previous release; it waits to be added.
    let port4 = free_port();
    let nobody = format!("127.0.0.1:{}", free_port());
    let data = cluster.data_dir().to_path_buf();
    let args = replica_args(
        4,
        &data,
        &format!("4=127.0.0.1:{port4}"),
        &["--cluster-id", &cluster_id, "--join", &nobody],
    );
    cluster.spawn_extra_with_env(4, args, &[(LIMIT_VAR, "3")]);
    harness::wait_listening(port4, SETTLE);
    let reply = cluster
        .replica(leader)
        .send(&format!("add-replica 4 127.0.0.1:{port4}"));
    assert!(
        is_error(&reply)
            && reply.contains("replica 4 applies machine versions up to 3")
            && reply.contains(&format!("the cluster runs version {NEWEST}")),
        "{reply}"
    );
    let status = cluster.replica(leader).status();
    assert_eq!(status.get("members"), "1,2,3", "{status}");
    assert_eq!(status.get("learners"), "none", "{status}");
}

/// The whole answer to `GET path` on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(SETTLE)).expect("a timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Field `name` of a `key=value ...` line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Makes a replica speak JSON frames only on the Raft port, as replicas of
/// the release before binary frames do.
const JSON_FRAMES_VAR: &str = "EXAMPLE_ONDISK_JSON_FRAMES_ONLY";

/// Has `asker` hand leadership to `to`, and checks every replica sees it.
fn hand_leadership(cluster: &mut Cluster, asker: u64, to: u64) {
    let reply = cluster
        .replica(asker)
        .send(&format!("transfer-leader {to}"));
    assert_eq!(reply, format!("OK leader={to}"));
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), to);
}

/// The answer replica `id` gives a hello that offers binary frames.
fn answer_to_a_binary_hello(cluster: &mut Cluster, id: u64) -> String {
    use std::io::{Read, Write};
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut cluster.redis(id, SETTLE))
        .expect("INFO answers");
    let cluster_id = info
        .lines()
        .find_map(|line| line.strip_prefix("cluster_id:"))
        .expect("INFO names the cluster")
        .trim();
    let hello = format!(
        r#"{{"Hello":{{"cluster_id":"{cluster_id}","from":9,"to":{id},"frames":["binary"]}}}}"#
    );
    let port = harness::port_of(&cluster.peers, id);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .write_all(&[&(hello.len() as u32).to_be_bytes()[..], hello.as_bytes()].concat())
        .expect("hello sent");
    let mut length = [0; 4];
    stream.read_exact(&mut length).expect("an answer");
    let mut answer = vec![0; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut answer).expect("a whole answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_replica_that_speaks_only_json_frames_works_with_replicas_that_speak_binary() {
    let mut cluster = Cluster::start_with_env(3, &[], &[(3, JSON_FRAMES_VAR, "1")]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    // Replica 3 answers as the previous release did; the others agree on binary.
    assert_eq!(answer_to_a_binary_hello(&mut cluster, 3), r#""Welcome""#);
    for id in [1, 2] {
        let answer = answer_to_a_binary_hello(&mut cluster, id);
        assert_eq!(answer, r#"{"Admitted":{"frames":"Binary"}}"#);
    }
    // Written at each replica: a follower forwards to the leader, over JSON
    // frames to and from replica 3, binary ones between the others.
    for id in ALL {
        cluster.replica(id).put(&format!("before-{id}"), "x");
    }

    // Replica 3 leads, replicating in JSON to both; then another leads again.
    let others: Vec<u64> = ALL.into_iter().filter(|&id| id != 3).collect();
    if leader != 3 {
        hand_leadership(&mut cluster, leader, 3);
    }
    for id in ALL {
        cluster.replica(id).put(&format!("under-3-{id}"), "y");
    }
    hand_leadership(&mut cluster, others[0], others[1]);
    for id in ALL {
        cluster.replica(id).put(&format!("after-{id}"), "z");
    }

    for reader in ALL {
        for writer in ALL {
            let replica = cluster.replica(reader);
            assert_eq!(replica.get(&format!("before-{writer}")), "x", "at {reader}");
            assert_eq!(
                replica.get(&format!("under-3-{writer}")),
                "y",
                "at {reader}"
            );
            assert_eq!(replica.get(&format!("after-{writer}")), "z", "at {reader}");
        }
    }
    cluster.agreed_checksum(&ALL, SETTLE);
}

#[test]
fn binary_ops_wait_until_the_last_replica_can_apply_them() {
    let mut cluster = Cluster::start_with_env(3, &[], &[(3, LIMIT_VAR, "4")]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    // The leader moves the cluster as far as replica 3 allows, and no further.
    wait_machine_version(&mut cluster, &ALL, 4);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "s4", "4").as_deref(), Ok("OK"));
    for id in ALL {
        cluster.replica(id).put(&format!("at4-{id}"), "json");
    }
    cluster.agreed_checksum(&ALL, SETTLE);
    for id in ALL {
        let status = cluster.replica(id).status();
        assert_eq!(status.number("machine_version"), 4, "{status}");
        assert_eq!(status.get("held_back_at"), "none", "{status}");
    }

    // Replica 3 is upgraded: the cluster moves on its own to the newest
    // version, and every entry after the move (binary ops, from format 5 on)
    // is applied everywhere.
    cluster.replica(3).exit();
    cluster.replica(3).env.clear();
    cluster.replica(3).restart();
    wait_machine_version(&mut cluster, &ALL, NEWEST);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(eval_set(&mut c, "s5", "5").as_deref(), Ok("OK"));
    for id in ALL {
        cluster.replica(id).put(&format!("at5-{id}"), "binary");
    }
    cluster.agreed_checksum(&ALL, SETTLE);
    for reader in ALL {
        let replica = cluster.replica(reader);
        assert_eq!(replica.get("s4"), "4", "at {reader}");
        assert_eq!(replica.get("s5"), "5", "at {reader}");
        for writer in ALL {
            assert_eq!(replica.get(&format!("at4-{writer}")), "json", "at {reader}");
            assert_eq!(
                replica.get(&format!("at5-{writer}")),
                "binary",
                "at {reader}"
            );
        }
        assert_eq!(replica.status().get("held_back_at"), "none");
    }
}

/// Version 6 changed answers (Redis 7.0's order of checks, `command.rs`): an
/// entry is answered by the rules of its own format, so while a replica of
/// version 5 is a member every replica answers as version 5 did, and after
/// its upgrade every replica answers as Redis does.
#[test]
fn redis_order_waits_until_the_last_replica_can_apply_version_6() {
    let mut cluster = Cluster::start_with_env(3, &[], &[(3, LIMIT_VAR, "5")]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    wait_machine_version(&mut cluster, &ALL, 5);
    let far = "9223372036854775807";
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(
        answer(&mut c, &["GETEX", "gone", "EX", "soon"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(answer(&mut c, &["PEXPIRE", "gone", far]), "0");
    assert_eq!(
        answer(&mut c, &["SET", "twice", "v", "NX", "NX"]),
        "ERR syntax error"
    );
    assert_eq!(answer(&mut c, &["GET", "twice"]), "(nil)");
    cluster.agreed_checksum(&ALL, SETTLE);

    cluster.replica(3).exit();
    cluster.replica(3).env.clear();
    cluster.replica(3).restart();
    wait_machine_version(&mut cluster, &ALL, 6);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut c = cluster.redis(leader, SETTLE);
    assert_eq!(answer(&mut c, &["GETEX", "gone", "EX", "soon"]), "(nil)");
    assert_eq!(
        answer(&mut c, &["PEXPIRE", "gone", far]),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(answer(&mut c, &["SET", "twice", "v", "NX", "NX"]), "OK");
    cluster.agreed_checksum(&ALL, SETTLE);
    for id in ALL {
        assert_eq!(cluster.replica(id).get("twice"), "v", "at {id}");
    }
}
