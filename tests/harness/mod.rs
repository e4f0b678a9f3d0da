//! A small harness that drives the real `example-ondisk` binary.
//!
//! * [`Cluster::start`] picks free loopback ports, makes a temporary data folder and
//!   starts three replicas with piped stdin/stdout/stderr.
//! * [`Replica::send`] writes one prompt line and waits for the one line the binary
//!   promises to answer with (see `notes/interface.md`).
//! * [`Replica::kill`], [`Replica::stop`], [`Replica::cont`], [`Replica::restart`] and
//!   [`Replica::exit`] play the failures the tests are about;
//!   [`Replica::restart_with_env`] and [`Replica::wait_own_exit`] drive the
//!   binary's test-only crash hooks.
//! * [`run_once`] runs the binary to completion, for flag tests.
//!
//! When a test panics, dropping the [`Cluster`] (or a lone [`Replica`]) prints each
//! replica's stderr and the tail of its `replica.log` before killing it, so the
//! failure comes with the replica's side of the story. Run with `ONDISK_KEEP_DATA=1`
//! to also keep a failed cluster's data folder (its path is printed).
//!
//! Nothing here sleeps for a fixed time to "let things settle": every wait polls for
//! the condition it needs, with a generous deadline (the tests run in parallel on a
//! small machine).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod netns;
pub mod partition;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_example-ondisk");

/// How long [`Replica::send`] waits for a reply. Generous: a put may wait for an
/// election, and a slow CI machine runs several clusters at once.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a process gets to exit after being asked to.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the tests wait for a leader after a start, a kill or a stop.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Set this environment variable to keep the data folder of a failed cluster test.
pub const KEEP_DATA_VAR: &str = "ONDISK_KEEP_DATA";

/// How many bytes of each `replica.log` [`Replica::dump_logs`] prints.
const LOG_TAIL_BYTES: usize = 8 * 1024;

// ---------------------------------------------------------------------------
// Ports and the member list
// ---------------------------------------------------------------------------

/// Ports already handed out by this test process, so two clusters started in
/// parallel never get the same one even if the kernel offers it twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A fresh temporary folder, deleted when dropped.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ondisk-test-")
        .tempdir()
        .expect("create a temporary folder")
}

/// Where test ports come from: below Linux's ephemeral range (32768-60999),
/// where the kernel picks the local port of every outgoing connection. A port
/// from there, free while its replica was down for a restart, could be taken
/// by any process's outgoing connection, and the restart failed with "address
/// already in use" (seen once in a 30-minute chaos run).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that was free a moment ago, from [`TEST_PORTS`], picked at
/// random so that test processes running at once rarely try the same one.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    let seeds = RandomState::new();
    for attempt in 0u64.. {
        let offset = seeds.hash_one(attempt) % span;
        let port = TEST_PORTS.start + u16::try_from(offset).expect("offset within the span");
        if lock(&HANDED_OUT).contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && lock(&HANDED_OUT).insert(port) {
            return port;
        }
    }
    unreachable!("the loop above only ends by returning")
}

