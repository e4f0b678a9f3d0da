//! The linearizability checker of `tests/history`, on histories whose answer
//! is known.

mod history;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use history::{check, check_within, Answer, CheckError, Command, Limits, Op, OpKind, Outcome};

// ---------------------------------------------------------------------------
// Building histories
// ---------------------------------------------------------------------------

fn set(client: usize, value: &str, from: u64, to: u64) -> Op {
    Op::one(
        client,
        "k",
        OpKind::Set(value.into()),
        (from, to),
        Answer::Ok,
    )
}

fn get(client: usize, value: Option<&str>, from: u64, to: u64) -> Op {
    let seen = Answer::Value(value.map(str::to_string));
    Op::one(client, "k", OpKind::Get, (from, to), seen)
}

fn del(client: usize, count: u64, from: u64, to: u64) -> Op {
    Op::one(client, "k", OpKind::Del, (from, to), Answer::Deleted(count))
}

fn incr(client: usize, new_value: i64, from: u64, to: u64) -> Op {
    Op::one(
        client,
        "k",
        OpKind::Incr,
        (from, to),
        Answer::Int(new_value),
    )
}

/// SET k value NX, which `wrote` or answered nil.
fn set_nx(client: usize, value: &str, wrote: bool, from: u64, to: u64) -> Op {
    let answer = if wrote { Answer::Ok } else { Answer::NotSet };
    Op::one(client, "k", OpKind::SetNx(value.into()), (from, to), answer)
}

/// The same operation with no answer: invoked at `from`, never completed.
fn unknown(mut op: Op) -> Op {
    op.completed = None;
    op.result = Outcome::Unknown;
    op
}

fn set_unknown(client: usize, value: &str, from: u64) -> Op {
    unknown(set(client, value, from, from))
}

/// A single-command operation moved to `key`.
fn on(key: &str, mut op: Op) -> Op {
    op.commands[0].key = key.into();
    op
}

/// MULTI, `commands` (key and kind), EXEC, answered with `answers`.
fn multi(client: usize, commands: &[(&str, OpKind)], answers: &[Answer], span: (u64, u64)) -> Op {
    Op {
        client,
        commands: commands
            .iter()
            .map(|(key, kind)| Command {
                key: key.to_string(),
                kind: kind.clone(),
            })
            .collect(),
        invoked: span.0,
        completed: Some(span.1),
        result: Outcome::Answered(answers.to_vec()),
    }
}

fn value(text: &str) -> Answer {
    Answer::Value(Some(text.into()))
}

