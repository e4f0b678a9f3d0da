//! The linearizability checker of `tests/history`, on histories whose answer
//! is known.

mod history;

use history::{check, CheckError, Op, OpKind, Outcome};

fn op(client: usize, kind: OpKind, span: (u64, Option<u64>), result: Outcome) -> Op {
    Op {
        client,
        key: "k".into(),
        kind,
        invoked: span.0,
        completed: span.1,
        result,
    }
}

fn set(client: usize, value: &str, from: u64, to: u64) -> Op {
    op(
        client,
        OpKind::Set(value.into()),
        (from, Some(to)),
        Outcome::Ok,
    )
}

fn set_unknown(client: usize, value: &str, from: u64) -> Op {
    op(
        client,
        OpKind::Set(value.into()),
        (from, None),
        Outcome::Unknown,
    )
}

fn get(client: usize, value: Option<&str>, from: u64, to: u64) -> Op {
    let seen = Outcome::Value(value.map(str::to_string));
    op(client, OpKind::Get, (from, Some(to)), seen)
}

fn del(client: usize, count: u64, from: u64, to: u64) -> Op {
    op(
        client,
        OpKind::Del,
        (from, Some(to)),
        Outcome::Deleted(count),
    )
}

fn is_linearizable(history: &[Op]) -> bool {
    match check(history) {
        Ok(()) => true,
        Err(CheckError::NotLinearizable { .. }) => false,
        Err(e) => panic!("undecided: {e}"),
    }
}

#[test]
fn sequential_histories() {
    assert!(is_linearizable(&[
        get(0, None, 0, 1),
        set(0, "a", 2, 3),
        get(1, Some("a"), 4, 5),
        del(1, 1, 6, 7),
        get(0, None, 8, 9),
        del(0, 0, 10, 11),
    ]));
    // A value nobody wrote.
    assert!(!is_linearizable(&[
        set(0, "a", 0, 1),
        get(1, Some("b"), 2, 3)
    ]));
    // An old value after a newer write completed.
    assert!(!is_linearizable(&[
        set(0, "a", 0, 1),
        set(0, "b", 2, 3),
        get(1, Some("a"), 4, 5),
    ]));
}

#[test]
fn concurrent_writes_may_be_seen_in_either_order_but_not_both() {
    // Two overlapping sets: a read after both may see either.
    for seen in ["a", "b"] {
        assert!(is_linearizable(&[
            set(0, "a", 0, 10),
            set(1, "b", 0, 10),
            get(2, Some(seen), 11, 12),
        ]));
    }
    // Two reads, one after the other, see b then a: possible only if the
    // writes took effect in both orders (a "new-old inversion").
    assert!(!is_linearizable(&[
        set(0, "a", 0, 10),
        set(1, "b", 0, 10),
        get(2, Some("b"), 11, 12),
        get(3, Some("a"), 13, 14),
    ]));
    // A read overlapping a write may see the old or the new value.
    assert!(is_linearizable(&[
        set(0, "a", 0, 1),
        set(1, "b", 2, 10),
        get(2, Some("a"), 3, 4)
    ]));
    assert!(is_linearizable(&[
        set(0, "a", 0, 1),
        set(1, "b", 2, 10),
        get(2, Some("b"), 3, 4)
    ]));
}

#[test]
fn unknown_outcomes_may_or_may_not_have_happened() {
    // Seen later: it happened.
    assert!(is_linearizable(&[
        set_unknown(0, "x", 0),
        get(1, Some("x"), 50, 51)
    ]));
    // Never seen: it did not.
    assert!(is_linearizable(&[
        set_unknown(0, "x", 0),
        get(1, None, 50, 51)
    ]));
    // Seen before it was even sent: impossible.
    assert!(!is_linearizable(&[
        get(1, Some("x"), 0, 1),
        set_unknown(0, "x", 5)
    ]));
    // Once seen, it cannot be unseen by a later read without another write.
    assert!(!is_linearizable(&[
        set_unknown(0, "x", 0),
        get(1, Some("x"), 10, 11),
        get(1, None, 12, 13),
    ]));
}

