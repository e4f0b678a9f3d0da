//! A password on the client port (`--password-file`, or EXAMPLE_ONDISK_PASSWORD):
//! the `redis` crate's and redis-cli's password options get in, everyone else
//! is refused with Redis's error lines, and a refused request changes nothing.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::{temp_dir, Cluster, ELECTION_TIMEOUT};
use redis::{Connection, Value};

const SETTLE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse battery staple";

fn url(port: u16, password: Option<&str>, resp3: bool) -> String {
    let user = password.map_or(String::new(), |p| format!(":{}@", p.replace(' ', "%20")));
    let protocol = if resp3 { "?protocol=resp3" } else { "" };
    format!("redis://{user}127.0.0.1:{port}/{protocol}")
}

fn connect(port: u16, password: Option<&str>, resp3: bool) -> Connection {
    harness::redis_connection(&url(port, password, resp3), SETTLE)
}

fn run(connection: &mut Connection, words: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(words[0]);
    for word in &words[1..] {
        cmd.arg(*word);
    }
    cmd.query(connection)
}

/// The error line a refused request got, as "CODE detail".
fn refusal(result: redis::RedisResult<Value>) -> String {
    match result {
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
        Ok(value) => panic!("not refused: {value:?}"),
    }
}

#[test]
fn a_password_protected_port_serves_only_clients_that_give_it() {
    let dir = temp_dir();
    let file = dir.path().join("client-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let file = file.to_string_lossy().into_owned();
    let mut cluster = Cluster::start_with(3, &["--password-file", &file]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let leader_port = cluster.replica(leader).client_port();
    let follower_port = cluster.replica(follower).client_port();

    // No password: every keyspace command is refused, and nothing is written.
    let mut stranger = connect(follower_port, None, false);
    assert_eq!(
        refusal(run(&mut stranger, &["SET", "k", "stranger"])),
        "NOAUTH Authentication required."
    );
    assert!(refusal(run(&mut stranger, &["GET", "k"])).starts_with("NOAUTH"));
    assert!(refusal(run(&mut stranger, &["MULTI"])).starts_with("NOAUTH"));
    assert!(refusal(run(&mut stranger, &["HELLO", "3"])).starts_with("NOAUTH HELLO must be called"));
    assert_eq!(
        refusal(run(&mut stranger, &["AUTH", "wrong"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert!(refusal(run(&mut stranger, &["AUTH", "admin", PASSWORD])).starts_with("WRONGPASS"));
    assert!(refusal(run(&mut stranger, &["PING"])).starts_with("NOAUTH"));
    // Then the right password, on the same connection.
    assert_eq!(run(&mut stranger, &["AUTH", PASSWORD]), Ok(Value::Okay));
    assert_eq!(run(&mut stranger, &["GET", "k"]), Ok(Value::Nil));

    // A wrong password in the address: the crate's connect fails.
    let wrong = redis::Client::open(url(leader_port, Some("guess"), false)).unwrap();
    let error = wrong
        .get_connection_with_timeout(Duration::from_secs(5))
        .err()
        .expect("a wrong password is refused");
    assert_eq!(
        error.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "{error}"
    );

    // The right one, in RESP2 (AUTH) and RESP3 (HELLO 3 AUTH), at both replicas.
    let mut at_leader = connect(leader_port, Some(PASSWORD), false);
    let mut at_follower = connect(follower_port, Some(PASSWORD), true);
    assert_eq!(run(&mut at_leader, &["SET", "k", "v"]), Ok(Value::Okay));
    assert_eq!(
        run(&mut at_follower, &["GET", "k"]),
        Ok(Value::BulkString(b"v".to_vec()))
    );
    assert_eq!(run(&mut at_follower, &["DBSIZE"]), Ok(Value::Int(1)));

    // redis-cli's own password option.
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("skipped the redis-cli part: redis-cli is not installed");
        return;
    }
    let redis_cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-p", &follower_port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(
        redis_cli(&["--pass", PASSWORD, "--no-auth-warning", "GET", "k"]),
        "v"
    );
    assert_eq!(redis_cli(&["GET", "k"]), "NOAUTH Authentication required.");
}

#[test]
fn the_password_may_come_from_the_environment_instead() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    cluster.replica(1).kill();
    cluster
        .replica(1)
        .restart_with_env(&[("EXAMPLE_ONDISK_PASSWORD", PASSWORD)]);
    let guarded = cluster.replica(1).client_port();
    let open = cluster.replica(2).client_port();

    let mut stranger = connect(guarded, None, false);
    assert!(refusal(run(&mut stranger, &["GET", "k"])).starts_with("NOAUTH"));
    let mut member = connect(guarded, Some(PASSWORD), true);
    assert_eq!(run(&mut member, &["SET", "k", "v"]), Ok(Value::Okay));
    // Replica 2 was started without one: AUTH there is a mistake, as in Redis.
    let mut other = connect(open, None, false);
    assert!(refusal(run(&mut other, &["AUTH", PASSWORD]))
        .contains("called without any password configured"));
    assert_eq!(
        run(&mut other, &["GET", "k"]),
        Ok(Value::BulkString(b"v".to_vec()))
    );
}
