//! The HTTP port (`--http-addr`): `/metrics` read by Prometheus text parsers,
//! `/health`, `/ready`, and what it does with bad input. Real replicas, real
//! Redis clients.
//!
//! Two parsers read each page: the `prometheus-parse` crate for the values,
//! and, where Python's `prometheus_client` is installed (`.ci/run` installs
//! it), its OpenMetrics parser, which is strict: it refuses a page that breaks
//! the format in any way. Without it that check is skipped, and says so.

mod harness;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use harness::{
    fresh_peers, replica_args, run_once, temp_dir, wait_listening, Cluster, Replica,
    ELECTION_TIMEOUT,
};
use prometheus_parse::{Scrape, Value};

/// How long a test waits for something that needs an election or a catch-up.
const SETTLE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// HTTP and the page
// ---------------------------------------------------------------------------

/// An HTTP response: its status code, its head and its body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as it is to 127.0.0.1:`port` and reads until the server
/// closes the connection.
fn exchange(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(SETTLE))?;
    stream.write_all(request)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(answer)
}

fn request(port: u16, method: &str, path: &str) -> Response {
    let text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let answer = exchange(port, text.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no end of head in {answer:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path)
}

/// `/metrics`, checked by both parsers, as values.
fn scrape(replica: &Replica) -> Page {
    let response = get(replica.http_port(), "/metrics");
    assert_eq!(
        response.status, 200,
        "replica {}: {}",
        replica.id, response.head
    );
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        response.head
    );
    strict_parse(&response.body);
    let lines = response.body.lines().map(|line| Ok(line.to_string()));
    let scrape = Scrape::parse(lines).expect("prometheus-parse reads the page");
    Page {
        text: response.body,
        scrape,
    }
}

/// A page and what prometheus-parse made of it.
struct Page {
    text: String,
    scrape: Scrape,
}

impl Page {
    /// The value of sample `name` whose labels include `labels`, if any.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == name)
            .find(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .map(|sample| match &sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a single number: {other:?}"),
            })
    }

    /// Like [`Page::value`], for a sample that must be there.
    fn number(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the page:\n{}", self.text))
    }

    /// The role whose `ondisk_raft_role` is 1 (and checks that only one is).
    fn role(&self) -> String {
        let roles: Vec<String> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == "ondisk_raft_role")
            .filter(|s| matches!(s.value, Value::Gauge(v) if v == 1.0))
            .filter_map(|s| s.labels.get("role").map(str::to_string))
            .collect();
        assert_eq!(
            roles.len(),
            1,
            "one role at a time: {roles:?}\n{}",
            self.text
        );
        roles[0].clone()
    }
}