#[test]
fn delete_counts_must_match_the_register() {
    assert!(!is_linearizable(&[del(0, 1, 0, 1)]));
    assert!(!is_linearizable(&[set(0, "a", 0, 1), del(1, 0, 2, 3)]));
    assert!(!is_linearizable(&[
        set(0, "a", 0, 1),
        del(1, 1, 2, 3),
        get(2, Some("a"), 4, 5),
    ]));
    assert!(is_linearizable(&[
        set(0, "a", 0, 10),
        del(1, 0, 1, 2),
        get(2, Some("a"), 11, 12)
    ]));
}

#[test]
fn keys_are_independent_and_the_failure_names_its_key() {
    let mut other = get(0, Some("zzz"), 0, 1);
    other.key = "other".into();
    let history = vec![set(0, "a", 0, 1), get(1, Some("a"), 2, 3), other];
    match check(&history) {
        Err(CheckError::NotLinearizable { key, around }) => {
            assert_eq!(key, "other");
            assert_eq!(around.len(), 1);
            let text = check(&history).unwrap_err().to_string();
            assert!(text.contains("key other") && text.contains("zzz"), "{text}");
        }
        other => panic!("expected a violation on key other, got {other:?}"),
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A history produced by a real register: each operation takes effect at a
/// random moment inside its own random interval, in the order of those moments.
fn random_history(rng: &mut Rng, clients: usize, per_client: usize, keys: usize) -> Vec<Op> {
    let mut events = Vec::new();
    for client in 0..clients {
        let mut t = rng.below(100);
        for n in 0..per_client {
            let start = t + rng.below(50);
            let end = start + 1 + rng.below(200);
            let point = start + rng.below(end - start);
            let key = format!("k{}", rng.below(keys as u64));
            let kind = match rng.below(3) {
                0 => OpKind::Set(format!("c{client}-{n}")),
                1 => OpKind::Get,
                _ => OpKind::Del,
            };
            events.push((point, client, key, kind, start, end));
            t = end + 1;
        }
    }
    events.sort_by_key(|e| e.0);
    let mut registers: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut history = Vec::new();
    for (_, client, key, kind, start, end) in events {
        let register = registers.entry(key.clone()).or_default();
        let result = match &kind {
            OpKind::Set(value) => {
                *register = Some(value.clone());
                Outcome::Ok
            }
            OpKind::Get => Outcome::Value(register.clone()),
            OpKind::Del => Outcome::Deleted(u64::from(register.take().is_some())),
        };
        history.push(Op {
            client,
            key,
            kind,
            invoked: start,
            completed: Some(end),
            result,
        });
    }
    history
}

#[test]
fn random_register_histories_pass_and_corrupted_reads_fail() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50 {
        let mut history = random_history(&mut rng, 5, 40, 3);
        assert!(is_linearizable(&history));
        // Some writes lose their answer: still explainable.
        for op in history.iter_mut() {
            if matches!(op.kind, OpKind::Set(_)) && rng.below(5) == 0 {
                op.result = Outcome::Unknown;
                op.completed = None;
            }
        }
        assert!(is_linearizable(&history));
        // A read of a value nobody ever wrote is always caught.
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].kind == OpKind::Get)
            .collect();
        let victim = reads[rng.below(reads.len() as u64) as usize];
        history[victim].result = Outcome::Value(Some("never written".into()));
        assert!(!is_linearizable(&history));
    }
}

