//! redis-py, the Python client most applications use, against a real cluster,
//! with its defaults (in redis-py 8.x: RESP3, so every connection opens with
//! `HELLO 3`). The checks themselves live in `tests/clients/redis_py_check.py`,
//! which also runs against a real `redis-server`: that is how we know the
//! script asks for Redis's behaviour and not ours.

mod harness;

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/redis_py_check.py"
);

/// How long the whole script may take. redis-py waits forever for a reply by
/// default, so a server that never answers would otherwise hang the test.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the client ports get to start listening once a leader is known.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// `None` if `python3 -c 'import redis'` works, otherwise why not.
fn redis_py_missing() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import redis"])
        .output()
    {
        Ok(output) if output.status.success() => None,
        // The last line of the traceback says it: `ModuleNotFoundError: ...`.
        Ok(output) => Some(
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("import failed")
                .to_string(),
        ),
        Err(e) => Some(format!("cannot run python3: {e}")),
    }
}

/// How a run of the script ended: `None` if it was killed at the deadline.
struct ScriptRun {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs the script against `port` (and `follower_port`), killing it after
/// [`SCRIPT_TIMEOUT`].
fn run_script(port: u16, follower_port: u16) -> ScriptRun {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .args(["--port", &port.to_string()])
        .args(["--follower-port", &follower_port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll python3") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    ScriptRun {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn redis_py_with_its_defaults_connects_transacts_locks_and_scans() {
    if let Some(why) = redis_py_missing() {
        eprintln!("skipped: redis-py is not installed (pip install redis): {why}");
        return;
    }
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let follower = cluster.other_than(&[leader]);
    let leader_port = cluster.replica(leader).client_port();
    let follower_port = cluster.replica(follower).client_port();
    harness::wait_listening(leader_port, LISTEN_TIMEOUT);
    harness::wait_listening(follower_port, LISTEN_TIMEOUT);

    let run = run_script(leader_port, follower_port);

    // What the server is known not to do passes, but is never hidden.
    for line in run.stdout.lines().filter(|line| line.starts_with("gap ")) {
        eprintln!("redis-py {line}");
    }
    let report = format!(
        "leader {leader} (port {leader_port}), follower {follower} (port {follower_port})\n\
         --- script stdout ---\n{}--- script stderr ---\n{}",
        run.stdout, run.stderr
    );
    match run.status {
        None => panic!(
            "redis_py_check.py did not finish within {SCRIPT_TIMEOUT:?} \
             (the check after the last ok line waits for a reply)\n{report}"
        ),
        Some(status) => assert!(
            status.success(),
            "redis_py_check.py failed ({status})\n{report}"
        ),
    }
}
