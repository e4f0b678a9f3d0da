//! The prompt: what a person types, and what they see.
//!
//! Parsing is a pure function ([`parse_line`]) so every rule about input is
//! unit-tested; the loop only reads lines, runs them through the request path
//! in `kv.rs`, and prints one answer per command.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use rustyline::error::ReadlineError;
use tokio::runtime::Runtime;

use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::kv::{self, Request, Status};
use crate::machine::Reply;
use crate::membership::MembershipChange;
use crate::node::Node;
use crate::store::StateChecksum;

/// One line the person typed, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptCommand {
    /// put, get and delete: the same requests the client port makes.
    Kv(Request),
    /// add-replica and remove-replica.
    Membership(MembershipChange),
    Status,
    Checksum,
    Help,
    Exit,
}

const COMMAND_LIST: &str =
    "put, get, delete, status, checksum, add-replica, remove-replica, help or exit";

const HELP_LINES: [&str; 9] = [
    "put KEY VALUE   store VALUE (the rest of the line) under KEY; prints OK once committed",
    "get KEY         print the value under KEY, or (nil); linearizable from any replica",
    "delete KEY      remove KEY; prints OK",
    "status          this replica's role, leader, term, log indexes and members",
    "checksum        a digest of this replica's whole state and the applied index it is at",
    "add-replica ID HOST:PORT   make replica ID (started with --join) a member; waits for it to catch up",
    "remove-replica ID          take replica ID out of the members",
    "help            this list",
    "exit            leave (Ctrl-D too)",
];

/// Understands one line. `Ok(None)` for a blank line; `Err` says what was wrong
/// and what is expected, in words for the person at the prompt.
pub fn parse_line(line: &str) -> Result<Option<PromptCommand>, String> {
    let line = line.trim();
    let Some(word) = line.split_whitespace().next() else {
        return Ok(None);
    };
    let rest = line[word.len()..].trim_start();
    let name = word.to_ascii_lowercase();
    let command = match name.as_str() {
        "put" | "set" => {
            let Some(key) = rest.split_whitespace().next() else {
                return Err("put needs a key and a value: put KEY VALUE".into());
            };
            let value = rest[key.len()..].trim();
            if value.is_empty() {
                let shown: String = key.chars().take(40).collect();
                return Err(format!(
                    "put needs a value after the key: put {shown} VALUE"
                ));
            }
            check_key(key)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "the value is {} bytes; values are at most {MAX_VALUE_LEN} bytes",
                    value.len()
                ));
            }
            PromptCommand::Kv(keyspace_request(&["SET", key, value])?)
        }
        "get" | "delete" | "del" => {
            let mut words = rest.split_whitespace();
            let verb = if name == "get" { "get" } else { "delete" };
            let Some(key) = words.next() else {
                return Err(format!("{verb} needs a key: {verb} KEY"));
            };
            if words.next().is_some() {
                return Err(format!(
                    "{verb} takes exactly one key (keys have no spaces): {verb} KEY"
                ));
            }
            check_key(key)?;
            PromptCommand::Kv(keyspace_request(&[
                if verb == "get" { "GET" } else { "DEL" },
                key,
            ])?)
        }
        "add-replica" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [id, addr] = words[..] else {
                return Err(
                    "add-replica needs an id and an address: add-replica ID HOST:PORT".into(),
                );
            };
            PromptCommand::Membership(
                MembershipChange::parse_add(id, addr).map_err(|e| format!("add-replica: {e}"))?,
            )
        }
        "remove-replica" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [id] = words[..] else {
                return Err("remove-replica needs one id: remove-replica ID".into());
            };
            PromptCommand::Membership(
                MembershipChange::parse_remove(id).map_err(|e| format!("remove-replica: {e}"))?,
            )
        }
        "status" | "checksum" | "help" | "exit" | "quit" => {
            if !rest.is_empty() {
                return Err(format!("{name} takes no arguments"));
            }
            match name.as_str() {
                "status" => PromptCommand::Status,
                "checksum" => PromptCommand::Checksum,
                "help" => PromptCommand::Help,
                _ => PromptCommand::Exit,
            }
        }
        _ => {
            let shown: String = word.chars().take(40).collect();
            return Err(format!(
                "unknown command '{shown}'; expected {COMMAND_LIST} (type help)"
            ));
        }
    };
    Ok(Some(command))
}