#[test]
fn a_busy_history_is_decided_quickly() {
    let mut rng = Rng(12345);
    let history = random_history(&mut rng, 10, 300, 5);
    let started = std::time::Instant::now();
    assert!(is_linearizable(&history));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "3,000 operations took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_failure_deep_in_a_long_history_is_shrunk_to_a_few_operations() {
    let mut rng = Rng(777);
    let mut history: Vec<Op> = random_history(&mut rng, 4, 100, 1)
        .into_iter()
        .map(|mut op| {
            op.key = "k".into();
            op
        })
        .collect();
    // One read, late in the history, of a value nobody wrote.
    let last = history
        .iter()
        .map(|op| op.completed.unwrap())
        .max()
        .unwrap();
    history.push(get(9, Some("ghost"), last + 10, last + 11));
    match check(&history) {
        Err(CheckError::NotLinearizable { around, .. }) => {
            assert!(
                around.len() <= 3,
                "shrunk to {} operations: {around:?}",
                around.len()
            );
            assert!(around
                .iter()
                .any(|op| op.result == Outcome::Value(Some("ghost".into()))));
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

/// The plainest possible decision for a handful of operations on one key: try
/// every order that respects real time, with no memo and no pruning. Unknown
/// operations may be placed or left out; the order is complete once every
/// operation with a known outcome is placed.
fn exhaustive_search(history: &[Op]) -> bool {
    fn must_come_first(earlier: &Op, later: &Op) -> bool {
        matches!(earlier.completed, Some(end) if end < later.invoked)
    }
    fn extend(history: &[Op], unplaced: &mut Vec<usize>, register: Option<String>) -> bool {
        if unplaced
            .iter()
            .all(|&i| history[i].result == Outcome::Unknown)
        {
            return true;
        }
        for slot in 0..unplaced.len() {
            let candidate = &history[unplaced[slot]];
            if unplaced
                .iter()
                .any(|&other| must_come_first(&history[other], candidate))
            {
                continue;
            }
            let after = match (&candidate.kind, &candidate.result) {
                (OpKind::Set(value), _) => Some(Some(value.clone())),
                (OpKind::Get, Outcome::Value(seen)) => {
                    (*seen == register).then(|| register.clone())
                }
                (OpKind::Get, _) => Some(register.clone()),
                (OpKind::Del, Outcome::Deleted(count)) => {
                    (*count == u64::from(register.is_some())).then_some(None)
                }
                (OpKind::Del, _) => Some(None),
            };
            if let Some(after) = after {
                let placed = unplaced.remove(slot);
                let found = extend(history, unplaced, after);
                unplaced.insert(slot, placed);
                if found {
                    return true;
                }
            }
        }
        false
    }
    extend(history, &mut (0..history.len()).collect(), None)
}

#[test]
fn agrees_with_an_exhaustive_search_on_small_random_histories() {
    let mut rng = Rng(0x5eed_cafe);
    let (mut passed, mut failed) = (0, 0);
    for round in 0..3_000 {
        let history: Vec<Op> = (0..1 + rng.below(7) as usize)
            .map(|client| {
                let from = rng.below(50);
                let to = from + rng.below(30);
                let value = ["a", "b", "c"][rng.below(3) as usize];
                match rng.below(10) {
                    0..=3 if rng.below(5) == 0 => set_unknown(client, value, from),
                    0..=3 => set(client, value, from, to),
                    4..=7 => get(client, (rng.below(4) != 0).then_some(value), from, to),
                    _ => del(client, rng.below(2), from, to),
                }
            })
            .collect();
        let expected = exhaustive_search(&history);
        match check(&history) {
            Ok(()) => {
                assert!(
                    expected,
                    "round {round}: accepted, but no order exists: {history:#?}"
                );
                passed += 1;
            }
            Err(CheckError::NotLinearizable { around, .. }) => {
                assert!(
                    !expected,
                    "round {round}: rejected, but an order exists: {history:#?}"
                );
                // What the failure shows must itself have no order.
                assert!(
                    !exhaustive_search(&around),
                    "round {round}: shrunk part passes: {around:#?}"
                );
                failed += 1;
            }
            Err(e) => panic!("round {round}: undecided: {e}"),
        }
    }
    // Both answers are exercised, not just one.
    assert!(
        passed > 300 && failed > 300,
        "passed {passed}, failed {failed}"
    );
}
