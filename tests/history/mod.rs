//! Is a recorded history of key-value operations linearizable?
//!
//! The model is Redis's string keyspace: each key is a register, absent or
//! holding a value. SET writes a value; SET NX writes it only if the key is
//! absent (OK) and otherwise answers nil and changes nothing; GET reads; DEL
//! empties the key and counts it; INCR treats the value as an integer (a
//! missing key as 0), stores one more and answers it, and fails without
//! effect on a value that is not an integer. So a counter is a register too.
//! An operation is one of these commands or a MULTI/EXEC transaction of
//! several, which take effect together, at one moment, in their order.
//!
//! Keys are checked apart where that is sound. Linearizability is local
//! (Herlihy and Wing): a history is linearizable if and only if the history
//! of each object is, when every operation acts on one object. Keys that a
//! transaction touches together therefore form one object, a group: groups
//! are the connected parts of "some operation touches both keys", and each
//! group is checked alone, with one register per key.
//!
//! For one group the search is Wing and Gong's, with Lowe's memo: build a
//! total order one operation at a time, taking next only an operation that no
//! remaining operation finished before it began (real-time order), and only
//! if the model's answers match what the client saw. A state of the search is
//! the set of operations placed so far plus the registers; a state seen before
//! is not explored again.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection) may
//! have taken effect at any time after it began, or never: it may be placed
//! anywhere after its start, and the search succeeds without it. For a
//! transaction that is all of it or none of it; its reads constrain nothing.
//! Two reductions keep many unknown operations cheap, both exact:
//! - A value no read ever returned cannot be told from another such value by
//!   any command of the model (only GET shows a value; SET NX, DEL and INCR
//!   see only "present" and "not an integer"), so all of them are one value.
//! - Unknown operations with the same effect are interchangeable: if an order
//!   uses a later-invoked one, the earlier one fits in the same place. So they
//!   are placed only in invocation order.
//!
//! The search is bounded ([`Limits`]): a group that needs more states or
//! time is reported as undecided ([`CheckError::TooComplex`]), never passed.

#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// One command of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// SET key value.
    Set(String),
    /// SET key value NX.
    SetNx(String),
    Get,
    Del,
    Incr,
}

/// A command on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Command {
    pub key: String,
    pub kind: OpKind,
}

/// What one command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// SET, or SET NX that wrote.
    Ok,
    /// SET NX that found the key present and wrote nothing (nil).
    NotSet,
    /// GET's value (None: nil).
    Value(Option<String>),
    /// DEL's count.
    Deleted(u64),
    /// INCR's new value.
    Int(i64),
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// One answer per command, in order: a lone command's reply, or EXEC's array.
    Answered(Vec<Answer>),
    /// No answer: it may or may not have taken effect (all of it, for a transaction).
    Unknown,
}

/// One operation. Times are nanoseconds on one clock shared by all clients.
/// Operations the server refused for certain, and failed reads, need not be
/// recorded: they changed nothing.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    /// One command, or the commands of one MULTI/EXEC in their order.
    pub commands: Vec<Command>,
    pub invoked: u64,
    /// None when the outcome is unknown.
    pub completed: Option<u64>,
    pub result: Outcome,
}

impl Op {
    /// One command with a known answer.
    pub fn one(client: usize, key: &str, kind: OpKind, span: (u64, u64), answer: Answer) -> Op {
        Op {
            client,
            commands: vec![Command {
                key: key.to_string(),
                kind,
            }],
            invoked: span.0,
            completed: Some(span.1),
            result: Outcome::Answered(vec![answer]),
        }
    }

    /// Is this a MULTI/EXEC of several commands?
    pub fn is_transaction(&self) -> bool {
        self.commands.len() > 1
    }

    pub fn is_known(&self) -> bool {
        matches!(self.result, Outcome::Answered(_))
    }
}

/// How much a search may cost before it gives up, per group.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub states: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            states: 5_000_000,
            time: Duration::from_secs(30),
        }
    }
}