fn is_linearizable(history: &[Op]) -> bool {
    match check(history) {
        Ok(()) => true,
        Err(CheckError::NotLinearizable { .. }) => false,
        Err(e) => panic!("undecided: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Registers: SET, GET, DEL
// ---------------------------------------------------------------------------

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
    // A write nobody read still makes the key present.
    assert!(is_linearizable(&[set_unknown(0, "a", 0), del(1, 1, 5, 6)]));
    assert!(!is_linearizable(&[set_unknown(0, "a", 5), del(1, 1, 0, 1)]));
}

// ---------------------------------------------------------------------------
// Counters: INCR
// ---------------------------------------------------------------------------

#[test]
fn incr_counts_up_from_one_and_a_delete_starts_it_again() {
    assert!(is_linearizable(&[
        incr(0, 1, 0, 1),
        incr(1, 2, 2, 3),
        get(0, Some("2"), 4, 5),
        del(1, 1, 6, 7),
        incr(0, 1, 8, 9),
    ]));
    // Two INCRs both answered 1 without a reset between them: one was lost.
    assert!(!is_linearizable(&[incr(0, 1, 0, 1), incr(1, 1, 2, 3)]));
    assert!(!is_linearizable(&[incr(0, 1, 0, 10), incr(1, 1, 0, 10)]));
    // Overlapping INCRs may take effect in either order.
    assert!(is_linearizable(&[incr(0, 2, 0, 10), incr(1, 1, 0, 10)]));
    // A DEL that may have come between explains a second 1.
    assert!(is_linearizable(&[
        incr(0, 1, 0, 1),
        del(2, 1, 2, 10),
        incr(1, 1, 3, 11)
    ]));
    // A skipped number: no INCR made it.
    assert!(!is_linearizable(&[incr(0, 1, 0, 1), incr(1, 3, 2, 3)]));
}

#[test]
fn a_lost_acknowledged_incr_is_caught() {
    let acknowledged = [incr(0, 1, 0, 1), incr(1, 2, 2, 3)];
    let later = |op: Op| [acknowledged[0].clone(), acknowledged[1].clone(), op];
    assert!(is_linearizable(&later(get(2, Some("2"), 4, 5))));
    assert!(!is_linearizable(&later(get(2, Some("1"), 4, 5))));
    assert!(!is_linearizable(&later(incr(2, 2, 4, 5))));
    assert!(is_linearizable(&later(incr(2, 3, 4, 5))));
}

#[test]
fn incr_works_on_any_integer_value_and_on_nothing_else() {
    assert!(is_linearizable(&[set(0, "41", 0, 1), incr(0, 42, 2, 3)]));
    // "a" is not an integer: INCR fails and can have answered no number.
    assert!(!is_linearizable(&[set(0, "a", 0, 1), incr(0, 1, 2, 3)]));
    // A number INCR stored reads back as the same text.
    assert!(is_linearizable(&[
        incr(0, 1, 0, 1),
        get(0, Some("1"), 2, 3)
    ]));
    assert!(!is_linearizable(&[
        incr(0, 1, 0, 1),
        get(0, Some("01"), 2, 3)
    ]));
}

#[test]
fn an_unknown_incr_counts_only_if_a_later_answer_needs_it() {
    let maybe = unknown(incr(0, 0, 0, 0));
    assert!(is_linearizable(&[maybe.clone(), incr(1, 1, 10, 11)]));
    assert!(is_linearizable(&[maybe.clone(), incr(1, 2, 10, 11)]));
    assert!(!is_linearizable(&[maybe.clone(), incr(1, 3, 10, 11)]));
    // Once counted, it stays counted.
    assert!(!is_linearizable(&[
        maybe,
        incr(1, 2, 10, 11),
        get(1, Some("1"), 12, 13),
    ]));
}

#[test]
fn many_unknown_incrs_are_decided_quickly() {
    // Unknown INCRs are interchangeable: the search must not try each subset.
    let many: Vec<Op> = (0..200)
        .map(|client| unknown(incr(client, 0, client as u64, 0)))
        .collect();
    let started = Instant::now();
    for (answer, expected) in [(1, true), (117, true), (201, true), (202, false)] {
        let mut history = many.clone();
        history.push(incr(999, answer, 1_000, 1_001));
        assert_eq!(
            is_linearizable(&history),
            expected,
            "INCR answered {answer}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// SET NX
// ---------------------------------------------------------------------------

#[test]
fn set_nx_writes_only_an_absent_key() {
    assert!(is_linearizable(&[
        set_nx(0, "a", true, 0, 1),
        set_nx(1, "b", false, 2, 3),
        get(2, Some("a"), 4, 5),
        del(2, 1, 6, 7),
        set_nx(1, "c", true, 8, 9),
    ]));
    // Two SET NX both succeed, one after the other, with no DEL between.
    assert!(!is_linearizable(&[
        set_nx(0, "a", true, 0, 1),
        set_nx(1, "b", true, 2, 3),
    ]));
    // ... or at the same time.
    assert!(!is_linearizable(&[
        set_nx(0, "a", true, 0, 10),
        set_nx(1, "b", true, 0, 10),
    ]));
    // At the same time, one wins; a later read sees the winner only.
    assert!(is_linearizable(&[
        set_nx(0, "a", false, 0, 10),
        set_nx(1, "b", true, 0, 10),
        get(2, Some("b"), 11, 12),
    ]));
    assert!(!is_linearizable(&[
        set_nx(0, "a", false, 0, 10),
        set_nx(1, "b", true, 0, 10),
        get(2, Some("a"), 11, 12),
    ]));
    // Nil with nothing ever written: it cannot have found the key present.
    assert!(!is_linearizable(&[set_nx(0, "a", false, 0, 1)]));
    // Nil because an unknown write did happen.
    assert!(is_linearizable(&[
        set_unknown(1, "x", 0),
        set_nx(0, "a", false, 5, 6)
    ]));
    // A plain SET overwrites what SET NX wrote.
    assert!(is_linearizable(&[
        set_nx(0, "a", true, 0, 1),
        set(1, "b", 2, 3),
        get(0, Some("b"), 4, 5),
    ]));
}

// ---------------------------------------------------------------------------
// MULTI/EXEC
// ---------------------------------------------------------------------------

#[test]
fn a_history_with_incr_set_nx_and_transactions_passes() {
    let history = vec![
        on("n", incr(0, 1, 0, 1)),
        on("a", set_nx(1, "a1", true, 0, 2)),
        multi(
            2,
            &[
                ("n", OpKind::Incr),
                ("b", OpKind::Set("b1".into())),
                ("a", OpKind::Get),
            ],
            &[Answer::Int(2), Answer::Ok, value("a1")],
            (3, 6),
        ),
        // Concurrent with the transaction: before it or after it, not inside.
        on("n", get(0, Some("1"), 4, 5)),
        multi(
            1,
            &[("a", OpKind::SetNx("a2".into())), ("n", OpKind::Incr)],
            &[Answer::NotSet, Answer::Int(3)],
            (7, 8),
        ),
        on("b", get(0, Some("b1"), 9, 10)),
        on("n", incr(2, 4, 9, 10)),
        // A transaction sees its own earlier commands.
        multi(
            0,
            &[
                ("b", OpKind::Del),
                ("b", OpKind::SetNx("b2".into())),
                ("b", OpKind::Get),
            ],
            &[Answer::Deleted(1), Answer::Ok, value("b2")],
            (11, 12),
        ),
    ];
    assert!(is_linearizable(&history));
}

#[test]
fn a_transaction_takes_effect_at_one_moment() {
    let write_both = multi(
        0,
        &[("n", OpKind::Incr), ("a", OpKind::Set("v".into()))],
        &[Answer::Int(1), Answer::Ok],
        (0, 1),
    );
    // Half of it visible after it completed.
    assert!(!is_linearizable(&[
        write_both.clone(),
        on("n", get(1, Some("1"), 2, 3)),
        on("a", get(1, None, 4, 5)),
    ]));
    // While it runs, a reader of both keys sees all of it or none of it.
    let slow = multi(
        0,
        &[("n", OpKind::Incr), ("a", OpKind::Set("v".into()))],
        &[Answer::Int(1), Answer::Ok],
        (0, 100),
    );
    let read_both =
        |seen: &[Answer]| multi(1, &[("n", OpKind::Get), ("a", OpKind::Get)], seen, (10, 20));
    assert!(is_linearizable(&[
        slow.clone(),
        read_both(&[value("1"), value("v")])
    ]));
    assert!(is_linearizable(&[
        slow.clone(),
        read_both(&[Answer::Value(None), Answer::Value(None)])
    ]));
    assert!(!is_linearizable(&[
        slow,
        read_both(&[value("1"), Answer::Value(None)])
    ]));
    // Its commands run in their order.
    assert!(!is_linearizable(&[multi(
        0,
        &[("n", OpKind::Incr), ("n", OpKind::Get)],
        &[Answer::Int(1), Answer::Value(None)],
        (0, 1),
    )]));
}

#[test]
fn a_transaction_whose_reads_no_order_explains_fails_though_each_key_alone_passes() {
    // Two writes at the same time; two readers of both keys disagree on which
    // came first. Each key's reads alone are fine; together they are not.
    let writes = [on("a", set(0, "x", 0, 100)), on("b", set(1, "y", 0, 100))];
    let both_keys = |client: usize, seen: [Option<&str>; 2], span: (u64, u64)| {
        let [a, b] = seen.map(|v| Answer::Value(v.map(str::to_string)));
        multi(
            client,
            &[("a", OpKind::Get), ("b", OpKind::Get)],
            &[a, b],
            span,
        )
    };
    let readers = [
        both_keys(2, [Some("x"), None], (10, 20)),
        both_keys(3, [None, Some("y")], (10, 20)),
    ];
    let history: Vec<Op> = writes.iter().chain(&readers).cloned().collect();
    assert!(!is_linearizable(&history));
    // The same reads as separate GETs at the same times: linearizable.
    let split: Vec<Op> = writes
        .iter()
        .cloned()
        .chain(readers.iter().flat_map(|reader| {
            let Outcome::Answered(answers) = &reader.result else {
                unreachable!()
            };
            let reader = reader.clone();
            reader
                .commands
                .clone()
                .into_iter()
                .zip(answers.clone())
                .map(move |(command, answer)| Op {
                    commands: vec![command],
                    result: Outcome::Answered(vec![answer]),
                    ..reader.clone()
                })
        }))
        .collect();
    assert!(is_linearizable(&split));
}

#[test]
fn an_unknown_transaction_happened_entirely_or_not_at_all() {
    let maybe = unknown(multi(
        0,
        &[
            ("n", OpKind::Incr),
            ("a", OpKind::Set("v".into())),
            ("b", OpKind::Get),
        ],
        &[],
        (0, 0),
    ));
    // Read both keys at one moment: all of it or none of it.
    let read_both = |n: Option<&str>, a: Option<&str>| {
        let seen = [n, a].map(|v| Answer::Value(v.map(str::to_string)));
        let reader = multi(
            1,
            &[("n", OpKind::Get), ("a", OpKind::Get)],
            &seen,
            (10, 11),
        );
        vec![maybe.clone(), reader]
    };
    assert!(is_linearizable(&read_both(Some("1"), Some("v"))));
    assert!(is_linearizable(&read_both(None, None)));
    assert!(!is_linearizable(&read_both(None, Some("v"))));
    assert!(!is_linearizable(&read_both(Some("1"), None)));
    // Read one key after the other: it may fall between the two reads, but
    // once seen it cannot be unseen.
    let one_then_other = |n: Option<&str>, a: Option<&str>| {
        vec![
            maybe.clone(),
            on("n", get(1, n, 10, 11)),
            on("a", get(1, a, 12, 13)),
        ]
    };
    assert!(is_linearizable(&one_then_other(None, Some("v"))));
    assert!(!is_linearizable(&one_then_other(Some("1"), None)));
}

#[test]
fn keys_a_transaction_joins_are_checked_together_and_the_failure_names_them() {
    let history = vec![
        multi(
            0,
            &[("a", OpKind::Set("1x".into())), ("b", OpKind::Incr)],
            &[Answer::Ok, Answer::Int(1)],
            (0, 1),
        ),
        on("b", incr(1, 1, 2, 3)),
        on("other", set(2, "fine", 0, 1)),
    ];
    match check(&history) {
        Err(e @ CheckError::NotLinearizable { .. }) => {
            let text = e.to_string();
            let CheckError::NotLinearizable { keys, around } = e else {
                unreachable!()
            };
            assert_eq!(keys, ["a", "b"]);
            assert_eq!(around.len(), 2, "{text}");
            assert!(
                text.contains("keys a, b")
                    && text.contains("MULTI; SET a 1x; INCR b; EXEC -> [OK, 1]")
                    && text.contains("INCR b -> 1"),
                "{text}"
            );
        }
        other => panic!("expected a violation on keys a and b, got {other:?}"),
    }
}

#[test]
fn keys_are_independent_and_the_failure_names_its_key() {
    let other = on("other", get(0, Some("zzz"), 0, 1));
    let history = vec![set(0, "a", 0, 1), get(1, Some("a"), 2, 3), other];
    match check(&history) {
        Err(CheckError::NotLinearizable { keys, around }) => {
            assert_eq!(keys, ["other"]);
            assert_eq!(around.len(), 1);
            let text = check(&history).unwrap_err().to_string();
            assert!(
                text.contains("keys other") && text.contains("GET other -> \"zzz\""),
                "{text}"
            );
        }
        other => panic!("expected a violation on key other, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Limits and malformed records
// ---------------------------------------------------------------------------

/// Many concurrent unknown writes, each of whose values was read, then a read
/// of a value nobody wrote: the search must try a great many orders to
/// be sure, so with small limits it gives up.
fn hard_history() -> Vec<Op> {
    let mut history = Vec::new();
    for i in 0..40 {
        let value = format!("v{i}");
        history.push(set_unknown(i, &value, 0));
        history.push(get(100 + i, Some(&value), 0, 1_000));
    }
    history.push(get(999, Some("ghost"), 2_000, 2_001));
    history
}

#[test]
fn a_history_too_hard_to_search_is_undecided_never_passed() {
    let limits = Limits {
        states: 20_000,
        time: Duration::from_secs(5),
    };
    let started = Instant::now();
    match check_within(&hard_history(), limits) {
        Err(e @ CheckError::TooComplex { .. }) => {
            let text = e.to_string();
            assert!(text.contains("keys k: undecided"), "{text}");
        }
        other => panic!("expected an undecided search, got {other:?}"),
    }
    // The time limit holds too.
    let limits = Limits {
        states: usize::MAX,
        time: Duration::from_millis(300),
    };
    assert!(matches!(
        check_within(&hard_history(), limits),
        Err(CheckError::TooComplex { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A violation in another group is still reported, in preference.
    let mut history = hard_history();
    history.push(on("other", get(0, Some("zzz"), 0, 1)));
    match check_within(&history, limits) {
        Err(CheckError::NotLinearizable { keys, .. }) => assert_eq!(keys, ["other"]),
        other => panic!("expected the violation on other, got {other:?}"),
    }
}

#[test]
fn malformed_records_are_refused_with_the_reason() {
    let mut two_answers = set(0, "a", 0, 1);
    two_answers.result = Outcome::Answered(vec![Answer::Ok, Answer::Ok]);
    let wrong_kind = Op::one(0, "k", OpKind::Incr, (0, 1), Answer::Ok);
    let mut unknown_but_completed = set_unknown(0, "a", 0);
    unknown_but_completed.completed = Some(3);
    for (op, says) in [
        (two_answers, "1 commands but 2 answers"),
        (wrong_kind, "Incr cannot answer Ok"),
        (unknown_but_completed, "unknown, yet completed"),
    ] {
        match check(&[op]) {
            Err(e @ CheckError::Malformed { .. }) => {
                assert!(e.to_string().contains(says), "{e}")
            }
            other => panic!("expected {says}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Random histories
// ---------------------------------------------------------------------------

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Redis's meaning of one command, written out plainly and apart from the
/// checker's model: the answer (None: an error reply, which changes nothing)
/// and the new state.
fn redis_apply(state: &mut BTreeMap<String, String>, command: &Command) -> Option<Answer> {
    let key = &command.key;
    Some(match &command.kind {
        OpKind::Set(value) => {
            state.insert(key.clone(), value.clone());
            Answer::Ok
        }
        OpKind::SetNx(_) if state.contains_key(key) => Answer::NotSet,
        OpKind::SetNx(value) => {
            state.insert(key.clone(), value.clone());
            Answer::Ok
        }
        OpKind::Get => Answer::Value(state.get(key).cloned()),
        OpKind::Del => Answer::Deleted(u64::from(state.remove(key).is_some())),
        OpKind::Incr => {
            let old = match state.get(key) {
                None => 0,
                Some(text) => text
                    .parse::<i64>()
                    .ok()
                    .filter(|n| n.to_string() == *text)?,
            };
            let new = old.checked_add(1)?;
            state.insert(key.clone(), new.to_string());
            Answer::Int(new)
        }
    })
}

/// A history produced by a real store: each operation takes effect at a
/// random moment inside its own interval, in the order of those moments, with
/// answers from [`redis_apply`]. `command` draws one command; operations are
/// transactions of 2 or 3 commands with probability `transactions` / 10.
/// An operation one of whose commands failed is recorded as unknown.
fn random_history(
    rng: &mut Rng,
    clients: usize,
    per_client: usize,
    transactions: u64,
    command: &mut dyn FnMut(&mut Rng, usize, usize, usize) -> Command,
) -> Vec<Op> {
    let mut events = Vec::new();
    for client in 0..clients {
        let mut t = rng.below(100);
        for n in 0..per_client {
            let start = t + rng.below(50);
            let end = start + 1 + rng.below(200);
            let point = start + rng.below(end - start);
            let group = rng.below(1_000) as usize;
            let count = if rng.below(10) < transactions {
                2 + rng.below(2) as usize
            } else {
                1
            };
            let commands: Vec<Command> = (0..count)
                .map(|i| command(rng, client, n * 4 + i, group))
                .collect();
            events.push((point, client, commands, start, end));
            t = end + 1;
        }
    }
    events.sort_by_key(|e| e.0);
    let mut state = BTreeMap::new();
    let mut history = Vec::new();
    for (_, client, commands, start, end) in events {
        let answers: Option<Vec<Answer>> = commands
            .iter()
            .map(|c| redis_apply(&mut state, c))
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let (completed, result) = match answers {
            Some(answers) => (Some(end), Outcome::Answered(answers)),
            None => (None, Outcome::Unknown),
        };
        history.push(Op {
            client,
            commands,
            invoked: start,
            completed,
            result,
        });
    }
    history
}

/// Commands over `groups` groups of keys: in each, a counter `gN-n` (INCR,
/// GET, DEL) and registers `gN-a`, `gN-b` (SET, SET NX, GET, DEL), as the
/// chaos test uses them. All commands of one operation stay in its group.
fn grouped_commands(groups: usize) -> impl FnMut(&mut Rng, usize, usize, usize) -> Command {
    move |rng, client, n, group| {
        let group = group % groups;
        let name = *rng.pick(&["n", "a", "b"]);
        let key = format!("g{group}-{name}");
        let value = format!("c{client}-{n}");
        let roll = rng.below(10);
        let kind = match name {
            "n" => match roll {
                0..=5 => OpKind::Incr,
                6..=8 => OpKind::Get,
                _ => OpKind::Del,
            },
            _ => match roll {
                0..=2 => OpKind::Set(value),
                3..=4 => OpKind::SetNx(value),
                5..=8 => OpKind::Get,
                _ => OpKind::Del,
            },
        };
        Command { key, kind }
    }
}

#[test]
fn random_histories_pass_and_corrupted_answers_fail() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let mut history = random_history(&mut rng, 5, 40, 3, &mut grouped_commands(2));
        assert!(is_linearizable(&history), "round {round}");
        // Some writes lose their answer: still explainable.
        for op in history.iter_mut() {
            let writes = op.commands.iter().any(|c| c.kind != OpKind::Get);
            if writes && rng.below(10) == 0 {
                op.result = Outcome::Unknown;
                op.completed = None;
            }
        }
        assert!(is_linearizable(&history), "round {round}, with unknowns");
        // A read of a value nobody wrote, or a count nobody reached, is caught.
        let answered: Vec<(usize, usize)> = (0..history.len())
            .flat_map(|i| match &history[i].result {
                Outcome::Answered(answers) => (0..answers.len()).map(|j| (i, j)).collect(),
                Outcome::Unknown => Vec::new(),
            })
            .filter(|&(i, j)| matches!(history[i].commands[j].kind, OpKind::Get | OpKind::Incr))
            .collect();
        let &(i, j) = rng.pick(&answered);
        let Outcome::Answered(answers) = &mut history[i].result else {
            unreachable!()
        };
        answers[j] = match answers[j] {
            Answer::Int(_) => Answer::Int(10_000),
            _ => value("never written"),
        };
        let t = Instant::now();
        assert!(!is_linearizable(&history), "round {round}, corrupted");
        eprintln!("round {round}: corrupted check {:?}", t.elapsed());
    }
}

#[test]
fn a_busy_history_is_decided_quickly() {
    let mut rng = Rng(12345);
    let mut history = random_history(&mut rng, 10, 300, 2, &mut grouped_commands(2));
    for op in history.iter_mut() {
        if rng.below(50) == 0 && op.commands.iter().any(|c| c.kind != OpKind::Get) {
            op.result = Outcome::Unknown;
            op.completed = None;
        }
    }
    let started = Instant::now();
    assert!(is_linearizable(&history));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "3,000 operations took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_failure_deep_in_a_long_history_is_shrunk_to_a_few_operations() {
    let mut rng = Rng(777);
    let mut history = random_history(&mut rng, 4, 100, 2, &mut grouped_commands(1));
    // One read, late in the history, of a value nobody wrote.
    let last = history.iter().filter_map(|op| op.completed).max().unwrap();
    history.push(on("g0-a", get(9, Some("ghost"), last + 10, last + 11)));
    match check(&history) {
        Err(CheckError::NotLinearizable { around, .. }) => {
            assert!(
                around.len() <= 3,
                "shrunk to {} operations: {around:?}",
                around.len()
            );
            assert!(around
                .iter()
                .any(|op| op.result == Outcome::Answered(vec![value("ghost")])));
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Agreement with an exhaustive search
// ---------------------------------------------------------------------------

/// The plainest possible decision for a handful of operations: try every
/// order that respects real time, over all keys at once, with no memo, no
/// grouping and no pruning, on [`redis_apply`]. Unknown operations may be
/// placed or left out; the order is complete once every operation with a
/// known outcome is placed.
fn exhaustive_search(history: &[Op]) -> bool {
    fn must_come_first(earlier: &Op, later: &Op) -> bool {
        matches!(earlier.completed, Some(end) if end < later.invoked)
    }
    fn extend(history: &[Op], unplaced: &mut Vec<usize>, state: BTreeMap<String, String>) -> bool {
        if unplaced.iter().all(|&i| !history[i].is_known()) {
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
            let mut after = state.clone();
            let answers: Vec<Option<Answer>> = candidate
                .commands
                .iter()
                .map(|c| redis_apply(&mut after, c))
                .collect();
            let fits = match &candidate.result {
                Outcome::Unknown => true,
                Outcome::Answered(seen) => seen
                    .iter()
                    .zip(&answers)
                    .all(|(seen, answer)| answer.as_ref() == Some(seen)),
            };
            if fits {
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
    extend(history, &mut (0..history.len()).collect(), BTreeMap::new())
}

/// Checks `rounds` small histories from `make` against the exhaustive search;
/// returns how many passed and failed.
fn compare_with_exhaustive_search(
    rounds: usize,
    mut make: impl FnMut(&mut Rng) -> Vec<Op>,
) -> (usize, usize) {
    let mut rng = Rng(0x5eed_cafe);
    let (mut passed, mut failed) = (0, 0);
    for round in 0..rounds {
        let history = make(&mut rng);
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
    (passed, failed)
}

#[test]
fn agrees_with_an_exhaustive_search_on_small_random_register_histories() {
    let (passed, failed) = compare_with_exhaustive_search(3_000, |rng| {
        (0..1 + rng.below(7) as usize)
            .map(|client| {
                let from = rng.below(50);
                let to = from + rng.below(30);
                let value = *rng.pick(&["a", "b", "c"]);
                match rng.below(10) {
                    0..=3 if rng.below(5) == 0 => set_unknown(client, value, from),
                    0..=3 => set(client, value, from, to),
                    4..=7 => get(client, (rng.below(4) != 0).then_some(value), from, to),
                    _ => del(client, rng.below(2), from, to),
                }
            })
            .collect()
    });
    // Both answers are exercised, not just one.
    assert!(
        passed > 300 && failed > 300,
        "passed {passed}, failed {failed}"
    );
}

#[test]
fn agrees_with_an_exhaustive_search_on_small_random_histories_of_every_command() {
    // Two keys, any command on either (INCR on a text fails), values that
    // are texts and integers alike, transactions across both keys; real
    // histories, then some answers lost or changed.
    let mut command = |rng: &mut Rng, _client: usize, _n: usize, _group: usize| {
        let key = rng.pick(&["x", "y"]).to_string();
        let value = rng.pick(&["a", "b", "1", "2"]).to_string();
        let kind = match rng.below(5) {
            0 => OpKind::Set(value),
            1 => OpKind::SetNx(value),
            2 => OpKind::Get,
            3 => OpKind::Del,
            _ => OpKind::Incr,
        };
        Command { key, kind }
    };
    let (passed, failed) = compare_with_exhaustive_search(2_000, |rng| {
        let clients = 1 + rng.below(6) as usize;
        let mut history = random_history(rng, clients, 1, 3, &mut command);
        for op in history.iter_mut() {
            match rng.below(8) {
                0 => {
                    op.result = Outcome::Unknown;
                    op.completed = None;
                }
                1 | 2 => {
                    if let Outcome::Answered(answers) = &mut op.result {
                        let j = rng.below(answers.len() as u64) as usize;
                        answers[j] = match (&op.commands[j].kind, &answers[j]) {
                            (OpKind::SetNx(_), Answer::Ok) => Answer::NotSet,
                            (OpKind::SetNx(_), Answer::NotSet) => Answer::Ok,
                            (_, Answer::Value(_)) => Answer::Value(
                                rng.pick(&[None, Some("a"), Some("1")]).map(str::to_string),
                            ),
                            (_, Answer::Deleted(n)) => Answer::Deleted(1 - n),
                            (_, Answer::Int(n)) => Answer::Int(n + 1),
                            (_, same) => same.clone(),
                        };
                    }
                }
                _ => {}
            }
        }
        history
    });
    assert!(
        passed > 200 && failed > 200,
        "passed {passed}, failed {failed}"
    );
}
