//! Jepsen's method on three real replicas: concurrent clients record every
//! operation, a nemesis kills, freezes and restarts replicas on a schedule, and
//! at the end a checker decides whether the history could have happened on one
//! correct copy of the data.
//!
//! The operations are Redis string commands on a few groups of keys, each
//! group a counter and two registers: GET, SET, SET NX and DEL on the
//! registers, INCR, GET and DEL on the counter, and MULTI/EXEC transactions
//! of two or three of these within one group (one Raft entry, all or
//! nothing). `tests/history` checks each group as one object (see there for
//! the model and how unknown outcomes count).
//!
//! The faults, in turn: SIGKILL the leader and restart it; cut the leader off
//! from the others and heal; SIGSTOP a replica for longer than an election
//! timeout; SIGKILL a follower and restart it; cut a follower off and heal;
//! SIGKILL all three and restart them. The first two always run, however
//! short the run. Partitions go through the proxies of `harness::partition`.
//!
//! The run lasts `CHAOS_SECONDS` (default 25); `scripts/chaos.sh --minutes N`
//! runs it long.

mod harness;
mod history;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{Cluster, ELECTION_TIMEOUT};
use history::{check, Answer, CheckError, Command, Op, OpKind, Outcome};
use redis::{Connection, Value};

const CLIENTS: usize = 6;
/// Groups of keys per epoch. A transaction stays within one group, so the
/// checker can take each group alone.
const GROUPS: usize = 2;
/// The keys of a group: a counter, then two registers.
const COUNTER: &str = "n";
const REGISTERS: [&str; 2] = ["a", "b"];
/// Clients move to fresh keys every this many seconds. Each group's history
/// then stays short enough to check quickly however long the run: a write
/// with an unknown outcome stays "possibly pending" for the rest of its
/// group's history, which makes long histories very costly to search.
const KEY_EPOCH: Duration = Duration::from_secs(10);
/// How long a client waits for one answer before it counts the outcome unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
const SETTLE: Duration = Duration::from_secs(60);