/// Why a history did not pass.
#[derive(Debug)]
pub enum CheckError {
    /// No order of the operations on `keys` (one group) explains what the
    /// clients saw.
    NotLinearizable {
        keys: Vec<String>,
        /// The operations around the first one that could not be placed.
        around: Vec<Op>,
    },
    /// The search of one group gave up within its [`Limits`]: undecided.
    TooComplex {
        keys: Vec<String>,
        ops: usize,
        states: usize,
        took: Duration,
    },
    /// An operation's record cannot be judged (a bug in the recording).
    Malformed { op: Box<Op>, why: String },
}

/// Checks every group with the default [`Limits`].
pub fn check(history: &[Op]) -> Result<(), CheckError> {
    check_within(history, Limits::default())
}

/// Checks every group of keys; a violation is returned before an undecided
/// group, so one group too hard to search does not hide another's failure.
pub fn check_within(history: &[Op], limits: Limits) -> Result<(), CheckError> {
    if let Some((op, why)) = history.iter().find_map(|op| malformed(op).map(|w| (op, w))) {
        return Err(CheckError::Malformed {
            op: Box::new(op.clone()),
            why,
        });
    }
    let mut undecided = None;
    for (keys, ops) in groups(history) {
        let deadline = Instant::now() + limits.time;
        match check_group(&keys, &ops, limits.states, deadline) {
            Ok(()) => {}
            Err(CheckError::NotLinearizable { keys, around }) => {
                let around = shrink(&keys, &ops, limits.states).unwrap_or(around);
                return Err(CheckError::NotLinearizable { keys, around });
            }
            Err(e) => {
                undecided.get_or_insert(e);
            }
        }
    }
    undecided.map_or(Ok(()), Err)
}

/// Why an operation's record makes no sense, if it does not.
fn malformed(op: &Op) -> Option<String> {
    if op.commands.is_empty() {
        return Some("no commands".into());
    }
    let answers = match (&op.result, op.completed) {
        (Outcome::Unknown, None) => return None,
        (Outcome::Answered(answers), Some(completed)) if completed >= op.invoked => answers,
        (Outcome::Unknown, Some(_)) => return Some("unknown, yet completed".into()),
        (Outcome::Answered(_), None) => return Some("answered, yet not completed".into()),
        (Outcome::Answered(_), Some(_)) => return Some("completed before invoked".into()),
    };
    if answers.len() != op.commands.len() {
        return Some(format!(
            "{} commands but {} answers",
            op.commands.len(),
            answers.len()
        ));
    }
    op.commands
        .iter()
        .zip(answers)
        .find_map(|(command, answer)| {
            let fits = matches!(
                (&command.kind, answer),
                (OpKind::Set(_), Answer::Ok)
                    | (OpKind::SetNx(_), Answer::Ok | Answer::NotSet)
                    | (OpKind::Get, Answer::Value(_))
                    | (OpKind::Del, Answer::Deleted(_))
                    | (OpKind::Incr, Answer::Int(_))
            );
            (!fits).then(|| format!("{:?} cannot answer {answer:?}", command.kind))
        })
}

/// The groups of keys that must be checked together, each with its keys
/// (sorted) and its operations, in the order of their smallest key.
fn groups(history: &[Op]) -> Vec<(Vec<String>, Vec<Op>)> {
    // Union-find over keys.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for op in history {
        let mut first = None;
        for command in &op.commands {
            let next = parent.len();
            let i = *index.entry(command.key.as_str()).or_insert(next);
            if i == next {
                parent.push(next);
            }
            match first {
                None => first = Some(i),
                Some(f) => {
                    let (a, b) = (root(&mut parent, f), root(&mut parent, i));
                    parent[b] = a;
                }
            }
        }
    }
    let mut keys_of: HashMap<usize, Vec<String>> = HashMap::new();
    for (key, &i) in &index {
        let r = root(&mut parent, i);
        keys_of.entry(r).or_default().push(key.to_string());
    }
    let mut ops_of: HashMap<usize, Vec<Op>> = HashMap::new();
    for op in history {
        let r = root(&mut parent, index[op.commands[0].key.as_str()]);
        ops_of.entry(r).or_default().push(op.clone());
    }
    let mut groups: Vec<(Vec<String>, Vec<Op>)> = keys_of
        .into_iter()
        .map(|(r, mut keys)| {
            keys.sort_unstable();
            (keys, ops_of.remove(&r).unwrap_or_default())
        })
        .collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// How long the search for a short failing history may take.