/// The request the client port would make of these words (database 0).
fn keyspace_request(words: &[&str]) -> Result<Request, String> {
    match Request::parse(0, words) {
        Some(Ok(request)) => Ok(request),
        Some(Err(e)) => Err(e.strip_prefix("ERR ").unwrap_or(&e).to_string()),
        None => Err(format!("'{}' is not a keyspace command", words[0])),
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} bytes; keys are at most {MAX_KEY_LEN} bytes",
            key.len()
        ));
    }
    Ok(())
}

/// The one line `status` prints: `key=value` pairs a script can split.
pub fn format_status(status: &Status) -> String {
    let ids = |ids: &[u64]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    format!(
        "role={} leader={} term={} last_log_index={} committed={} applied={} members={} learners={} \
         recovered_at={} replayed={} first_log_index={} snapshot_index={} snapshot_bytes={} \
         snapshots_installed={} replication={}",
        status.role,
        status.leader.map_or("none".to_string(), |id| id.to_string()),
        status.term,
        status.last_log_index,
        status.committed,
        status.applied,
        ids(&status.voters),
        ids(&status.learners),
        status.recovered_at,
        status.replayed,
        status.first_log_index,
        status.snapshot_index.map_or("none".to_string(), |i| i.to_string()),
        status.snapshot_bytes,
        status.snapshots_installed,
        replication(status),
    )
}

/// At the leader, `ID:INDEX` for each member: the last log index it is known
/// to hold (`none` until it answers), so a lagging or new replica shows. Only
/// the leader tracks this; elsewhere the field says `none`.
fn replication(status: &Status) -> String {
    if status.role != "leader" {
        return "none".into();
    }
    let progress: Vec<String> = status
        .members
        .iter()
        .map(|member| {
            let matched = member.matched.map_or("none".into(), |i| i.to_string());
            format!("{}:{matched}", member.id)
        })
        .collect();
    progress.join(",")
}

/// The one line `checksum` prints (at the prompt and on the client port).
pub fn format_checksum(sum: &StateChecksum) -> String {
    format!(
        "applied={} keys={} digest={:032x}",
        sum.applied_index, sum.keys, sum.digest
    )
}

/// Runs one command and returns the lines to print.
async fn execute(node: &Node, command: PromptCommand, on_terminal: bool) -> Vec<String> {
    let answer = match command {
        PromptCommand::Kv(request) => node.execute_one(request).await.map(|reply| match reply {
            Reply::Bulk(value) => String::from_utf8_lossy(&value).into_owned(),
            Reply::Nil => "(nil)".to_string(),
            Reply::Error(e) => format!("(error) {e}"),
            // put and delete of one key answer OK, whether or not it existed.
            _ => "OK".to_string(),
        }),
        PromptCommand::Membership(change) => node.change_membership(change).await.map(|voters| {
            let ids: Vec<String> = voters.iter().map(u64::to_string).collect();
            format!("OK members={}", ids.join(","))
        }),
        PromptCommand::Status => Ok(format_status(&node.status())),
        PromptCommand::Checksum => node
            .reader
            .checksum()
            .await
            .map_err(kv::KvError::Storage)
            .map(|sum| format_checksum(&sum)),
        PromptCommand::Help if on_terminal => {
            return HELP_LINES.iter().map(|l| l.to_string()).collect()
        }
        PromptCommand::Help => Ok(format!(
            "commands: {}",
            HELP_LINES
                .map(|l| l.split("  ").next().unwrap_or(l))
                .join(" | ")
        )),
        PromptCommand::Exit => return Vec::new(),
    };
    vec![answer.unwrap_or_else(|e| format!("(error) {e}"))]
}