/// The page through Python's OpenMetrics parser (strict), if it is installed.
fn strict_parse(page: &str) {
    const PARSE: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(len(families))\n";
    let have_parser = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !have_parser {
        eprintln!(
            "note: Python's prometheus_client is not installed; the strict OpenMetrics \
             check is skipped (pip install prometheus-client)"
        );
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(page.as_bytes())
        .expect("hand the page to python3");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the page: {}\n{page}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `path` until it answers `status`; returns that response.
fn wait_for_status(port: u16, path: &str, status: u16, timeout: Duration) -> Response {
    let deadline = Instant::now() + timeout;
    loop {
        let response = get(port, path);
        if response.status == status {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {} after {timeout:?}: {}",
            response.status,
            response.body
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Scrapes every replica until `check` holds for all pages at once.
fn wait_for_pages(
    cluster: &mut Cluster,
    what: &str,
    check: impl Fn(&[(u64, Page)]) -> bool,
) -> Vec<(u64, Page)> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let pages: Vec<(u64, Page)> = cluster
            .replicas()
            .iter()
            .map(|replica| (replica.id, scrape(replica)))
            .collect();
        if check(&pages) {
            return pages;
        }
        assert!(Instant::now() < deadline, "never {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

fn connect(port: u16) -> redis::Connection {
    harness::redis_connection(&format!("redis://127.0.0.1:{port}/"), SETTLE)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn the_replicas_agree_on_role_leader_and_term_and_the_figures_move_with_writes() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-every", "20"]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let settled = wait_for_pages(&mut cluster, "agreed on a leader and term", |pages| {
        let term = pages[0].1.number("ondisk_raft_term", &[]);
        pages.iter().all(|(id, page)| {
            page.number("ondisk_raft_leader_id", &[]) == leader as f64
                && page.number("ondisk_raft_term", &[]) == term
                && (page.role() == "leader") == (*id == leader)
        })
    });
    let before = |id: u64, name: &str, labels: &[(&str, &str)]| -> f64 {
        let (_, page) = settled.iter().find(|(i, _)| *i == id).expect("a page");
        page.value(name, labels).unwrap_or(0.0)
    };
    let follower = cluster.other_than(&[leader]);
    let follower_port = cluster.replica(follower).client_port();
    let sets_before = before(
        follower,
        "ondisk_client_request_seconds_count",
        &[("command", "SET")],
    );
    let applied_before = before(follower, "ondisk_raft_applied_index", &[]);
    let appends_before = before(
        leader,
        "ondisk_fsync_seconds_count",
        &[("site", "log_append")],
    );
    let command_errors_before = before(follower, "ondisk_errors_total", &[("kind", "command")]);

    // Writes and reads at a follower, through a real Redis client.
    let mut connection = connect(follower_port);
    for i in 0..60 {
        let () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(i)
            .query(&mut connection)
            .expect("SET");
        let _: String = redis::cmd("get")
            .arg(format!("key{i}"))
            .query(&mut connection)
            .expect("GET");
    }
    let unknown = redis::cmd("NO-SUCH-COMMAND").query::<()>(&mut connection);
    assert!(unknown.is_err(), "an unknown command is refused");

    let follower_page = scrape(cluster.replica(follower));
    assert!(
        follower_page.number("ondisk_client_request_seconds_count", &[("command", "SET")])
            >= sets_before + 60.0
    );
    assert!(
        follower_page.number("ondisk_client_request_seconds_count", &[("command", "GET")]) >= 60.0
    );
    assert!(
        follower_page.number(
            "ondisk_client_request_seconds_count",
            &[("command", "OTHER")]
        ) >= 1.0
    );
    assert!(
        !follower_page.text.contains("NO-SUCH-COMMAND"),
        "an unknown name never becomes a label"
    );
    assert!(
        follower_page.number("ondisk_errors_total", &[("kind", "command")]) > command_errors_before
    );
    assert!(follower_page.number("ondisk_client_connections", &[]) >= 1.0);
    assert!(follower_page.number("ondisk_raft_applied_index", &[]) >= applied_before + 60.0);
    drop(connection);

    // Every replica applied the writes, each fsynced its log, and each built
    // snapshots (one every 20 entries).
    let last_index = harness::settled_applied_index(&mut connect(follower_port), SETTLE) as f64;
    let pages = wait_for_pages(&mut cluster, "applied the writes everywhere", |pages| {
        pages
            .iter()
            .all(|(_, page)| page.number("ondisk_raft_applied_index", &[]) >= last_index)
    });
    for (id, page) in &pages {
        assert!(
            page.number("ondisk_raft_commit_index", &[])
                >= page.number("ondisk_raft_applied_index", &[]),
            "replica {id}"
        );
        assert!(page.number("ondisk_raft_last_log_index", &[]) >= last_index);
        assert!(
            page.number("ondisk_fsync_seconds_count", &[("site", "log_append")]) >= 1.0,
            "replica {id} never fsynced its log"
        );
        assert!(
            page.number("ondisk_snapshots_total", &[("event", "built")]) >= 1.0,
            "replica {id} built no snapshot"
        );
        assert!(page.number("ondisk_snapshot_bytes_total", &[("event", "built")]) > 0.0);
    }
    let leader_page = &pages
        .iter()
        .find(|(id, _)| *id == leader)
        .expect("leader")
        .1;
    assert!(
        leader_page.number("ondisk_fsync_seconds_count", &[("site", "log_append")])
            > appends_before
    );
    // The follower's write batcher proposed them (the leader only appended).
    let follower_page = &pages
        .iter()
        .find(|(id, _)| *id == follower)
        .expect("follower")
        .1;
    assert!(follower_page.number("ondisk_write_batch_ops_count", &[]) >= 60.0);
    assert!(follower_page.number("ondisk_write_batch_ops_sum", &[]) >= 60.0);
    for (id, _) in &pages {
        if *id != leader {
            let lag = leader_page.number(
                "ondisk_raft_replication_lag_entries",
                &[("follower", &id.to_string())],
            );
            assert!(lag >= 0.0, "lag of replica {id}: {lag}");
        }
    }

    // A settled cluster is ready everywhere.
    for replica in cluster.replicas() {
        assert_eq!(get(replica.http_port(), "/health").status, 200);
        let ready = wait_for_status(replica.http_port(), "/ready", 200, SETTLE);
        assert_eq!(ready.body, "ready\n");
    }
}

#[test]
fn a_lone_replica_is_healthy_but_not_ready_and_bad_requests_break_nothing() {
    let data = temp_dir();
    let peers = fresh_peers(3);
    let mut replica = Replica::spawn(1, data.path(), replica_args(1, data.path(), &peers, &[]));
    let port = replica.http_port();
    wait_listening(port, SETTLE);

    assert_eq!(get(port, "/health").status, 200);
    let not_ready = get(port, "/ready");
    assert_eq!(not_ready.status, 503, "{}", not_ready.body);
    assert!(
        not_ready.body.starts_with("not ready: "),
        "{}",
        not_ready.body
    );
    assert_eq!(not_ready.body.lines().count(), 1, "{}", not_ready.body);
    // Once it has started (it looks for its peers for a while first), the
    // reason is the missing leader.
    let deadline = Instant::now() + SETTLE;
    loop {
        let body = get(port, "/ready").body;
        if body.starts_with("not ready: no leader known") {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        thread::sleep(Duration::from_millis(100));
    }
    let page = scrape(&replica);
    assert_eq!(page.number("ondisk_raft_leader_id", &[]), 0.0);
    assert_ne!(page.role(), "leader");

    // Paths and methods it does not serve.
    let missing = get(port, "/nowhere");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/metrics"), "{}", missing.body);
    assert_eq!(get(port, "/").status, 404);
    let post = request(port, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert!(post.head.to_ascii_lowercase().contains("allow: get, head"));
    let head = request(port, "HEAD", "/health");
    assert_eq!((head.status, head.body.as_str()), (200, ""));

    // Garbage of every kind: answered with 400 or closed, never a crash.
    let long_head = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let garbage: [&[u8]; 6] = [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        long_head.as_bytes(),
    ];
    for bytes in garbage {
        if let Ok(answer) = exchange(port, bytes) {
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
                "{:?} got {answer:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            );
        }
    }
    // A connection that sends half a request and goes away.
    let mut half = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    half.write_all(b"GET /metr").expect("write");
    drop(half);

    assert!(replica.still_running(), "the replica died");
    assert_eq!(get(port, "/health").status, 200);
    let status = replica.send("status");
    assert!(status.starts_with("role="), "{status}");
}

#[test]
fn a_bad_or_taken_http_address_is_refused_in_one_line() {
    let data = temp_dir();
    let peers = fresh_peers(3);
    for bad in ["nope", "127.0.0.1:0", "127.0.0.1:99999", ":8080"] {
        let outcome = run_once(
            &replica_args(1, data.path(), &peers, &["--http-addr", bad]),
            SETTLE,
        );
        assert_eq!(outcome.code, Some(2), "--http-addr {bad}: {outcome}");
        let lines: Vec<&str> = outcome.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "--http-addr {bad}: {outcome}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains("--http-addr"),
            "{outcome}"
        );
    }
    let both = run_once(
        &replica_args(
            1,
            data.path(),
            &peers,
            &["--no-http", "--http-addr", "127.0.0.1:1"],
        ),
        SETTLE,
    );
    assert_eq!(both.code, Some(2), "{both}");

    // A port that something else holds: one line that names the flags to
    // change, exit code 1, and no data folder left behind.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let fresh = temp_dir();
    let outcome = run_once(
        &replica_args(1, fresh.path(), &peers, &["--http-addr", &addr]),
        SETTLE,
    );
    assert_eq!(outcome.code, Some(1), "{outcome}");
    let errors: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{outcome}");
    assert!(
        errors[0].contains(&format!("cannot serve HTTP on {addr}"))
            && errors[0].contains("--http-addr")
            && errors[0].contains("--no-http"),
        "{outcome}"
    );
}

#[test]
fn snapshots_sent_and_installed_are_counted_with_their_bytes() {
    let mut cluster = Cluster::start_with(3, &["--snapshot-every", "20"]);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let behind = cluster.other_than(&[leader]);
    let behind_last = cluster.replica(behind).status().number("last_log_index");
    cluster.replica(behind).kill();
    let mut connection = connect(cluster.replica(leader).client_port());
    // Write until the leader's log no longer holds what the stopped replica
    // needs next: it then can only catch up by snapshot. (openraft postpones a
    // purge while a replication stream to the stopped replica still wants
    // those entries, so how many writes that takes varies.)
    let mut written = 0;
    while cluster.replica(leader).status().number("first_log_index") <= behind_last + 1 {
        assert!(
            written < 2000,
            "the leader never purged its log past {behind_last}"
        );
        for _ in 0..40 {
            let () = redis::cmd("SET")
                .arg(format!("k{written}"))
                .arg("v")
                .query(&mut connection)
                .expect("SET");
            written += 1;
        }
    }
    cluster.replica(behind).restart();
    let behind_port = cluster.replica(behind).http_port();
    wait_listening(behind_port, SETTLE);
    let leader_port = cluster.replica(leader).http_port();

    let deadline = Instant::now() + SETTLE;
    loop {
        let installed = scrape(cluster.replica(behind));
        let sent = scrape(cluster.replica(leader));
        let done = installed.number("ondisk_snapshots_total", &[("event", "installed")]) >= 1.0
            && sent.number("ondisk_snapshots_total", &[("event", "sent")]) >= 1.0;
        if done {
            assert!(
                installed.number("ondisk_snapshot_bytes_total", &[("event", "installed")]) > 0.0
            );
            assert!(sent.number("ondisk_snapshot_bytes_total", &[("event", "sent")]) > 0.0);
            assert!(
                installed.number(
                    "ondisk_fsync_seconds_count",
                    &[("site", "snapshot_install")]
                ) >= 1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot sent and installed:\n{}\n{}",
            sent.text,
            installed.text
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Once it has caught up, the restarted replica is ready too.
    wait_for_status(behind_port, "/ready", 200, SETTLE);
    assert_eq!(get(leader_port, "/ready").status, 200);
}