const SHRINK_TIME: Duration = Duration::from_secs(3);

/// A short part of a failing group's history that still fails: first the
/// shortest prefix in time (operations begun before some moment, those still
/// running then counted as unknown), then runs of operations dropped while it
/// keeps failing, halves first, until the time is up. None if nothing shorter
/// than 30 operations is found.
fn shrink(keys: &[String], ops: &[Op], states: usize) -> Option<Vec<Op>> {
    let deadline = Instant::now() + SHRINK_TIME;
    let fails = |ops: &[Op]| {
        matches!(
            check_group(keys, ops, states, deadline),
            Err(CheckError::NotLinearizable { .. })
        )
    };
    let prefix_until = |moment: u64| -> Vec<Op> {
        ops.iter()
            .filter(|op| op.invoked <= moment)
            .map(|op| match op.completed {
                Some(done) if done > moment => Op {
                    completed: None,
                    result: Outcome::Unknown,
                    ..op.clone()
                },
                _ => op.clone(),
            })
            .collect()
    };
    // Binary search the moment: the prefix up to the last completion fails.
    let mut moments: Vec<u64> = ops.iter().filter_map(|op| op.completed).collect();
    moments.sort_unstable();
    let (mut low, mut high) = (0, moments.len().checked_sub(1)?);
    while low < high && Instant::now() < deadline {
        let middle = (low + high) / 2;
        if fails(&prefix_until(moments[middle])) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let mut short = prefix_until(moments[high]);
    if !fails(&short) {
        return None;
    }
    // Drop what the failure does not need: halves first, then smaller runs.
    let mut run = short.len().div_ceil(2);
    while run >= 1 && Instant::now() < deadline {
        let mut start = 0;
        while start < short.len() && Instant::now() < deadline {
            let end = (start + run).min(short.len());
            let without: Vec<Op> = short[..start]
                .iter()
                .chain(&short[end..])
                .cloned()
                .collect();
            if fails(&without) {
                short = without;
            } else {
                start = end;
            }
        }
        run /= 2;
    }
    (short.len() <= 30).then_some(short)
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// A register's content. Values are numbered; every value no read returned is
/// [`Value::Unseen`] (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Value {
    Absent,
    /// A value that reads as an integer, as INCR parses it.
    Int(i64),
    /// Any other value some read returned, by number.
    Text(u32),
    /// Any other value, never read.
    Unseen,
}

/// A command, prepared for the search.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Action {
    Set(Value),
    SetNx(Value),
    Get,
    Del,
    Incr,
}

/// What a prepared command must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    NotSet,
    Value(Value),
    Deleted(u64),
    Int(i64),
}

/// One operation, prepared for the search.
struct Step {
    /// Its place in the group's operations (sorted by invocation).
    op: usize,
    invoked: u64,
    /// `u64::MAX` when the outcome is unknown.
    completed: u64,
    known: bool,
    /// (register, action, expected answer; None when unknown). For an unknown
    /// operation only the commands that change something.
    commands: Vec<(usize, Action, Option<Expect>)>,
    /// For an unknown operation: the previous unknown one with the same
    /// effect, which must be placed first.
    twin_before: Option<usize>,
}