/// Handles one input line; returns false when the person asked to leave.
fn handle_line(
    runtime: &Runtime,
    node: &Node,
    line: &str,
    on_terminal: bool,
    out: &mut impl Write,
) -> bool {
    let lines = match parse_line(line) {
        Ok(None) => return true,
        Ok(Some(PromptCommand::Exit)) => return false,
        Ok(Some(command)) => {
            let node = node.clone();
            // Run on the runtime's workers: storage calls expect to be there.
            let task = runtime.spawn(async move { execute(&node, command, on_terminal).await });
            runtime.block_on(task).unwrap_or_else(|e| {
                vec![format!(
                    "(error) the command failed inside the replica: {e}"
                )]
            })
        }
        Err(why) => vec![format!("(error) {why}")],
    };
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    true
}

/// Reads commands until `exit` or end of input.
pub fn run(runtime: &Runtime, node: &Node, replica_dir: &Path) {
    if std::io::stdin().is_terminal() {
        run_interactive(runtime, node, replica_dir);
    } else {
        let stdout = std::io::stdout();
        // Lines as bytes: one line that is not UTF-8 is refused on its own
        // rather than ending the input (`lines()` would stop there).
        for line in std::io::stdin().lock().split(b'\n') {
            let Ok(line) = line else { break };
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let Ok(line) = std::str::from_utf8(line) else {
                let _ = writeln!(stdout.lock(), "(error) the line is not UTF-8 text; ignored");
                continue;
            };
            if !handle_line(runtime, node, line, false, &mut stdout.lock()) {
                break;
            }
        }
    }
}

