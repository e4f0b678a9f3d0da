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
use crate::kv::{self, Reply, Request, Status};
use crate::membership::MembershipChange;
use crate::node::Node;
use crate::store::StateChecksum;

/// One line the person typed, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
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
                return Err(format!("put needs a value after the key: put {key} VALUE"));
            }
            check_key(key)?;
            if value.len() > MAX_VALUE_LEN {
                return Err(format!(
                    "the value is {} bytes; values are at most {MAX_VALUE_LEN} bytes",
                    value.len()
                ));
            }
            PromptCommand::Kv(Request::Put(
                key.as_bytes().to_vec(),
                value.as_bytes().to_vec(),
            ))
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
            let key = key.as_bytes().to_vec();
            PromptCommand::Kv(if verb == "get" {
                Request::Get(key)
            } else {
                Request::Delete(vec![key])
            })
        }
        "add-replica" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [id, addr] = words[..] else {
                return Err(
                    "add-replica needs an id and an address: add-replica ID HOST:PORT".into(),
                );
            };
            let id = replica_id(id, "add-replica")?;
            if addr
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .is_none()
            {
                return Err(format!("'{addr}' is not HOST:PORT"));
            }
            PromptCommand::Membership(MembershipChange::Add {
                id,
                addr: addr.to_string(),
            })
        }
        "remove-replica" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let [id] = words[..] else {
                return Err("remove-replica needs one id: remove-replica ID".into());
            };
            PromptCommand::Membership(MembershipChange::Remove {
                id: replica_id(id, "remove-replica")?,
            })
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

fn replica_id(word: &str, verb: &str) -> Result<u64, String> {
    word.parse()
        .map_err(|_| format!("{verb}: '{word}' is not a replica id (a whole number)"))
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
         snapshots_installed={}",
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
    )
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
            Reply::Value(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
            Reply::Value(None) => "(nil)".to_string(),
            // put and delete of one key answer OK, whether or not it existed.
            Reply::Done | Reply::Count(_) | Reply::Values(_) => "OK".to_string(),
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
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if !handle_line(runtime, node, &line, false, &mut stdout.lock()) {
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

    fn put(key: &str, value: &str) -> PromptCommand {
        PromptCommand::Kv(Request::Put(key.into(), value.into()))
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
            Some(PromptCommand::Kv(Request::Get(b"a".to_vec())))
        );
        assert_eq!(
            parse_line("DELETE a").unwrap(),
            Some(PromptCommand::Kv(Request::Delete(vec![b"a".to_vec()])))
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
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(says), "{line:?} gave {err:?}");
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
                    let key = match &request {
                        Request::Put(key, _) | Request::Get(key) => key,
                        Request::Delete(keys) => &keys[0],
                        other => panic!("the prompt made {other:?}"),
                    };
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
}