/// Applies one command; false if its answer cannot be `expect`.
fn apply(registers: &mut [Value], (at, action, expect): &(usize, Action, Option<Expect>)) -> bool {
    let register = &mut registers[*at];
    let present = *register != Value::Absent;
    let (answer, after) = match action {
        Action::Set(value) => (Expect::Ok, *value),
        Action::SetNx(value) if !present => (Expect::Ok, *value),
        Action::SetNx(_) => (Expect::NotSet, *register),
        Action::Get => (Expect::Value(*register), *register),
        Action::Del => (Expect::Deleted(u64::from(present)), Value::Absent),
        Action::Incr => {
            let sum = match *register {
                Value::Absent => Some(1),
                Value::Int(n) => n.checked_add(1),
                Value::Text(_) | Value::Unseen => None,
            };
            match sum {
                Some(sum) => (Expect::Int(sum), Value::Int(sum)),
                // An error reply, no effect: no recorded answer matches it.
                None if expect.is_some() => return false,
                None => return true,
            }
        }
    };
    if expect.is_some_and(|seen| seen != answer) {
        return false;
    }
    *register = after;
    true
}

/// The registers after `step`, or None if its answers do not fit `registers`.
fn after_step(registers: &[Value], step: &Step) -> Option<Box<[Value]>> {
    let mut next: Box<[Value]> = registers.into();
    step.commands
        .iter()
        .all(|command| apply(&mut next, command))
        .then_some(next)
}

/// Values as the model sees them: integers by value, texts a read returned by
/// number, the rest as one.
struct Values {
    read: HashSet<String>,
    numbers: HashMap<String, u32>,
}

impl Values {
    fn new(ops: &[Op]) -> Values {
        let mut read = HashSet::new();
        for op in ops {
            if let Outcome::Answered(answers) = &op.result {
                for answer in answers {
                    if let Answer::Value(Some(value)) = answer {
                        read.insert(value.clone());
                    }
                }
            }
        }
        Values {
            read,
            numbers: HashMap::new(),
        }
    }

    fn of(&mut self, text: &str) -> Value {
        // INCR's rule: a decimal integer in its plain form.
        if let Ok(n) = text.parse::<i64>() {
            if n.to_string() == text {
                return Value::Int(n);
            }
        }
        if !self.read.contains(text) {
            return Value::Unseen;
        }
        let next = self.numbers.len() as u32;
        Value::Text(*self.numbers.entry(text.to_string()).or_insert(next))
    }
}

fn prepare(keys: &[String], ops: &[Op]) -> Vec<Step> {
    let mut values = Values::new(ops);
    let register = |key: &str| {
        keys.binary_search_by(|k| k.as_str().cmp(key))
            .expect("every key of a group's operations is one of its keys")
    };
    let mut steps: Vec<Step> = ops
        .iter()
        .enumerate()
        .map(|(number, op)| {
            let answers: Vec<Option<&Answer>> = match &op.result {
                Outcome::Answered(answers) => answers.iter().map(Some).collect(),
                Outcome::Unknown => vec![None; op.commands.len()],
            };
            let commands = op
                .commands
                .iter()
                .zip(answers)
                .map(|(command, answer)| {
                    let action = match &command.kind {
                        OpKind::Set(value) => Action::Set(values.of(value)),
                        OpKind::SetNx(value) => Action::SetNx(values.of(value)),
                        OpKind::Get => Action::Get,
                        OpKind::Del => Action::Del,
                        OpKind::Incr => Action::Incr,
                    };
                    let expect = answer.map(|answer| match answer {
                        Answer::Ok => Expect::Ok,
                        Answer::NotSet => Expect::NotSet,
                        Answer::Value(None) => Expect::Value(Value::Absent),
                        Answer::Value(Some(text)) => Expect::Value(values.of(text)),
                        Answer::Deleted(n) => Expect::Deleted(*n),
                        Answer::Int(n) => Expect::Int(*n),
                    });
                    (register(&command.key), action, expect)
                })
                .filter(|(_, action, expect)| expect.is_some() || *action != Action::Get)
                .collect();
            Step {
                op: number,
                invoked: op.invoked,
                completed: op.completed.unwrap_or(u64::MAX),
                known: op.is_known(),
                commands,
                twin_before: None,
            }
        })
        // An unknown operation that changes nothing needs no place.
        .filter(|step| step.known || !step.commands.is_empty())
        .collect();
    let mut last_with_effect: HashMap<Vec<(usize, Action)>, usize> = HashMap::new();
    for (i, step) in steps.iter_mut().enumerate().filter(|(_, s)| !s.known) {
        let effect = step
            .commands
            .iter()
            .map(|(r, a, _)| (*r, a.clone()))
            .collect();
        step.twin_before = last_with_effect.insert(effect, i);
    }
    steps
}

