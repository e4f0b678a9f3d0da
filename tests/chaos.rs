//! Jepsen's method on three real replicas: concurrent clients record every
//! operation, a nemesis kills, freezes and restarts replicas on a schedule, and
//! at the end a checker decides whether the history could have happened on one
//! correct copy of the data.
//!
//! The faults, in turn: SIGKILL a follower and restart it; cut the leader off
//! from the others and heal; SIGKILL the leader and restart it; SIGSTOP a
//! replica for longer than an election timeout; cut a follower off and heal;
//! SIGKILL all three and restart them. Partitions go through the proxies of
//! `harness::partition`.
//!
//! The run lasts `CHAOS_SECONDS` (default 30); `scripts/chaos.sh --minutes N`
//! runs it long.

mod harness;
mod history;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};
use history::{check, Op, OpKind, Outcome};
use redis::{Connection, Value};

const CLIENTS: usize = 6;
const KEYS: usize = 5;
/// Clients move to fresh keys every this many seconds. Each key's history
/// then stays short enough to check quickly however long the run: a write
/// with an unknown outcome stays "possibly pending" for the rest of its key's
/// history, which makes long histories of one key very costly to search.
const KEY_EPOCH: Duration = Duration::from_secs(10);
/// How long a client waits for one answer before it counts the outcome unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
const SETTLE: Duration = Duration::from_secs(60);

fn run_seconds() -> u64 {
    std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// A tiny deterministic generator, so a failing schedule can be replayed with
/// the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn connect(port: u16) -> Option<Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let connection = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    connection.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    connection.set_write_timeout(Some(CLIENT_TIMEOUT)).ok()?;
    Some(connection)
}

/// One client: a random mix of SET, GET and DEL over a few keys, each recorded
/// with when it was invoked, when it completed, and what it returned.
fn client_loop(
    client: usize,
    ports: Vec<u16>,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let mut rng = Rng(seed);
    let mut connection: Option<Connection> = None;
    let mut written = 0u64;
    let now = || start.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connection.as_mut() else {
            let port = ports[rng.below(ports.len() as u64) as usize];
            connection = connect(port);
            if connection.is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let epoch = start.elapsed().as_secs() / KEY_EPOCH.as_secs();
        let key = format!("e{epoch}-k{}", rng.below(KEYS as u64));
        let (kind, command) = match rng.below(10) {
            0..=3 => {
                written += 1;
                let value = format!("c{client}-{written}");
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value);
                (OpKind::Set(value), cmd)
            }
            4..=7 => {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&key);
                (OpKind::Get, cmd)
            }
            _ => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(&key);
                (OpKind::Del, cmd)
            }
        };
        let invoked = now();
        let reply: redis::RedisResult<Value> = command.query(c);
        let completed = now();
        let outcome = match (&kind, reply) {
            (OpKind::Set(_), Ok(Value::Okay)) => Some(Outcome::Ok),
            (OpKind::Get, Ok(Value::Nil)) => Some(Outcome::Value(None)),
            (OpKind::Get, Ok(Value::BulkString(bytes))) => Some(Outcome::Value(Some(
                String::from_utf8(bytes).expect("values written here are text"),
            ))),
            (OpKind::Del, Ok(Value::Int(n))) => Some(Outcome::Deleted(n as u64)),
            (_, Ok(other)) => panic!("client {client}: {kind:?} on {key} answered {other:?}"),
            // A failed read changed nothing: leave it out. A failed write may
            // or may not have been applied: record it as unknown. After any
            // error the connection may be out of step, so start a new one.
            (OpKind::Get, Err(_)) => {
                connection = None;
                None
            }
            (_, Err(_)) => {
                connection = None;
                Some(Outcome::Unknown)
            }
        };
        if let Some(result) = outcome {
            let completed = (!matches!(result, Outcome::Unknown)).then_some(completed);
            history.lock().unwrap().push(Op {
                client,
                key,
                kind,
                invoked,
                completed,
                result,
            });
        }
    }
}

/// The faults, taken in turn.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillAFollower,
    IsolateTheLeader,
    KillTheLeader,
    FreezeAReplica,
    IsolateAFollower,
    KillAll,
}