/// A `--peers` value for replicas `1..=n` on fresh loopback ports:
/// `1=127.0.0.1:P1,2=127.0.0.1:P2,...`.
pub fn fresh_peers(n: u64) -> String {
    (1..=n)
        .map(|id| format!("{id}=127.0.0.1:{}", free_port()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The port of replica `id` in a `--peers` value.
pub fn port_of(peers: &str, id: u64) -> u16 {
    peers
        .split(',')
        .find_map(|part| {
            let (member, addr) = part.split_once('=')?;
            (member == id.to_string()).then(|| addr.rsplit_once(':')?.1.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no port for replica {id} in {peers:?}"))
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The arguments that start replica `id` of a cluster. Its client port and
/// its HTTP port are fresh ones too (tests run in parallel, and the defaults
/// derive from the id), unless `extra` names one or says `--no-http`.
pub fn replica_args(id: u64, data_dir: &Path, peers: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--replica-id".to_string(),
        id.to_string(),
        "--data-dir".to_string(),
        data_dir.display().to_string(),
        "--peers".to_string(),
        peers.to_string(),
    ];
    if !extra.contains(&"--client-addr") {
        args.push("--client-addr".to_string());
        args.push(format!("127.0.0.1:{}", free_port()));
    }
    if !extra.contains(&"--http-addr") && !extra.contains(&"--no-http") {
        args.push("--http-addr".to_string());
        args.push(format!("127.0.0.1:{}", free_port()));
    }
    // Calmer Raft timing than the defaults (50 ms heartbeats, 250 ms election
    // timeout, chosen for failover within a second and measured by
    // scripts/failover.sh on release builds). The tests run up to six
    // debug-build replicas on two cores: a leader there was seen silent for
    // 0.8 s, which the defaults take for a lost leader, and a test's first
    // write was then answered "may or may not be applied". Tests check what
    // happens, not how fast, so they allow a leader up to a second.
    if !extra.contains(&"--election-timeout") {
        args.extend(["--heartbeat-interval", "100", "--election-timeout", "500"].map(String::from));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

// ---------------------------------------------------------------------------
// Status lines
// ---------------------------------------------------------------------------

/// A parsed `status` line: `role=leader leader=1 term=2 ... replayed=0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub line: String,
    pub fields: BTreeMap<String, String>,
}

impl Status {
    /// Parses a status line; panics (naming the line) if a field is not `key=value`.
    pub fn parse(line: &str) -> Status {
        let mut fields = BTreeMap::new();
        for part in line.split_whitespace() {
            let (key, value) = part
                .split_once('=')
                .unwrap_or_else(|| panic!("status field {part:?} is not key=value in {line:?}"));
            fields.insert(key.to_string(), value.to_string());
        }
        Status {
            line: line.to_string(),
            fields,
        }
    }

    /// The text of field `key`; panics if the status line has no such field.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .get(key)
            .unwrap_or_else(|| panic!("status has no {key:?} field: {:?}", self.line))
    }

    /// Field `key` as a number; panics if it is missing or not a number.
    pub fn number(&self, key: &str) -> u64 {
        let text = self.get(key);
        text.parse().unwrap_or_else(|_| {
            panic!(
                "status field {key}={text:?} is not a number: {:?}",
                self.line
            )
        })
    }

    /// `leader|follower|candidate|learner|shutdown`.
    pub fn role(&self) -> &str {
        self.get("role")
    }

    /// The leader this replica knows of, if any (`leader=none` gives `None`).
    pub fn leader(&self) -> Option<u64> {
        match self.get("leader") {
            "none" => None,
            text => Some(
                text.parse()
                    .unwrap_or_else(|_| panic!("leader={text:?} is not an id: {:?}", self.line)),
            ),
        }
    }

    pub fn applied(&self) -> u64 {
        self.number("applied")
    }

    pub fn committed(&self) -> u64 {
        self.number("committed")
    }

    pub fn term(&self) -> u64 {
        self.number("term")
    }

    pub fn recovered_at(&self) -> u64 {
        self.number("recovered_at")
    }

    pub fn replayed(&self) -> u64 {
        self.number("replayed")
    }

    /// A field that is a number or `none` (`snapshot_index=none` gives `None`);
    /// panics if it is missing or anything else.
    pub fn optional_number(&self, key: &str) -> Option<u64> {
        match self.get(key) {
            "none" => None,
            _ => Some(self.number(key)),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// True for a prompt reply that reports a failure.
pub fn is_error(reply: &str) -> bool {
    reply.starts_with("(error) ")
}

// ---------------------------------------------------------------------------
// One replica process
// ---------------------------------------------------------------------------

/// Why a line could not be exchanged with a replica.
#[derive(Debug)]
pub enum SendError {
    /// The process is not running (killed, exited, or its stdin was closed).
    NotRunning,
    /// Writing the line to stdin failed (the process died).
    Write(std::io::Error),
    /// Stdout closed before a reply came (the process died).
    Closed,
    /// No reply within the timeout.
    Timeout(Duration),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotRunning => write!(f, "the replica is not running"),
            SendError::Write(e) => write!(f, "writing to its stdin failed: {e}"),
            SendError::Closed => write!(f, "its stdout closed before a reply"),
            SendError::Timeout(t) => write!(f, "no reply within {t:?}"),
        }
    }
}

/// The pieces of a running process.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines read from stdout by a reader thread.
    lines: Receiver<String>,
    /// The thread copying stderr into [`Replica::stderr`]; it ends when the process does.
    stderr_reader: thread::JoinHandle<()>,
}

impl Running {
    /// Waits (briefly) for the stderr reader, so the last lines are in the buffer.
    fn finish_stderr(self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.stderr_reader.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One `example-ondisk` process, restartable with the same arguments.
pub struct Replica {
    pub id: u64,
    /// What is started: the binary, or a script that `exec`s it.
    program: PathBuf,
    args: Vec<String>,
    /// `DIR/replica-N`, where its database and `replica.log` live.
    pub dir: PathBuf,
    running: Option<Running>,
    /// Everything the process (and earlier runs of it) wrote to stderr.
    stderr: Arc<Mutex<String>>,
    runs: usize,
    /// Extra environment for the next launches (fault-injection hooks).
    pub env: Vec<(String, String)>,
}

impl Replica {
    /// Starts replica `id` with exactly `args` (which must name `--data-dir`
    /// `data_dir`, used to find its folder for diagnostics).
    pub fn spawn(id: u64, data_dir: &Path, args: Vec<String>) -> Replica {
        Replica::spawn_program(Path::new(BIN), id, data_dir, args)
    }

    /// [`Replica::spawn`] through another program, such as a script in `scripts/`
    /// that ends by `exec`ing the binary (so signals still reach the replica).
    pub fn spawn_program(program: &Path, id: u64, data_dir: &Path, args: Vec<String>) -> Replica {
        Replica::spawn_program_with_env(program, id, data_dir, args, Vec::new())
    }

    /// [`Replica::spawn_program`] with `env` added to the environment of
    /// this launch and every restart (fault-injection hooks).
    pub fn spawn_program_with_env(
        program: &Path,
        id: u64,
        data_dir: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Replica {
        let mut replica = Replica {
            id,
            program: program.to_path_buf(),
            args,
            dir: data_dir.join(format!("replica-{id}")),
            running: None,
            stderr: Arc::new(Mutex::new(String::new())),
            runs: 0,
            env,
        };
        replica.launch();
        replica
    }

    fn launch(&mut self) {
        assert!(
            self.running.is_none(),
            "replica {} is already running",
            self.id
        );
        self.runs += 1;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));

        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut stderr = child.stderr.take().expect("stderr is piped");
        let buffer = Arc::clone(&self.stderr);
        let header = format!("--- run {} ---\n", self.runs);
        lock(&buffer).push_str(&header);
        let stderr_reader = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                lock(&buffer).push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });

        let stdin = child.stdin.take();
        self.running = Some(Running {
            child,
            stdin,
            lines,
            stderr_reader,
        });
    }

    /// The `HOST:PORT` this replica serves Redis clients on (its `--client-addr`).
    pub fn client_addr(&self) -> &str {
        self.args
            .iter()
            .skip_while(|arg| *arg != "--client-addr")
            .nth(1)
            .unwrap_or_else(|| panic!("replica {} was started without --client-addr", self.id))
    }

    /// The port this replica serves Redis clients on (from its `--client-addr`).
    pub fn client_port(&self) -> u16 {
        self.client_addr()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("replica {}: --client-addr has no port", self.id))
    }

    /// The port this replica serves HTTP on (from its `--http-addr`), for
    /// `/metrics`, `/health` and `/ready`.
    pub fn http_port(&self) -> u16 {
        self.args
            .iter()
            .skip_while(|arg| *arg != "--http-addr")
            .nth(1)
            .and_then(|addr| addr.rsplit_once(':')?.1.parse().ok())
            .unwrap_or_else(|| panic!("replica {} was started without --http-addr", self.id))
    }

    /// The process id of the running process.
    pub fn pid(&self) -> u32 {
        self.running
            .as_ref()
            .unwrap_or_else(|| panic!("replica {} is not running", self.id))
            .child
            .id()
    }

    /// True while the process has been started and not killed or reaped.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// True if the process has not exited (polls it; does not wait).
    pub fn still_running(&mut self) -> bool {
        match self.running.as_mut() {
            Some(running) => running
                .child
                .try_wait()
                .expect("poll a child process")
                .is_none(),
            None => false,
        }
    }

    /// Everything written to stderr so far (all runs).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Writes `line` and waits up to `timeout` for one line of reply.
    pub fn try_send_within(&mut self, line: &str, timeout: Duration) -> Result<String, SendError> {
        self.write_raw(&format!("{line}\n"))?;
        let running = self.running.as_mut().ok_or(SendError::NotRunning)?;
        match running.lines.recv_timeout(timeout) {
            Ok(reply) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => Err(SendError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(SendError::Closed),
        }
    }

    /// Writes `text` as it is, waiting for no reply (for blank lines, say).
    pub fn write_raw(&mut self, text: &str) -> Result<(), SendError> {
        let running = self.running.as_mut().ok_or(SendError::NotRunning)?;
        let stdin = running.stdin.as_mut().ok_or(SendError::NotRunning)?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(SendError::Write)
    }

    /// Waits up to `timeout` for the next line of output (the answer to a
    /// line sent with [`Replica::write_raw`]).
    pub fn next_line_within(&mut self, timeout: Duration) -> Result<String, SendError> {
        let running = self.running.as_mut().ok_or(SendError::NotRunning)?;
        match running.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(SendError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(SendError::Closed),
        }
    }

    /// Writes raw bytes to the prompt, which need not be UTF-8.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        let running = self.running.as_mut().ok_or(SendError::NotRunning)?;
        let stdin = running.stdin.as_mut().ok_or(SendError::NotRunning)?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(SendError::Write)
    }

    /// Like [`Replica::send`], but reports a dead process instead of panicking.
    pub fn try_send(&mut self, line: &str) -> Result<String, SendError> {
        self.try_send_within(line, REPLY_TIMEOUT)
    }

    /// Writes `line` and returns the one line the replica answers with.
    /// Panics (with the replica's stderr) if no reply comes within [`REPLY_TIMEOUT`].
    pub fn send(&mut self, line: &str) -> String {
        match self.try_send(line) {
            Ok(reply) => reply,
            Err(e) => panic!(
                "replica {}: sent {:?}: {e}\nstderr:\n{}",
                self.id,
                shorten(line),
                self.stderr()
            ),
        }
    }

    /// Sends `line` until the reply is not an `(error) ...`, for the moments when an
    /// election may be under way. Panics with the last error after `timeout`.
    /// Do not use it where the error itself is what is being tested.
    pub fn send_until_ok(&mut self, line: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.send(line);
            if !is_error(&reply) {
                return reply;
            }
            if Instant::now() >= deadline {
                panic!(
                    "replica {}: {:?} still fails after {timeout:?}: {reply}",
                    self.id,
                    shorten(line)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `status`, parsed.
    pub fn status(&mut self) -> Status {
        let line = self.send("status");
        assert!(
            !is_error(&line),
            "replica {}: status failed: {line}",
            self.id
        );
        Status::parse(&line)
    }

    /// `put KEY VALUE`, expecting `OK`.
    pub fn put(&mut self, key: &str, value: &str) {
        let reply = self.send(&format!("put {key} {value}"));
        assert_eq!(reply, "OK", "replica {}: put {key}", self.id);
    }

    /// `get KEY`: the raw reply (the value, `(nil)`, or `(error) ...`).
    pub fn get(&mut self, key: &str) -> String {
        self.send(&format!("get {key}"))
    }

    /// Polls `status` until `applied >= index`; for reads that must see a write
    /// without going through the leader (a catching-up follower, say).
    pub fn wait_applied(&mut self, index: u64, timeout: Duration) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if status.applied() >= index {
                return status;
            }
            if Instant::now() >= deadline {
                panic!("replica {}: applied stays below {index}: {status}", self.id);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, then reap. Returns quietly if the process already exited.
    pub fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            // Ok or "already exited" are both fine; what matters is that it is gone.
            let _ = running.child.kill();
            running.child.wait().expect("reap a killed replica");
            running.finish_stderr();
        }
    }

    /// SIGSTOP: the process freezes (no timers, no replies) until [`Replica::cont`].
    pub fn stop(&mut self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`Replica::stop`].
    pub fn cont(&mut self) {
        signal(self.pid(), "CONT");
    }

    /// SIGTERM.
    pub fn terminate(&mut self) {
        signal(self.pid(), "TERM");
    }

    /// Closes stdin (end of input) without waiting.
    pub fn close_stdin(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.stdin = None;
        }
    }

    /// Waits up to `timeout` for the process to exit by itself and returns how it
    /// exited. On timeout it is killed and the test fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut running = self
            .running
            .take()
            .unwrap_or_else(|| panic!("replica {} is not running", self.id));
        running.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match running.child.try_wait().expect("poll a child process") {
                Some(status) => {
                    running.finish_stderr();
                    return status;
                }
                None if Instant::now() >= deadline => {
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    panic!(
                        "replica {} did not exit within {timeout:?}\nstderr:\n{}",
                        self.id,
                        self.stderr()
                    );
                }
                None => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Clean shutdown: `exit`, close stdin, and expect exit code 0.
    pub fn exit(&mut self) {
        if let Err(e) = self.write_raw("exit\n") {
            panic!("replica {}: cannot send exit: {e}", self.id);
        }
        let status = self.wait_exit(EXIT_TIMEOUT);
        assert_eq!(
            status.code(),
            Some(0),
            "replica {} should exit 0 after `exit`, got {status}\nstderr:\n{}",
            self.id,
            self.stderr()
        );
    }

    /// Starts the process again with the same arguments and data folder.
    /// The previous process must be gone ([`Replica::kill`] or [`Replica::exit`]).
    pub fn restart(&mut self) {
        self.launch();
    }

    /// Like [`Replica::restart`], with `vars` added to the environment of this one
    /// launch only (a fault-injection hook, say); later restarts go without them.
    pub fn restart_with_env(&mut self, vars: &[(&str, &str)]) {
        let saved = self.env.clone();
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.launch();
        self.env = saved;
    }

    /// Waits up to `timeout` for the process to end by itself (a crash, say) with
    /// its stdin still open, since closing it would make the replica shut down on
    /// its own. Returns how it exited; panics if it is still running.
    pub fn wait_own_exit(&mut self, timeout: Duration) -> ExitStatus {
        assert!(self.is_running(), "replica {} is not running", self.id);
        let deadline = Instant::now() + timeout;
        while self.still_running() {
            if Instant::now() >= deadline {
                panic!(
                    "replica {} is still running after {timeout:?}\nstderr:\n{}",
                    self.id,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// Prints this replica's stderr and the tail of its `replica.log`.
    pub fn dump_logs(&self) {
        eprintln!("===== replica {} stderr =====\n{}", self.id, self.stderr());
        let log = self.dir.join("replica.log");
        match std::fs::read(&log) {
            Ok(bytes) => {
                let tail = &bytes[bytes.len().saturating_sub(LOG_TAIL_BYTES)..];
                eprintln!(
                    "===== replica {} {} (last {} bytes) =====\n{}",
                    self.id,
                    log.display(),
                    tail.len(),
                    String::from_utf8_lossy(tail)
                );
            }
            Err(e) => eprintln!(
                "===== replica {}: no {} ({e}) =====",
                self.id,
                log.display()
            ),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill(); // SIGKILL ends a SIGSTOPped process too
        if thread::panicking() {
            self.dump_logs();
        }
    }
}

// ---------------------------------------------------------------------------
// A cluster of replicas
// ---------------------------------------------------------------------------

/// `n` replicas sharing one temporary data folder and a fresh member list.
pub struct Cluster {
    // Declared before `data` so replicas are killed (and their logs dumped)
    // before the folder is deleted.
    replicas: Vec<Replica>,
    /// Set by [`Cluster::start_in_namespaces`]. Declared after `replicas`: a
    /// namespace goes only once the replica in it has been killed.
    pub network: Option<netns::Network>,
    pub peers: String,
    /// Set by [`Cluster::start_partitionable`]: the proxies between replicas.
    pub partitions: Option<partition::Partitions>,
    /// Keep the data folder (with every replica's whole log) if the test fails,
    /// as `ONDISK_KEEP_DATA` does for every test.
    pub keep_data_on_failure: bool,
    /// Whether [`Cluster::wait_for_leader`] has seen the new cluster settle
    /// on its machine version.
    version_settled: bool,
    data: TempDir,
}

impl Cluster {
    /// Starts replicas `1..=n` with no extra flags.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts replicas `1..=n`, each with `extra` flags after the standard ones.
    pub fn start_with(n: u64, extra: &[&str]) -> Cluster {
        Cluster::start_in(temp_dir(), fresh_peers(n), extra)
    }

    /// Starts replicas `1..=n` with `extra` flags; `(id, name, value)` in
    /// `env` sets `name` in replica `id`'s environment, at every start.
    pub fn start_with_env(n: u64, extra: &[&str], env: &[(u64, &str, &str)]) -> Cluster {
        Cluster::start_in_with_env(temp_dir(), fresh_peers(n), extra, env)
    }

    /// Starts every replica of `peers` in the data folder `data`, which may
    /// already hold their folders (made by `example-ondisk restore`, say).
    pub fn start_in(data: TempDir, peers: String, extra: &[&str]) -> Cluster {
        Cluster::start_in_with_env(data, peers, extra, &[])
    }

    fn start_in_with_env(
        data: TempDir,
        peers: String,
        extra: &[&str],
        env: &[(u64, &str, &str)],
    ) -> Cluster {
        let n = peers.split(',').count() as u64;
        let replicas = (1..=n)
            .map(|id| {
                let vars = env
                    .iter()
                    .filter(|(of, _, _)| *of == id)
                    .map(|(_, name, value)| (name.to_string(), value.to_string()))
                    .collect();
                Replica::spawn_program_with_env(
                    Path::new(BIN),
                    id,
                    data.path(),
                    replica_args(id, data.path(), &peers, extra),
                    vars,
                )
            })
            .collect();
        Cluster {
            replicas,
            network: None,
            peers,
            partitions: None,
            keep_data_on_failure: false,
            version_settled: false,
            data,
        }
    }

    /// Like [`Cluster::start_with`], with every Raft connection going through
    /// a proxy that can cut links ([`partition::Partitions`]).
    pub fn start_partitionable(n: u64, extra: &[&str]) -> Cluster {
        let data = temp_dir();
        let partitions = partition::Partitions::start(n);
        let peers = partitions.peers.clone();
        let replicas = (1..=n)
            .map(|id| {
                let mut flags: Vec<String> = partitions.flags(id);
                flags.extend(extra.iter().map(|f| f.to_string()));
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                Replica::spawn(
                    id,
                    data.path(),
                    replica_args(id, data.path(), &peers, &flags),
                )
            })
            .collect();
        Cluster {
            replicas,
            network: None,
            peers,
            partitions: Some(partitions),
            keep_data_on_failure: false,
            version_settled: false,
            data,
        }
    }

    /// Like [`Cluster::start_with`], with each replica in a network namespace
    /// of its own ([`netns::Network`]), so links can really be cut. `Err`:
    /// one line saying why namespaces cannot be used here (the tests print it
    /// and skip).
    pub fn start_in_namespaces(n: u64, extra: &[&str]) -> Result<Cluster, String> {
        let network = netns::Network::create(n)?;
        let data = temp_dir();
        let peers = (1..=n)
            .map(|id| format!("{id}={}:{}", network.address(id), free_port()))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = (1..=n)
            .map(|id| {
                let client_addr = format!("{}:{}", network.address(id), free_port());
                let mut flags = vec!["--client-addr", client_addr.as_str()];
                flags.extend_from_slice(extra);
                let mut args: Vec<String> = ["netns", "exec", &network.namespace(id), BIN]
                    .map(String::from)
                    .to_vec();
                args.extend(replica_args(id, data.path(), &peers, &flags));
                Replica::spawn_program(Path::new("ip"), id, data.path(), args)
            })
            .collect();
        Ok(Cluster {
            replicas,
            network: Some(network),
            peers,
            partitions: None,
            keep_data_on_failure: false,
            version_settled: false,
            data,
        })
    }

    /// The namespaces of a cluster from [`Cluster::start_in_namespaces`].
    pub fn network(&self) -> &netns::Network {
        self.network
            .as_ref()
            .expect("the cluster was started in network namespaces")
    }

    /// A `redis` crate connection to replica `id`'s client port (from inside
    /// the hub namespace for a cluster in namespaces), retried until the port
    /// answers or `settle` has passed; replies may take `settle` too.
    pub fn redis(&mut self, id: u64, settle: Duration) -> redis::Connection {
        let url = format!("redis://{}/", self.replica(id).client_addr());
        match &self.network {
            Some(network) => network.in_hub(|| redis_connection(&url, settle)),
            None => redis_connection(&url, settle),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Replica `id` (1-based, as on the command line).
    pub fn replica(&mut self, id: u64) -> &mut Replica {
        let index = usize::try_from(id - 1).expect("small replica id");
        self.replicas
            .get_mut(index)
            .unwrap_or_else(|| panic!("no replica {id} in this cluster"))
    }

    /// Starts one more replica (`id` must be the next number) with `args`,
    /// which name this cluster's data folder; for growing the cluster.
    pub fn spawn_extra(&mut self, id: u64, args: Vec<String>) -> &mut Replica {
        assert_eq!(
            id as usize,
            self.replicas.len() + 1,
            "extra replicas come in order"
        );
        let replica = Replica::spawn(id, self.data.path(), args);
        self.replicas.push(replica);
        self.replicas.last_mut().expect("just pushed")
    }

    /// [`Cluster::spawn_extra`] with `env` in the new replica's environment
    /// at every start (a test hook, say).
    pub fn spawn_extra_with_env(
        &mut self,
        id: u64,
        args: Vec<String>,
        env: &[(&str, &str)],
    ) -> &mut Replica {
        assert_eq!(
            id as usize,
            self.replicas.len() + 1,
            "extra replicas come in order"
        );
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let replica =
            Replica::spawn_program_with_env(Path::new(BIN), id, self.data.path(), args, env);
        self.replicas.push(replica);
        self.replicas.last_mut().expect("just pushed")
    }

    /// All replicas, running or not.
    pub fn replicas(&mut self) -> &mut [Replica] {
        &mut self.replicas
    }

    /// Ids of the replicas whose process is running (stopped ones included).
    pub fn running_ids(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|r| r.is_running())
            .map(|r| r.id)
            .collect()
    }

    /// Waits until every running replica in `among` reports the same leader, and
    /// that leader (one of `among`) reports `role=leader`. Returns its id.
    pub fn wait_for_leader_among(&mut self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<(u64, Status)> = among
                .iter()
                .map(|&id| (id, self.replica(id).status()))
                .collect();
            if let Some(leader) = agreed_leader(&statuses) {
                return leader;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = statuses
                    .iter()
                    .map(|(id, s)| format!("  replica {id}: {s}"))
                    .collect();
                panic!(
                    "no agreed leader among {among:?} within {timeout:?}:\n{}",
                    seen.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Cluster::wait_for_leader_among`] all running replicas. The first
    /// time, also waits for the leader to move the new cluster to the newest
    /// machine version all of them apply, which it does on its own right after
    /// its election (`src/upgrade.rs`): the tests then start from a settled
    /// log, not one that gains that entry at some point among their writes.
    pub fn wait_for_leader(&mut self, timeout: Duration) -> u64 {
        let running = self.running_ids();
        let leader = self.wait_for_leader_among(&running, timeout);
        if !self.version_settled {
            self.version_settled = true;
            self.wait_for_common_version(&running, timeout);
        }
        leader
    }

    /// Polls until every replica in `ids` runs the newest machine version
    /// that all of them apply.
    fn wait_for_common_version(&mut self, ids: &[u64], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<Status> = ids.iter().map(|&id| self.replica(id).status()).collect();
            let common = statuses
                .iter()
                .map(|s| s.number("machine_version_max"))
                .min();
            if statuses
                .iter()
                .all(|s| Some(s.number("machine_version")) == common)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never moved to machine version {common:?}: {statuses:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls replica `id`'s `status` until its `members` field is `members`
    /// (`1,2,3`); fails the test if it is not within `timeout`.
    pub fn wait_for_members(&mut self, id: u64, members: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.replica(id).status();
            if status.get("members") == members {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica {id} never saw members {members}: {status}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `checksum` at every replica in `ids` once they have all applied the
    /// same index (`applied=N keys=K digest=D`); fails the test if they do not
    /// agree within `timeout`.
    pub fn agreed_checksum(&mut self, ids: &[u64], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let sums: Vec<String> = ids
                .iter()
                .map(|&id| self.replica(id).send("checksum"))
                .collect();
            if sums.iter().all(|sum| sum == &sums[0]) {
                return sums[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "replicas {ids:?} never agreed: {sums:?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// A running replica other than `not`.
    pub fn other_than(&self, not: &[u64]) -> u64 {
        self.running_ids()
            .into_iter()
            .find(|id| !not.contains(id))
            .unwrap_or_else(|| panic!("no running replica outside {not:?}"))
    }

    /// Every `(key, value)` reads back at replica `id` (a linearizable get). The
    /// first read may have to wait for the replica to find the leader after a
    /// restart or an election.
    pub fn assert_all_readable(&mut self, id: u64, pairs: &[(String, String)]) {
        let replica = self.replica(id);
        if let Some((key, _)) = pairs.first() {
            replica.send_until_ok(&format!("get {key}"), Duration::from_secs(30));
        }
        for (key, value) in pairs {
            assert_eq!(&replica.get(key), value, "get {key} at replica {id}");
        }
    }

    /// Cleanly shuts every running replica down ([`Replica::exit`]).
    pub fn exit_all(&mut self) {
        for replica in &mut self.replicas {
            if replica.is_running() {
                replica.exit();
            }
        }
    }

    /// Starts every replica that is not running, with its old arguments.
    pub fn restart_all(&mut self) {
        for replica in &mut self.replicas {
            if !replica.is_running() {
                replica.restart();
            }
        }
    }

    /// Prints every replica's stderr and the tail of its `replica.log`.
    pub fn dump_logs(&self) {
        for replica in &self.replicas {
            replica.dump_logs();
        }
    }
}

impl Drop for Cluster {
    /// The replicas go first (see the field order). With `ONDISK_KEEP_DATA` set in
    /// the environment, a failed test leaves its data folder behind for a look.
    fn drop(&mut self) {
        let keep = self.keep_data_on_failure || std::env::var_os(KEEP_DATA_VAR).is_some();
        if thread::panicking() && keep {
            self.data.disable_cleanup(true);
            eprintln!("===== data kept in {} =====", self.data.path().display());
        }
    }
}

/// The leader all `statuses` agree on, if they do and it says it leads.
fn agreed_leader(statuses: &[(u64, Status)]) -> Option<u64> {
    let leader = statuses.first()?.1.leader()?;
    let all_agree = statuses.iter().all(|(_, s)| s.leader() == Some(leader));
    let leader_says_so = statuses
        .iter()
        .any(|(id, s)| *id == leader && s.role() == "leader");
    (all_agree && leader_says_so).then_some(leader)
}

// ---------------------------------------------------------------------------
// One-shot runs and signals
// ---------------------------------------------------------------------------

/// How a one-shot run of the binary ended.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code, or `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args`, stdin empty (so a prompt ends at once), and waits
/// up to `timeout` for it to finish. Panics if it does not.
pub fn run_once(args: &[String], timeout: Duration) -> Outcome {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll a child process") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{BIN} {args:?} did not finish within {timeout:?}\nstderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// [`run_once`] with string slices.
pub fn run_once_str(args: &[&str], timeout: Duration) -> Outcome {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_once(&args, timeout)
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Sends `SIG<name>` to `pid` with the `kill` command (no extra crates needed).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run the kill command");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Every file under `dir` with its contents, for "nothing changed" checks.
pub fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
        for entry in entries {
            let path = entry.expect("read a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let relative = path.strip_prefix(dir).expect("under dir").to_path_buf();
                files.insert(relative, bytes);
            }
        }
    }
    files
}

/// A line for messages: long ones are cut.
pub fn shorten(text: &str) -> String {
    if text.len() <= 80 {
        text.to_string()
    } else {
        let mut end = 80;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &text[..end], text.len())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `redis` crate connection to `url` (`redis://127.0.0.1:PORT/[DB][?protocol=resp3]`),
/// retried until the port answers or `settle` has passed; its replies may take
/// `settle` too.
/// The `# Raft` section of INFO from the replica `connection` talks to.
pub struct RaftInfo(String);

impl RaftInfo {
    /// A numeric field, e.g. `number("term")`.
    pub fn number(&self, name: &str) -> u64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO has no {name}\n{}", self.0))
    }
}

/// Asks for INFO's `# Raft` section.
pub fn raft_info(connection: &mut redis::Connection) -> RaftInfo {
    RaftInfo(
        redis::cmd("INFO")
            .arg("raft")
            .query(connection)
            .expect("INFO answers"),
    )
}

/// The applied index of the replica `connection` talks to, from INFO, once it
/// has caught up with that replica's last log index: openraft 0.10 answers a
/// write a moment before its own figures move, so an index read right after
/// a reply can be one short.
pub fn settled_applied_index(connection: &mut redis::Connection, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let info = raft_info(connection);
        let applied = info.number("applied_index");
        if applied == info.number("last_log_index") {
            return applied;
        }
        assert!(
            Instant::now() < deadline,
            "applied never caught up:\n{}",
            info.0
        );
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn redis_connection(url: &str, settle: Duration) -> redis::Connection {
    let client = redis::Client::open(url).expect("a redis:// address parses");
    let deadline = Instant::now() + settle;
    loop {
        match client.get_connection_with_timeout(Duration::from_secs(5)) {
            Ok(connection) => {
                connection
                    .set_read_timeout(Some(settle))
                    .expect("set a read timeout");
                return connection;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("connecting to {url}: {e}; retrying");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}