fn run_interactive(runtime: &Runtime, node: &Node, replica_dir: &Path) {
    let history = replica_dir.join("history.txt");
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            return;
        }
    };
    let _ = editor.load_history(&history);
    println!(
        "replica {} of example-ondisk; type help for the commands",
        node.id
    );
    let prompt = format!("replica-{}> ", node.id);
    loop {
        match editor.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    let _ = editor.save_history(&history);
                }
                if !handle_line(runtime, node, &line, true, &mut std::io::stdout()) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => println!("(type exit or press Ctrl-D to leave)"),
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("error: reading the prompt failed: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words a prompt request carries to the log.
    fn words_of(request: &Request) -> Vec<Vec<u8>> {
        match request {
            Request::Run { queued, .. } => queued.args.iter().map(|a| a.0.clone()).collect(),
            other => panic!("the prompt made {other:?}"),
        }
    }

    fn put(key: &str, value: &str) -> PromptCommand {
        PromptCommand::Kv(keyspace_request(&["SET", key, value]).unwrap())
    }

    #[test]
    fn put_keeps_inner_spaces_of_the_value() {
        assert_eq!(
            parse_line("put k hello   big world  ").unwrap(),
            Some(put("k", "hello   big world"))
        );
        assert_eq!(parse_line("  PUT\tk v").unwrap(), Some(put("k", "v")));
    }

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(
            parse_line("GeT a").unwrap(),
            Some(PromptCommand::Kv(keyspace_request(&["GET", "a"]).unwrap()))
        );
        assert_eq!(
            parse_line("DELETE a").unwrap(),
            Some(PromptCommand::Kv(keyspace_request(&["DEL", "a"]).unwrap()))
        );
        assert_eq!(parse_line("Status").unwrap(), Some(PromptCommand::Status));
    }

    #[test]
    fn blank_lines_are_nothing() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   \t ").unwrap(), None);
    }

    #[test]
    fn bad_lines_say_what_is_expected() {
        for (line, says) in [
            ("frobnicate x", "unknown command 'frobnicate'"),
            ("put", "put KEY VALUE"),
            ("put k", "needs a value"),
            ("put k    ", "needs a value"),
            ("get", "get KEY"),
            ("get a b", "exactly one key"),
            ("delete", "delete KEY"),
            ("delete a b", "exactly one key"),
            ("status now", "takes no arguments"),
            ("exit please", "takes no arguments"),
            ("add-replica", "add-replica ID HOST:PORT"),
            ("add-replica 4", "add-replica ID HOST:PORT"),
            ("add-replica four 127.0.0.1:1", "not a replica id"),
            ("add-replica 4 127.0.0.1", "not HOST:PORT"),
            ("add-replica 4 127.0.0.1:99999", "not HOST:PORT"),
            ("remove-replica", "remove-replica ID"),
            ("remove-replica 1 2", "remove-replica ID"),
            ("remove-replica -1", "not a replica id"),
            ("remove-replica 0", "ids start at 1"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(says), "{line:?} gave {err:?}");
        }
    }

    #[test]
    fn errors_quote_at_most_a_little_of_the_input() {
        let huge = "x".repeat(1 << 20);
        for line in [
            format!("put {huge}"),
            format!("add-replica {huge} h:1"),
            format!("add-replica 4 {huge}"),
            format!("remove-replica {huge}"),
            format!("{huge} a b"),
        ] {
            let err = parse_line(&line).unwrap_err();
            assert!(err.len() < 300, "an error of {} bytes", err.len());
        }
    }

    #[test]
    fn size_limits_are_enforced() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        assert!(parse_line(&format!("get {long_key}"))
            .unwrap_err()
            .contains("at most 1024"));
        assert!(parse_line(&format!("put {} v", "k".repeat(MAX_KEY_LEN))).is_ok());
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        assert!(parse_line(&format!("put k {long_value}"))
            .unwrap_err()
            .contains("values are at most"));
    }

    #[test]
    fn any_line_gets_a_command_or_a_one_line_error() {
        let fragments: &[&[u8]] = &[
            b"put",
            b"get",
            b"delete",
            b"status",
            b"help",
            b"exit",
            b"PUT",
            b" ",
            b"\t",
            b"k",
            b"value",
            "ключ".as_bytes(),
            "🔑".as_bytes(),
            b"\x00",
            b"\r",
            b"\xc3",
        ];
        let mut rng = crate::fuzz::Rng(0xabad_1dea_5eed_0001);
        for _ in 0..20_000 {
            let bytes = rng.bytes_from(fragments, 12);
            let line = String::from_utf8_lossy(&bytes).replace('\n', " ");
            match parse_line(&line) {
                Err(message) => assert!(!message.contains('\n'), "{line:?} -> {message:?}"),
                Ok(Some(PromptCommand::Kv(request))) => {
                    let words = words_of(&request);
                    let key = &words[1];
                    assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN, "{line:?}");
                    assert!(
                        !String::from_utf8_lossy(key).contains(char::is_whitespace),
                        "{line:?}"
                    );
                }
                Ok(_) => {}
            }
        }
    }

    #[test]
    fn odd_unicode_never_panics() {
        for line in [
            "ｐｕｔ k v",
            "put ключ значение",
            "get 🔑",
            "\u{0}",
            "put \u{2003}k v",
            "ß",
        ] {
            let _ = parse_line(line);
        }
        assert_eq!(
            parse_line("put ключ значение  x").unwrap(),
            Some(put("ключ", "значение  x"))
        );
    }

    /// Property tests (proptest): any line at all, and lines built to be
    /// accepted.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config(cases: u32) -> ProptestConfig {
            crate::fuzz::proptest_config(cases, 0x5e5b_0003)
        }

        /// Characters that end a line on some screen or in some reader.
        const LINE_BREAKS: &[char] = &[
            '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}',
        ];

        /// Unicode whitespace of every kind, and look-alikes that are not.
        const BLANKS: &[&str] = &[
            " ", "  ", "\t", "\r", "\n", "\u{b}", "\u{c}", "\u{85}", "\u{a0}", "\u{1680}",
            "\u{2003}", "\u{2028}", "\u{2029}", "\u{202f}", "\u{3000}",
            // Not whitespace to Rust:
            "\u{200b}", "\u{feff}", "\u{1c}",
        ];

        const FRAGMENTS: &[&str] = &[
            "put",
            "set",
            "get",
            "delete",
            "del",
            "status",
            "checksum",
            "help",
            "exit",
            "quit",
            "add-replica",
            "remove-replica",
            "PUT",
            "GeT",
            "ｐｕｔ",
            "k",
            "value",
            "ключ",
            "🔑",
            "ß",
            "İ",
            "e\u{301}",
            "\0",
            "\u{1b}[2J",
            "\u{7f}",
            "4",
            "0",
            "-1",
            "18446744073709551616",
            "127.0.0.1:1",
            "h:65536",
            ":",
            "[::1]:80",
        ];

        /// Text of exactly `bytes` bytes made of `unit`, padded with `k`, so
        /// a multi-byte character may straddle a limit.
        fn sized(unit: &str, bytes: usize) -> String {
            let mut text = unit.repeat(bytes / unit.len());
            while text.len() < bytes {
                text.push('k');
            }
            text
        }

        /// A key or value near its size limit (mostly a key: they are cheaper).
        fn long_word() -> impl Strategy<Value = String> {
            let unit = prop::sample::select(&["k", "é", "🔑"][..]);
            let bytes = prop_oneof![
                3 => MAX_KEY_LEN - 1..=MAX_KEY_LEN + 1,
                1 => MAX_VALUE_LEN - 1..=MAX_VALUE_LEN + 1,
            ];
            (unit, bytes).prop_map(|(unit, bytes)| sized(unit, bytes))
        }

        /// Any line: pieces of commands, blanks of every kind, any characters
        /// (controls included), now and then a very long word.
        fn any_line() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                3 => prop::sample::select(FRAGMENTS).prop_map(String::from),
                3 => prop::sample::select(BLANKS).prop_map(String::from),
                2 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
            ];
            let parts = prop::collection::vec(part, 0..12).prop_map(|parts| parts.concat());
            prop_oneof![
                8 => parts.clone(),
                3 => prop::collection::vec(any::<char>(), 0..200).prop_map(String::from_iter),
                1 => (parts.clone(), long_word(), parts)
                    .prop_map(|(before, long, after)| before + &long + &after),
            ]
        }

        fn blank() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::sample::select(BLANKS).prop_filter("whitespace", |b| b.trim().is_empty()),
                1..3,
            )
            .prop_map(|blanks| blanks.concat())
        }

        /// A key as a person may type it: no whitespace, any characters, or
        /// near the size limit.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => prop::collection::vec(
                    any::<char>().prop_filter("not whitespace", |c| !c.is_whitespace()),
                    1..16,
                )
                .prop_map(String::from_iter),
                1 => (prop::sample::select(&["k", "é", "🔑"][..]), MAX_KEY_LEN - 1..=MAX_KEY_LEN + 1)
                    .prop_map(|(unit, bytes)| sized(unit, bytes)),
            ]
        }

        /// A value: any characters (inner whitespace too), or near the limit.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
                1 => (prop::sample::select(&["v", "é", "🔑"][..]), MAX_VALUE_LEN - 1..=MAX_VALUE_LEN + 1)
                    .prop_map(|(unit, bytes)| sized(unit, bytes)),
            ]
        }

        /// A command name in any letter case.
        fn spelled(names: &'static [&'static str]) -> impl Strategy<Value = String> {
            (prop::sample::select(names), any::<u64>()).prop_map(|(name, case)| {
                name.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if (case >> (i % 64)) & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(config(1000))]

            /// Any line: never a panic; a blank line is nothing; an error is
            /// one line; an accepted put, get or delete has one key that is not
            /// empty, has no whitespace, was typed in the line, and is within
            /// the limits, and a put's value was typed too and is within them.
            #[test]
            fn prop_any_line_is_a_command_or_a_one_line_error(line in any_line()) {
                match parse_line(&line) {
                    Ok(None) => prop_assert!(line.trim().is_empty()),
                    Err(message) => {
                        prop_assert!(!message.is_empty());
                        prop_assert!(!message.contains(LINE_BREAKS), "{:?} -> {:?}", line, message);
                    }
                    Ok(Some(PromptCommand::Kv(request))) => {
                        let words = words_of(&request);
                        if !matches!(&words[..], [name, _] | [name, _, _] if [&b"SET"[..], b"GET", b"DEL"].contains(&&name[..])) {
                            return Err(TestCaseError::fail(format!("the prompt made {request:?}")));
                        }
                        let (key, value) = (&words[1], words.get(2));
                        let key = std::str::from_utf8(key).expect("keys come from a str");
                        prop_assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
                        prop_assert!(!key.contains(char::is_whitespace), "{:?}", key);
                        prop_assert!(line.contains(key));
                        if let Some(value) = value {
                            let value = std::str::from_utf8(value).expect("values come from a str");
                            prop_assert!(!value.is_empty() && value.len() <= MAX_VALUE_LEN);
                            prop_assert_eq!(value, value.trim());
                            prop_assert!(line.contains(value));
                        }
                    }
                    Ok(Some(PromptCommand::Membership(MembershipChange::Add { addr, .. }))) => {
                        prop_assert!(!addr.is_empty() && !addr.contains(char::is_whitespace));
                    }
                    Ok(Some(_)) => {}
                }
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// `put KEY VALUE`, `get KEY` and `delete KEY`, spelled in any case
            /// with any blanks around the words: accepted exactly when the key
            /// and value are within the limits, as exactly those bytes (the
            /// value without its surrounding blanks).
            #[test]
            fn prop_well_formed_lines_are_understood_exactly(
                put in spelled(&["put", "set"]),
                read in spelled(&["get", "delete", "del"]),
                key in key(),
                value in value(),
                blanks in prop::collection::vec(prop::option::of(blank()), 4),
            ) {
                let [before, between, after, trailing] = [0, 1, 2, 3].map(|i| blanks[i].clone());
                let between = between.unwrap_or_else(|| " ".into());
                let line = format!(
                    "{}{put}{between}{key}{}{value}{}",
                    before.clone().unwrap_or_default(),
                    after.clone().unwrap_or_else(|| " ".into()),
                    trailing.clone().unwrap_or_default(),
                );
                let key_fits = key.len() <= MAX_KEY_LEN;
                let trimmed = value.trim();
                let parsed = parse_line(&line);
                if trimmed.is_empty() {
                    prop_assert!(parsed.unwrap_err().contains("needs a value"));
                } else if key_fits && trimmed.len() <= MAX_VALUE_LEN {
                    prop_assert_eq!(
                        parsed,
                        Ok(Some(PromptCommand::Kv(keyspace_request(&["SET", &key, trimmed]).unwrap())))
                    );
                } else {
                    prop_assert!(parsed.unwrap_err().contains("at most"));
                }

                let line = format!(
                    "{}{read}{between}{key}{}",
                    before.unwrap_or_default(),
                    trailing.unwrap_or_default()
                );
                let parsed = parse_line(&line);
                if key_fits {
                    let name = if read.eq_ignore_ascii_case("get") { "GET" } else { "DEL" };
                    let expected = keyspace_request(&[name, &key]).unwrap();
                    prop_assert_eq!(parsed, Ok(Some(PromptCommand::Kv(expected))));
                } else {
                    prop_assert!(parsed.unwrap_err().contains("at most"));
                }
            }
        }
    }
}