#[test]
fn the_history_stays_linearizable_through_kills_freezes_and_partitions() {
    let seconds = run_seconds();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(7)
        });
    eprintln!("chaos: {seconds} s, seed {seed} (CHAOS_SEED={seed} replays the schedule)");

    // Snapshots every 200 entries, so installs happen during the faults too.
    let mut cluster =
        Cluster::start_partitionable(3, &["--snapshot-every", "200", "--timeout", "3"]);
    // A failure keeps the folder: the replicas' whole logs are the evidence.
    cluster.keep_data_on_failure = true;
    cluster.wait_for_leader(ELECTION_TIMEOUT);
    let ports: Vec<u16> = (1..=3)
        .map(|id| cluster.replica(id).client_port())
        .collect();

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (ports, stop, history) = (ports.clone(), stop.clone(), history.clone());
            let client_seed = seed.wrapping_mul(31).wrapping_add(client as u64 * 7919) | 1;
            thread::spawn(move || client_loop(client, ports, client_seed, start, stop, history))
        })
        .collect();

    let mut rng = Rng(seed);
    let faults = [
        Fault::KillAFollower,
        Fault::IsolateTheLeader,
        Fault::KillTheLeader,
        Fault::FreezeAReplica,
        Fault::IsolateAFollower,
        Fault::KillAll,
    ];
    let faults_done = AtomicUsize::new(0);
    let deadline = start + Duration::from_secs(seconds);
    let mut turn = 0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1000 + rng.below(1500)));
        let fault = faults[turn % faults.len()];
        turn += 1;
        let leader = cluster.wait_for_leader(SETTLE);
        match fault {
            Fault::KillAFollower => {
                let victim = cluster.other_than(&[leader]);
                cluster.replica(victim).kill();
                thread::sleep(Duration::from_millis(500 + rng.below(1500)));
                cluster.replica(victim).restart();
            }
            Fault::IsolateTheLeader | Fault::IsolateAFollower => {
                let victim = match fault {
                    Fault::IsolateTheLeader => leader,
                    _ => cluster.other_than(&[leader]),
                };
                let partitions = cluster.partitions.as_ref().expect("behind proxies");
                partitions.isolate(victim, &[1, 2, 3]);
                thread::sleep(Duration::from_millis(1500 + rng.below(1500)));
                partitions.heal();
            }
            Fault::KillTheLeader => {
                cluster.replica(leader).kill();
                thread::sleep(Duration::from_millis(500 + rng.below(1500)));
                cluster.replica(leader).restart();
            }
            Fault::FreezeAReplica => {
                // Longer than an election timeout (at most 1 s).
                let victim = 1 + rng.below(3);
                cluster.replica(victim).stop();
                thread::sleep(Duration::from_millis(1500 + rng.below(1000)));
                cluster.replica(victim).cont();
            }
            Fault::KillAll => {
                for id in 1..=3 {
                    cluster.replica(id).kill();
                }
                thread::sleep(Duration::from_millis(300 + rng.below(700)));
                for id in 1..=3 {
                    cluster.replica(id).restart();
                }
            }
        }
        eprintln!("chaos: {:>5.1} s  {fault:?}", start.elapsed().as_secs_f64());
        faults_done.fetch_add(1, Ordering::Relaxed);
    }

    // Heal, stop the clients, and let every replica catch up.
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread panicked");
    }
    cluster.wait_for_leader(SETTLE);

    // A final read of every key through each replica joins the history: every
    // acknowledged write must be visible there or overwritten by a later one.
    let epochs = start.elapsed().as_secs() / KEY_EPOCH.as_secs();
    let keys: Vec<String> = (0..=epochs)
        .flat_map(|epoch| (0..KEYS).map(move |k| format!("e{epoch}-k{k}")))
        .collect();
    for (i, port) in ports.iter().enumerate() {
        let mut c = connect(*port).expect("connect after healing");
        for key in &keys {
            let key = key.clone();
            let invoked = start.elapsed().as_nanos() as u64;
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query(&mut c)
                .expect("final GET");
            history.lock().unwrap().push(Op {
                client: CLIENTS + i,
                key,
                kind: OpKind::Get,
                invoked,
                completed: Some(start.elapsed().as_nanos() as u64),
                result: Outcome::Value(value),
            });
        }
    }

    // All replicas hold the same state at the same applied index.
    let checksum_deadline = Instant::now() + SETTLE;
    loop {
        let sums: Vec<String> = ports
            .iter()
            .map(|port| {
                let mut c = connect(*port).expect("connect for CHECKSUM");
                redis::cmd("CHECKSUM")
                    .query::<String>(&mut c)
                    .expect("CHECKSUM")
            })
            .collect();
        if sums.iter().all(|s| *s == sums[0]) {
            eprintln!("chaos: replicas agree: {}", sums[0]);
            break;
        }
        assert!(
            Instant::now() < checksum_deadline,
            "replicas never converged: {sums:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    let history = history.lock().unwrap().clone();
    let acknowledged = history
        .iter()
        .filter(|op| !matches!(op.result, Outcome::Unknown))
        .count();
    eprintln!(
        "chaos: {} operations ({acknowledged} with a known outcome), {} faults",
        history.len(),
        faults_done.load(Ordering::Relaxed)
    );
    assert!(
        acknowledged > 100,
        "too few operations completed to say anything: {acknowledged}"
    );
    let checking = Instant::now();
    if let Err(failure) = check(&history) {
        panic!("the history is not linearizable (seed {seed}):\n{failure}");
    }
    eprintln!(
        "chaos: linearizable (checked in {:.1?})",
        checking.elapsed()
    );
}