/// The memo's hasher: FxHash's mixing, several times cheaper than the
/// default SipHash on these keys. The states are our own, so there is no
/// chosen-collision attack to defend against.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Memo = HashSet<(Placed, Box<[Value]>), BuildHasherDefault<FxHasher>>;

/// A set of step numbers.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Placed(Box<[u64]>);

impl Placed {
    fn new(n: usize) -> Placed {
        Placed(vec![0; n.div_ceil(64)].into())
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn with(&self, i: usize) -> Placed {
        let mut next = self.clone();
        next.0[i / 64] |= 1 << (i % 64);
        next
    }
}

fn check_group(
    keys: &[String],
    ops: &[Op],
    state_budget: usize,
    deadline: Instant,
) -> Result<(), CheckError> {
    let started = Instant::now();
    let mut ops = ops.to_vec();
    ops.sort_by_key(|op| op.invoked);
    let steps = prepare(keys, &ops);
    let known_total = steps.iter().filter(|s| s.known).count();
    let n = steps.len();

    // The known and the unknown steps, each in invocation order.
    let (known, unknown): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| steps[i].known);

    // Depth-first search with an explicit stack of states: the steps placed,
    // the registers, how many known steps are placed, and the first known
    // step not placed (an index into `known`).
    let start: Box<[Value]> = vec![Value::Absent; keys.len()].into();
    let mut seen = Memo::default();
    let mut stack = vec![(Placed::new(n), start, 0usize, 0usize)];
    let mut deepest = (0usize, Placed::new(n));
    let mut rounds = 0u64;
    while let Some((placed, registers, known_placed, cursor)) = stack.pop() {
        if known_placed == known_total {
            return Ok(());
        }
        if known_placed > deepest.0 {
            deepest = (known_placed, placed.clone());
        }
        rounds += 1;
        if seen.len() >= state_budget || (rounds.is_multiple_of(1024) && Instant::now() >= deadline)
        {
            return Err(CheckError::TooComplex {
                keys: keys.to_vec(),
                ops: ops.len(),
                states: seen.len(),
                took: started.elapsed(),
            });
        }
        for i in next_steps(&steps, &known[cursor..], &unknown, &placed) {
            let Some(next_registers) = after_step(&registers, &steps[i]) else {
                continue;
            };
            let state = (placed.with(i), next_registers);
            if seen.contains(&state) {
                continue;
            }
            seen.insert(state.clone());
            let (next, next_registers) = state;
            let mut next_cursor = cursor;
            while next_cursor < known.len() && next.has(known[next_cursor]) {
                next_cursor += 1;
            }
            let placed_known = known_placed + usize::from(steps[i].known);
            stack.push((next, next_registers, placed_known, next_cursor));
        }
    }

    Err(stuck_at(keys, &ops, &steps, &deepest.1))
}

/// The steps that may go next after `placed`, in the order to push them (the
/// last is explored first). `known` are the known steps from the first one
/// not placed on, `unknown` all unknown ones, each in invocation order.
fn next_steps(steps: &[Step], known: &[usize], unknown: &[usize], placed: &Placed) -> Vec<usize> {
    // Nothing may go next that began after a remaining operation ended (the
    // horizon). Only known steps end; they are sorted by invocation, and
    // each ends after it begins, so the scan stops at the first one begun
    // after the horizon.
    let mut horizon = u64::MAX;
    let mut candidates = Vec::new();
    for &i in known {
        if steps[i].invoked > horizon {
            break;
        }
        if !placed.has(i) {
            horizon = horizon.min(steps[i].completed);
            candidates.push(i);
        }
    }
    candidates.retain(|&i| steps[i].invoked <= horizon);
    // Explored first: known steps by earliest completion, the order most
    // histories were served in; unknown ones last, each only after its twin.
    candidates.sort_by_key(|&i| std::cmp::Reverse(steps[i].completed));
    let unknown_candidates = unknown
        .iter()
        .take_while(|&&i| steps[i].invoked <= horizon)
        .filter(|&&i| !placed.has(i) && steps[i].twin_before.is_none_or(|t| placed.has(t)));
    unknown_candidates.copied().chain(candidates).collect()
}

