//! Is a recorded history of key-value operations linearizable?
//!
//! Each key is a register (absent, or one value), and keys are independent, so
//! the history is checked key by key. For one key the search is Wing and
//! Gong's, with Lowe's memo: build a total order one operation at a time,
//! taking next only an operation that no remaining operation finished before
//! it began (real-time order), and only if the register's answer matches what
//! the client saw. A state of the search is the set of operations placed so
//! far plus the register's value; a state seen before is not explored again,
//! which keeps histories of thousands of operations per key tractable.
//!
//! An operation whose outcome is unknown (a timeout, a lost connection) may
//! have taken effect at any time after it began, or never: it may be placed
//! anywhere after its start, and the search succeeds without it.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashSet;
use std::fmt;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Set(String),
    Get,
    Del,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// SET answered OK.
    Ok,
    /// GET answered this value (None: nil).
    Value(Option<String>),
    /// DEL answered this count.
    Deleted(u64),
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One operation. Times are nanoseconds on one clock shared by all clients.
/// Operations the server refused for certain (and reads that failed) are not
/// recorded at all: they changed nothing.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: OpKind,
    pub invoked: u64,
    /// None when the outcome is unknown.
    pub completed: Option<u64>,
    pub result: Outcome,
}

/// Why a history did not pass.
#[derive(Debug)]
pub enum CheckError {
    /// No order of the operations on `key` explains what the clients saw.
    NotLinearizable {
        key: String,
        /// The operations around the first one that could not be placed.
        around: Vec<Op>,
    },
    /// The search gave up: too many states for the budget.
    TooComplex { key: String, ops: usize },
}

/// States explored per key before giving up.
const STATE_BUDGET: usize = 5_000_000;

/// Checks every key's history; the first failure is returned.
pub fn check(history: &[Op]) -> Result<(), CheckError> {
    let mut keys: Vec<&str> = history.iter().map(|op| op.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let ops: Vec<Op> = history.iter().filter(|op| op.key == key).cloned().collect();
        if let Err(CheckError::NotLinearizable { key, around }) = check_key(key, ops.clone()) {
            let around = shrink(&key, ops).unwrap_or(around);
            return Err(CheckError::NotLinearizable { key, around });
        }
    }
    Ok(())
}

/// How long the search for a short failing history may take.
const SHRINK_TIME: std::time::Duration = std::time::Duration::from_secs(3);

