//! `scripts/run-on-host.sh`, the way to run one replica per host, rehearsed on
//! this machine: 127.0.0.1 to 127.0.0.4 are four distinct addresses of the
//! loopback device, so four "hosts" can all use the same ports, as real hosts would.

mod harness;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use harness::{free_port, temp_dir, Replica, BIN, EXIT_TIMEOUT};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/run-on-host.sh");
const SETTLE: Duration = Duration::from_secs(60);

/// Runs the script with `args`, split at spaces (no argument here has one).
fn run_script(args: &str) -> (Option<i32>, String, String) {
    let output = Command::new("bash")
        .arg(SCRIPT)
        .args(args.split_whitespace())
        .output()
        .expect("run scripts/run-on-host.sh");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn connect(host: &str, port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{host}:{port}/")).ok()?;
    client
        .get_connection_with_timeout(Duration::from_secs(5))
        .ok()
}

/// Sends one command until it gets an answer that is not an error (a replica
/// still starting, or no leader yet), and returns that answer.
fn query_until_ok(host: &str, port: u16, command: &[&str]) -> String {
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(mut c) = connect(host, port) {
            let mut cmd = redis::cmd(command[0]);
            for arg in &command[1..] {
                cmd.arg(*arg);
            }
            match cmd.query::<Option<String>>(&mut c) {
                Ok(answer) => return answer.unwrap_or_else(|| "(nil)".to_string()),
                Err(e) => last = e.to_string(),
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("{host}:{port} never answered {command:?}; last error: {last}");
}

fn info_lines(host: &str, port: u16) -> String {
    let mut c = connect(host, port).expect("connect");
    redis::cmd("INFO").query(&mut c).expect("INFO")
}

#[test]
fn the_script_refuses_bad_flags_in_one_line_and_prints_what_it_would_run() {
    let refused = [
        "--hosts a,b,c --id 2",
        "--hosts a,b,c --id 0 --cluster-id x",
        "--hosts a,b,c --id 4 --cluster-id x",
        "--hosts a:1,b,c --id 1 --cluster-id x",
        "--hosts a,a,c --id 1 --cluster-id x",
        "--hosts a,,c --id 1 --cluster-id x",
        "--hosts a,b,c --id 1 --cluster-id x --raft-port 70000",
        "--hosts a,b,c --id 1 --cluster-id x --client-port port",
        "--hosts a,b,c --id 1 --cluster-id x --http-port 0",
        "--hosts a,b,c --id 1 --cluster-id x --host d",
        "--id 4 --join a --cluster-id x",
        "--frobnicate",
    ];
    for args in refused {
        let (code, stdout, stderr) = run_script(args);
        assert_eq!(code, Some(2), "{args}: {stderr}");
        assert!(stdout.is_empty(), "{args} printed {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args}: {stderr}");
    }

    let (code, stdout, _) = run_script(
        "--hosts 10.0.0.1,10.0.0.2,10.0.0.3 --id 2 --cluster-id shop \
         --binary /opt/example-ondisk --dry-run",
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        "/opt/example-ondisk --replica-id 2 \
         --peers 1=10.0.0.1:63001,2=10.0.0.2:63001,3=10.0.0.3:63001 --cluster-id shop \
         --client-addr 10.0.0.2:6379 --data-dir example-data --http-addr 10.0.0.2:64001"
    );
    let (code, stdout, _) = run_script(
        "--id 4 --host 10.0.0.4 --join 10.0.0.1 --cluster-id shop \
         --binary /opt/example-ondisk --dry-run -- --log-level debug",
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        "/opt/example-ondisk --replica-id 4 --peers 4=10.0.0.4:63001 --cluster-id shop \
         --client-addr 10.0.0.4:6379 --data-dir example-data --http-addr 10.0.0.4:64001 \
         --join 10.0.0.1:63001 --log-level debug"
    );
}

#[test]
fn four_hosts_started_by_the_script_serve_grow_and_shrink() {
    let data = temp_dir();
    // Each "host" has its own address, so all of them use the same two ports.
    let raft_port = free_port().to_string();
    let client_port = free_port();
    let http_port = free_port().to_string();
    let hosts = "127.0.0.1,127.0.0.2,127.0.0.3";
    let common = |id: u64| -> Vec<String> {
        [
            "--id",
            &id.to_string(),
            "--cluster-id",
            "rehearsal",
            "--raft-port",
            &raft_port,
            "--client-port",
            &client_port.to_string(),
            "--http-port",
            &http_port,
            "--data-dir",
            &data.path().join(format!("host{id}")).display().to_string(),
            "--binary",
            BIN,
            "--no-prompt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let script = Path::new(SCRIPT);
    let _founders: Vec<Replica> = (1..=3)
        .map(|id| {
            let mut args = vec!["--hosts".to_string(), hosts.to_string()];
            args.extend(common(id));
            let dir = data.path().join(format!("host{id}"));
            Replica::spawn_program(script, id, &dir, args)
        })
        .collect();

    // A write at the second host is read at the third.
    assert_eq!(
        query_until_ok("127.0.0.2", client_port, &["SET", "greeting", "hello"]),
        "OK"
    );
    assert_eq!(
        query_until_ok("127.0.0.3", client_port, &["GET", "greeting"]),
        "hello"
    );
    let info = info_lines("127.0.0.1", client_port);
    for n in 1..=3 {
        let line = format!("member_{n}:role=voter,addr=127.0.0.{n}:{raft_port}");
        assert!(info.contains(&line), "no {line} in:\n{info}");
    }

    // A fourth host joins through the first, and gets what was written before.
    let mut args = vec![
        "--host".to_string(),
        "127.0.0.4".to_string(),
        "--join".to_string(),
        "127.0.0.1".to_string(),
    ];
    args.extend(common(4));
    let dir = data.path().join("host4");
    let mut fourth = Replica::spawn_program(script, 4, &dir, args);
    assert_eq!(
        query_until_ok("127.0.0.4", client_port, &["GET", "greeting"]),
        "hello"
    );
    let deadline = Instant::now() + SETTLE;
    let expected = format!("member_4:role=voter,addr=127.0.0.4:{raft_port}");
    while !info_lines("127.0.0.2", client_port).contains(&expected) {
        assert!(Instant::now() < deadline, "replica 4 never became a voter");
        thread::sleep(Duration::from_millis(200));
    }

    // Removing it from another host stops it, and the three go on.
    assert_eq!(
        query_until_ok(
            "127.0.0.3",
            client_port,
            &["CLUSTER", "REMOVE-REPLICA", "4"]
        ),
        "OK members=1,2,3"
    );
    let status = fourth.wait_own_exit(EXIT_TIMEOUT);
    assert!(status.success(), "the removed replica exited with {status}");
    assert!(
        fourth
            .stderr()
            .contains("replica 4 was removed from the cluster"),
        "{}",
        fourth.stderr()
    );
    assert_eq!(
        query_until_ok("127.0.0.1", client_port, &["SET", "after", "removal"]),
        "OK"
    );
}

#[test]
fn the_script_passes_a_cluster_secret_file_and_refuses_one_it_cannot_use() {
    let dir = temp_dir();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, "q2mJ0Yb6v7cXW1mKk3fP8s9dT4uR0eZaHq1LxN5oVgE=\n").unwrap();
    let empty = dir.path().join("empty.secret");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.secret");
    let base = "--hosts 10.0.0.1,10.0.0.2,10.0.0.3 --id 2 --cluster-id shop \
                --binary /opt/example-ondisk --dry-run";

    let (code, stdout, stderr) = run_script(&format!(
        "{base} --cluster-secret-file {}",
        secret.display()
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.trim().ends_with(&format!(
            "--data-dir example-data --http-addr 10.0.0.2:64001 --cluster-secret-file {}",
            secret.display()
        )),
        "{stdout}"
    );

    for (file, says) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let (code, stdout, stderr) =
            run_script(&format!("{base} --cluster-secret-file {}", file.display()));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{stderr}"
        );
    }
}