/// The failure, told by the first known operation that the deepest attempt
/// (`placed`) could not place, with the operations that overlap it and a
/// few before it.
fn stuck_at(keys: &[String], ops: &[Op], steps: &[Step], placed: &Placed) -> CheckError {
    let stuck = (0..steps.len())
        .find(|&i| !placed.has(i) && steps[i].known)
        .map_or(0, |i| steps[i].op);
    let (from, to) = (ops[stuck].invoked, ops[stuck].completed.unwrap_or(u64::MAX));
    let mut around: Vec<Op> = ops
        .iter()
        .enumerate()
        .filter(|(i, op)| {
            let end = op.completed.unwrap_or(u64::MAX);
            (op.invoked <= to && end >= from) || (*i < stuck && stuck - i <= 3)
        })
        .map(|(_, op)| op.clone())
        .collect();
    around.truncate(30);
    CheckError::NotLinearizable {
        keys: keys.to_vec(),
        around,
    }
}

// ---------------------------------------------------------------------------
// Showing operations and failures
// ---------------------------------------------------------------------------

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.kind {
            OpKind::Set(value) => write!(f, "SET {key} {value}"),
            OpKind::SetNx(value) => write!(f, "SET {key} {value} NX"),
            OpKind::Get => write!(f, "GET {key}"),
            OpKind::Del => write!(f, "DEL {key}"),
            OpKind::Incr => write!(f, "INCR {key}"),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Ok => write!(f, "OK"),
            Answer::NotSet | Answer::Value(None) => write!(f, "nil"),
            Answer::Value(Some(value)) => write!(f, "{value:?}"),
            Answer::Deleted(n) => write!(f, "{n}"),
            Answer::Int(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for Op {
    /// `INCR k -> 3`, or `MULTI; INCR k; GET j; EXEC -> [3, nil]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let commands: Vec<String> = self.commands.iter().map(|c| c.to_string()).collect();
        let answers = match &self.result {
            Outcome::Answered(answers) => answers.iter().map(|a| a.to_string()).collect(),
            Outcome::Unknown => Vec::new(),
        };
        match (&self.result, self.is_transaction()) {
            (Outcome::Unknown, false) => write!(f, "{} -> ?", commands[0]),
            (Outcome::Unknown, true) => write!(f, "MULTI; {}; EXEC -> ?", commands.join("; ")),
            (Outcome::Answered(_), false) => write!(f, "{} -> {}", commands[0], answers[0]),
            (Outcome::Answered(_), true) => write!(
                f,
                "MULTI; {}; EXEC -> [{}]",
                commands.join("; "),
                answers.join(", ")
            ),
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::TooComplex {
                keys,
                ops,
                states,
                took,
            } => write!(
                f,
                "keys {}: undecided: {ops} operations were too many to search \
                 ({states} states in {took:.1?}); shorten the key epochs or raise the limits",
                keys.join(", ")
            ),
            CheckError::Malformed { op, why } => {
                write!(f, "a recorded operation makes no sense ({why}): {op:?}")
            }
            CheckError::NotLinearizable { keys, around } => {
                writeln!(
                    f,
                    "keys {}: no order of their operations explains what the clients saw; \
                     around the first one that cannot be placed:",
                    keys.join(", ")
                )?;
                let origin = around.iter().map(|op| op.invoked).min().unwrap_or(0);
                let ms = |t: u64| (t - origin) as f64 / 1e6;
                for op in around {
                    let end = op
                        .completed
                        .map_or("        ?".to_string(), |t| format!("{:9.3}", ms(t)));
                    writeln!(
                        f,
                        "  client {:>2}  {:9.3} .. {end} ms  {op}",
                        op.client,
                        ms(op.invoked),
                    )?;
                }
                Ok(())
            }
        }
    }
}