fn run_seconds() -> u64 {
    std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
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

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Key `name` of group `group` in `epoch`.
fn key(epoch: u64, group: usize, name: &str) -> String {
    format!("e{epoch}-g{group}-{name}")
}

/// Every key of every group up to `epochs`, grouped.
fn all_groups(epochs: u64) -> Vec<Vec<String>> {
    (0..=epochs)
        .flat_map(|epoch| {
            (0..GROUPS).map(move |group| {
                std::iter::once(COUNTER)
                    .chain(REGISTERS)
                    .map(|name| key(epoch, group, name))
                    .collect()
            })
        })
        .collect()
}

/// One random command on a key of `group`; `value` is unique to it.
fn random_command(rng: &mut Rng, epoch: u64, group: usize, value: String) -> Command {
    let roll = rng.below(10);
    if rng.below(3) == 0 {
        let kind = match roll {
            0..=4 => OpKind::Incr,
            5..=8 => OpKind::Get,
            _ => OpKind::Del,
        };
        return Command {
            key: key(epoch, group, COUNTER),
            kind,
        };
    }
    let kind = match roll {
        0..=2 => OpKind::Set(value),
        3..=4 => OpKind::SetNx(value),
        5..=8 => OpKind::Get,
        _ => OpKind::Del,
    };
    let register = rng.pick(&REGISTERS);
    Command {
        key: key(epoch, group, register),
        kind,
    }
}

fn redis_command(command: &Command) -> redis::Cmd {
    let mut cmd = redis::cmd(match command.kind {
        OpKind::Set(_) | OpKind::SetNx(_) => "SET",
        OpKind::Get => "GET",
        OpKind::Del => "DEL",
        OpKind::Incr => "INCR",
    });
    cmd.arg(&command.key);
    match &command.kind {
        OpKind::Set(value) => {
            cmd.arg(value);
        }
        OpKind::SetNx(value) => {
            cmd.arg(value).arg("NX");
        }
        OpKind::Get | OpKind::Del | OpKind::Incr => {}
    }
    cmd
}

/// What a reply means for `kind`; None for a reply it can never give.
fn answer_of(kind: &OpKind, reply: &Value) -> Option<Answer> {
    Some(match (kind, reply) {
        (OpKind::Set(_) | OpKind::SetNx(_), Value::Okay) => Answer::Ok,
        (OpKind::SetNx(_), Value::Nil) => Answer::NotSet,
        (OpKind::Get, Value::Nil) => Answer::Value(None),
        (OpKind::Get, Value::BulkString(bytes)) => {
            Answer::Value(Some(String::from_utf8(bytes.clone()).ok()?))
        }
        (OpKind::Del, Value::Int(n)) => Answer::Deleted(u64::try_from(*n).ok()?),
        (OpKind::Incr, Value::Int(n)) => Answer::Int(*n),
        _ => return None,
    })
}

/// Sends one command, or the commands as MULTI ... EXEC, and returns the
/// answers; Err if no answer came (the outcome is unknown). Panics on an
/// answer the command can never give: that is a server bug.
fn run(c: &mut Connection, commands: &[Command]) -> redis::RedisResult<Vec<Answer>> {
    let replies = match commands {
        [one] => vec![redis_command(one).query::<Value>(c)?],
        many => {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for command in many {
                pipe.add_command(redis_command(command));
            }
            match pipe.query::<Value>(c)? {
                Value::Array(items) => items,
                other => panic!("EXEC answered {other:?} to {commands:?}"),
            }
        }
    };
    assert_eq!(
        replies.len(),
        commands.len(),
        "{commands:?} answered {replies:?}"
    );
    Ok(commands
        .iter()
        .zip(&replies)
        .map(|(command, reply)| {
            answer_of(&command.kind, reply)
                .unwrap_or_else(|| panic!("{command} answered {reply:?} (in {commands:?})"))
        })
        .collect())
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

/// One client: a random mix of commands and transactions on the groups of
/// the current epoch, each recorded with when it was invoked, when it
/// completed, and what it returned.
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
    // The first connection spreads the clients over the replicas evenly,
    // later ones go anywhere.
    let mut port = ports[client % ports.len()];
    let now = || start.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connection.as_mut() else {
            connection = connect(port);
            port = *rng.pick(&ports);
            if connection.is_none() {
                thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        let epoch = start.elapsed().as_secs() / KEY_EPOCH.as_secs();
        let group = rng.below(GROUPS as u64) as usize;
        let count = if rng.below(10) < 3 {
            2 + rng.below(2)
        } else {
            1
        };
        let commands: Vec<Command> = (0..count)
            .map(|_| {
                written += 1;
                random_command(&mut rng, epoch, group, format!("c{client}-{written}"))
            })
            .collect();
        let invoked = now();
        let reply = run(c, &commands);
        let completed = now();
        let (completed, result) = match reply {
            Ok(answers) => (Some(completed), Outcome::Answered(answers)),
            // Failed reads changed nothing: leave them out. A failed write
            // may or may not have been applied: record it as unknown. After
            // any error the connection may be out of step, so start a new one.
            Err(_) => {
                connection = None;
                if commands.iter().all(|c| c.kind == OpKind::Get) {
                    continue;
                }
                (None, Outcome::Unknown)
            }
        };
        history.lock().unwrap().push(Op {
            client,
            commands,
            invoked,
            completed,
            result,
        });
    }
}

/// The clients of one run, each on its own thread.
struct Clients {
    start: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Clients {
    /// Starts [`CLIENTS`] clients on `ports`; times count from now.
    fn start(ports: &[u16], seed: u64) -> Clients {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..CLIENTS)
            .map(|client| {
                let (ports, stop, history) = (ports.to_vec(), stop.clone(), history.clone());
                let client_seed = seed.wrapping_mul(31).wrapping_add(client as u64 * 7919) | 1;
                thread::spawn(move || client_loop(client, ports, client_seed, start, stop, history))
            })
            .collect();
        Clients {
            start,
            stop,
            history,
            threads,
        }
    }

    /// Stops the clients and returns what they recorded.
    fn finish(self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.threads {
            client.join().expect("a client thread panicked");
        }
        let history = self.history.lock().unwrap().clone();
        history
    }
}

/// The faults, taken in turn: the first two are the ones every run, however
/// short, must include (a leader kill and a partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillTheLeader,
    IsolateTheLeader,
    FreezeAReplica,
    KillAFollower,
    IsolateAFollower,
    KillAll,
}

const FAULTS: [Fault; 6] = [
    Fault::KillTheLeader,
    Fault::IsolateTheLeader,
    Fault::FreezeAReplica,
    Fault::KillAFollower,
    Fault::IsolateAFollower,
    Fault::KillAll,
];

/// Plays `fault` on the cluster, whose leader is `leader`, and undoes it.
fn inject(cluster: &mut Cluster, fault: Fault, leader: u64, rng: &mut Rng) {
    match fault {
        Fault::KillAFollower | Fault::KillTheLeader => {
            let victim = match fault {
                Fault::KillTheLeader => leader,
                _ => cluster.other_than(&[leader]),
            };
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
}

/// A final read of each group, as one transaction, through each replica,
/// joins the history: every acknowledged write must be visible there or
/// overwritten by a later one. Retried until it answers (a read changes
/// nothing, so only the answered attempt is recorded).
fn final_reads(ports: &[u16], start: Instant, epochs: u64) -> Vec<Op> {
    let mut reads = Vec::new();
    let deadline = Instant::now() + SETTLE;
    for (i, port) in ports.iter().enumerate() {
        for keys in all_groups(epochs) {
            let commands: Vec<Command> = keys
                .into_iter()
                .map(|key| Command {
                    key,
                    kind: OpKind::Get,
                })
                .collect();
            loop {
                let invoked = start.elapsed().as_nanos() as u64;
                let answers = connect(*port)
                    .ok_or_else(|| "cannot connect".to_string())
                    .and_then(|mut c| run(&mut c, &commands).map_err(|e| e.to_string()));
                match answers {
                    Ok(answers) => {
                        reads.push(Op {
                            client: CLIENTS + i,
                            commands,
                            invoked,
                            completed: Some(start.elapsed().as_nanos() as u64),
                            result: Outcome::Answered(answers),
                        });
                        break;
                    }
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("chaos: final read through port {port} failed ({e}); again");
                        thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => panic!("final read through port {port}: {e}"),
                }
            }
        }
    }
    reads
}

/// Waits until all replicas hold the same state at the same applied index.
fn wait_for_agreement(ports: &[u16]) {
    let deadline = Instant::now() + SETTLE;
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
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged: {sums:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// `GET 1234 (5 unknown), SET ...`: operations by kind, transactions apart.
fn summary(history: &[Op]) -> String {
    let mut counts: Vec<(&str, usize, usize)> = Vec::new();
    for op in history {
        let kind = match (op.is_transaction(), &op.commands[0].kind) {
            (true, _) => "MULTI/EXEC",
            (false, OpKind::Get) => "GET",
            (false, OpKind::Set(_)) => "SET",
            (false, OpKind::SetNx(_)) => "SET NX",
            (false, OpKind::Del) => "DEL",
            (false, OpKind::Incr) => "INCR",
        };
        let unknown = usize::from(!op.is_known());
        match counts.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(count) => {
                count.1 += 1;
                count.2 += unknown;
            }
            None => counts.push((kind, 1, unknown)),
        }
    }
    counts.sort();
    counts
        .iter()
        .map(|(kind, all, unknown)| format!("{kind} {all} ({unknown} unknown)"))
        .collect::<Vec<_>>()
        .join(", ")
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

    let clients = Clients::start(&ports, seed);
    let start = clients.start;

    // The nemesis: every fault of the list in turn until the time is up,
    // and at least the first two.
    let mut rng = Rng(seed);
    let deadline = start + Duration::from_secs(seconds);
    let mut done = Vec::new();
    while Instant::now() < deadline || done.len() < 2 {
        thread::sleep(Duration::from_millis(1000 + rng.below(1500)));
        let fault = FAULTS[done.len() % FAULTS.len()];
        let leader = cluster.wait_for_leader(SETTLE);
        inject(&mut cluster, fault, leader, &mut rng);
        eprintln!("chaos: {:>5.1} s  {fault:?}", start.elapsed().as_secs_f64());
        done.push(fault);
    }

    // Stop the clients, let every replica catch up, read everything back.
    let mut history = clients.finish();
    cluster.wait_for_leader(SETTLE);
    let epochs = start.elapsed().as_secs() / KEY_EPOCH.as_secs();
    history.extend(final_reads(&ports, start, epochs));
    wait_for_agreement(&ports);

    let acknowledged = history.iter().filter(|op| op.is_known()).count();
    eprintln!(
        "chaos: {} operations ({acknowledged} with a known outcome), {} faults\nchaos: {}",
        history.len(),
        done.len(),
        summary(&history)
    );
    assert!(
        done.contains(&Fault::KillTheLeader) && done.contains(&Fault::IsolateTheLeader),
        "the schedule lacks a leader kill or a partition: {done:?}"
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

/// The checker can fail: three one-replica clusters that know nothing of
/// each other, posing as one store, are caught within seconds by the same
/// clients and checker.
#[test]
fn three_unconnected_stores_posing_as_one_are_caught() {
    let mut stores: Vec<Cluster> = (0..3).map(|_| Cluster::start(1)).collect();
    let ports: Vec<u16> = stores
        .iter_mut()
        .map(|store| {
            store.wait_for_leader(ELECTION_TIMEOUT);
            store.replica(1).client_port()
        })
        .collect();
    let clients = Clients::start(&ports, 0x5eed);
    thread::sleep(Duration::from_secs(3));
    let history = clients.finish();
    match check(&history) {
        Err(failure @ CheckError::NotLinearizable { .. }) => {
            eprintln!("chaos: caught, as it should be:\n{failure}")
        }
        other => panic!(
            "{} operations on three separate stores passed as one: {other:?}",
            history.len()
        ),
    }
}