/// A short part of a failing key's history that still fails: first the
/// shortest prefix in time (operations begun before some moment, those still
/// running then counted as unknown), then runs of operations dropped while
/// it keeps failing, halves first, until the time is up. None if nothing shorter than
/// 30 operations is found.
fn shrink(key: &str, ops: Vec<Op>) -> Option<Vec<Op>> {
    let deadline = std::time::Instant::now() + SHRINK_TIME;
    let fails = |ops: &[Op]| {
        matches!(
            check_key(key, ops.to_vec()),
            Err(CheckError::NotLinearizable { .. })
        )
    };
    let prefix_until = |moment: u64| -> Vec<Op> {
        ops.iter()
            .filter(|op| op.invoked <= moment)
            .map(|op| match op.completed {
                Some(done) if done > moment && !matches!(op.result, Outcome::Unknown) => Op {
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
    while low < high && std::time::Instant::now() < deadline {
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
    while run >= 1 && std::time::Instant::now() < deadline {
        let mut start = 0;
        while start < short.len() && std::time::Instant::now() < deadline {
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

/// An operation prepared for the search: values as small numbers (0 = absent).
struct Step {
    invoked: u64,
    completed: u64,
    kind: Kind,
    known: bool,
}

enum Kind {
    Set(u32),
    /// The value id the read returned; None when the read failed (never recorded).
    Get(u32),
    Del(Option<u64>),
}

fn check_key(key: &str, mut ops: Vec<Op>) -> Result<(), CheckError> {
    ops.sort_by_key(|op| op.invoked);
    let mut values: Vec<String> = Vec::new();
    let mut id_of = |value: &str| -> u32 {
        match values.iter().position(|v| v == value) {
            Some(i) => i as u32 + 1,
            None => {
                values.push(value.to_string());
                values.len() as u32
            }
        }
    };
    let steps: Vec<Step> = ops
        .iter()
        .map(|op| {
            let known = !matches!(op.result, Outcome::Unknown);
            let kind = match (&op.kind, &op.result) {
                (OpKind::Set(value), _) => Kind::Set(id_of(value)),
                (OpKind::Get, Outcome::Value(value)) => {
                    Kind::Get(value.as_deref().map_or(0, &mut id_of))
                }
                (OpKind::Get, _) => Kind::Get(0),
                (OpKind::Del, Outcome::Deleted(n)) => Kind::Del(Some(*n)),
                (OpKind::Del, _) => Kind::Del(None),
            };
            Step {
                invoked: op.invoked,
                completed: op.completed.unwrap_or(u64::MAX),
                kind,
                known,
            }
        })
        .collect();
    let known_total = steps.iter().filter(|s| s.known).count();

    // Depth-first search with an explicit stack of (placed set, register).
    let words = steps.len().div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, u32, usize)> = vec![(vec![0; words], 0, 0)];
    let mut deepest = (0usize, vec![0u64; words]);
    while let Some((placed, register, known_placed)) = stack.pop() {
        if known_placed == known_total {
            return Ok(());
        }
        if known_placed > deepest.0 {
            deepest = (known_placed, placed.clone());
        }
        if seen.len() >= STATE_BUDGET {
            return Err(CheckError::TooComplex {
                key: key.to_string(),
                ops: steps.len(),
            });
        }
        let is_placed = |i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
        // Nothing may go next that began after a remaining operation ended.
        let horizon = (0..steps.len())
            .filter(|&i| !is_placed(i))
            .map(|i| steps[i].completed)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..steps.len()).filter(|&i| !is_placed(i)) {
            let step = &steps[i];
            if step.invoked > horizon {
                break; // sorted by invocation: no later one qualifies either
            }
            let next_register = match step.kind {
                Kind::Set(value) => value,
                Kind::Get(seen_value) if seen_value == register => register,
                Kind::Get(_) => continue,
                Kind::Del(Some(count)) if count == u64::from(register != 0) => 0,
                Kind::Del(Some(_)) => continue,
                Kind::Del(None) => 0,
            };
            let mut next = placed.clone();
            next[i / 64] |= 1 << (i % 64);
            if seen.insert((next.clone(), next_register)) {
                stack.push((next, next_register, known_placed + usize::from(step.known)));
            }
        }
    }

    // Report the first known operation that the deepest attempt could not
    // place, with the operations that overlap it and a few before it.
    let placed = deepest.1;
    let stuck = (0..steps.len())
        .find(|&i| placed[i / 64] & (1 << (i % 64)) == 0 && steps[i].known)
        .unwrap_or(0);
    let (from, to) = (steps[stuck].invoked, steps[stuck].completed);
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
    Err(CheckError::NotLinearizable {
        key: key.to_string(),
        around,
    })
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::TooComplex { key, ops } => write!(
                f,
                "key {key}: {ops} operations were too many to decide within the search budget"
            ),
            CheckError::NotLinearizable { key, around } => {
                writeln!(f, "key {key}: no order of its operations explains what the clients saw; around the first one that cannot be placed:")?;
                let origin = around.iter().map(|op| op.invoked).min().unwrap_or(0);
                let ms = |t: u64| (t - origin) as f64 / 1e6;
                for op in around {
                    let end = op
                        .completed
                        .map_or("     ?".to_string(), |t| format!("{:9.3}", ms(t)));
                    writeln!(
                        f,
                        "  client {:>2}  {:9.3} .. {end} ms  {:?} -> {:?}",
                        op.client,
                        ms(op.invoked),
                        op.kind,
                        op.result
                    )?;
                }
                Ok(())
            }
        }
    }
}
