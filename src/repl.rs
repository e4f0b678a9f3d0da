//! The prompt: what a person types, and what they see.
//!
//! Two kinds of line, told apart by their first word:
//!
//! - The prompt's own commands (`put`, `get`, `delete`, `status`, `checksum`,
//!   `add-replica`, `remove-replica`, `help`, `exit`) read their words as typed
//!   and answer as they always have: `put KEY VALUE` takes the rest of the line
//!   as the value, `get` prints the value itself.
//! - Every other command the client port serves (`set`, `incr`, `scan`,
//!   `multi`/`exec`, `select`, `ping`, `info`, `config`, `shutdown`, ...)
//!   reads its words as redis-cli does ([`split_words`]: `"a key"`,
//!   `'it\'s'`, `\n`, `\xff`) and is answered as redis-cli prints the reply
//!   ([`reply_lines`]).
//!
//! Parsing is a pure function ([`parse_line`]) so every rule about input is
//! unit-tested; the loop only reads lines, runs them through the prompt's own
//! [`Session`] (the same session a client of the port has: its database, its
//! transaction, its WATCHed keys), and prints the answer: one line per
//! command, except an array (or INFO's text) on a terminal, which is one
//! line per element as in redis-cli.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use rustyline::error::ReadlineError;
use tokio::runtime::Runtime;

use bytes::Bytes;

use crate::kv::{self, Kv, Role, Status};
use crate::machine::parse::shown;
use crate::membership::MembershipChange;
use crate::session::{commands, format_checksum, Frame, Session, Shared};
use crate::types::NodeId;

/// One line the person typed, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptCommand {
    /// put, get and delete, as the words of the request the client port
    /// would get (`SET k v`, `GET k`, `DEL k`), answered in the prompt's own
    /// words (`get` prints the bare value, `put` and `delete` print OK).
    Kv(Vec<Bytes>),
    /// Any other command the port serves, as its words, checked; answered
    /// as redis-cli prints the reply.
    Redis(Vec<Bytes>),
    /// add-replica, remove-replica and transfer-leader.
    Membership(MembershipChange),
    Status,
    Checksum,
    Help,
    Exit,
}

const COMMAND_LIST: &str =
    "put, get, delete, status, checksum, add-replica, remove-replica, transfer-leader, \
     help, exit, or a Redis command (set, incr, expire, scan, eval, multi, select, info, ...)";

const HELP_LINES: [&str; 14] = [
    "put KEY VALUE   store VALUE (the rest of the line) under KEY; prints OK once committed",
    "get KEY         print the value under KEY, or (nil); linearizable from any replica",
    "delete KEY      remove KEY; prints OK",
    "status          this replica's role, leader, term, log indexes and members",
    "checksum        a digest of this replica's whole state and the applied index it is at",
    "add-replica ID HOST:PORT   make replica ID (started with --join) a member; waits for it to catch up",
    "remove-replica ID          take replica ID out of the members",
    "transfer-leader ID         hand leadership to replica ID (a voter) and wait until it leads",
    "set KEY VALUE [EX s] [NX] ...   Redis's SET; quote words as in redis-cli: \"a key\" 'it\\'s' \"\\xff\"",
    "incr, expire, ttl, mget, scan, ...   the other Redis string commands, answered as redis-cli prints",
    "eval SCRIPT NUMKEYS KEY... ARG...   a Lua script, as Redis runs it (evalsha, script load|exists|flush too)",
    "multi, exec, watch, select N, ping, info, config, save, shutdown, ...   as on the client port",
    "help            this list",
    "exit            leave (Ctrl-D too)",
];

/// Understands one line. `Ok(None)` for a blank line; `Err` says what was wrong
/// and what is expected, in words for the person at the prompt.
pub fn parse_line(line: &str) -> Result<Option<PromptCommand>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let word = &line[..word_end(line, false)];
    let rest = line[word.len()..].trim_start();
    let name = word.to_ascii_lowercase();
    let command = match name.as_str() {
        "put" => parse_put(rest)?,
        "get" | "delete" | "del" => parse_get_or_delete(&name, rest)?,
        "add-replica" | "remove-replica" | "transfer-leader" => parse_membership(&name, rest)?,
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
        _ => parse_redis(line)?,
    };
    Ok(Some(command))
}

/// `add-replica ID HOST:PORT`, `remove-replica ID` and `transfer-leader ID`.
fn parse_membership(name: &str, rest: &str) -> Result<PromptCommand, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let change = match (name, &words[..]) {
        ("add-replica", [id, addr]) => MembershipChange::parse_add(id, addr),
        ("add-replica", _) => {
            return Err("add-replica needs an id and an address: add-replica ID HOST:PORT".into())
        }
        ("remove-replica", [id]) => MembershipChange::parse_remove(id),
        ("remove-replica", _) => {
            return Err("remove-replica needs one id: remove-replica ID".into())
        }
        (_, [id]) => MembershipChange::parse_transfer(id),
        _ => return Err("transfer-leader needs one id: transfer-leader ID".into()),
    };
    change
        .map(PromptCommand::Membership)
        .map_err(|e| format!("{name}: {e}"))
}

/// `put KEY VALUE`: KEY is the first word as typed, VALUE the rest of the
/// line as typed (inner blanks kept, no quoting).
fn parse_put(rest: &str) -> Result<PromptCommand, String> {
    let Some(key) = rest.split_whitespace().next() else {
        return Err("put needs a key and a value: put KEY VALUE".into());
    };
    let value = rest[key.len()..].trim();
    if value.is_empty() {
        return Err(format!(
            "put needs a value after the key: put {} VALUE",
            shown(key.as_bytes())
        ));
    }
    // The key's and the value's sizes are checked where the client port's
    // are (`machine::parse`), with the same words.
    Ok(PromptCommand::Kv(keyspace_request(&["SET", key, value])?))
}

/// `get KEY` and `delete KEY` (`del KEY`): one key, as typed. A line that
/// would otherwise be refused for having several words is read as redis-cli
/// reads it, so a key with spaces can be quoted (`get "a key"`); a one-word key
/// is taken as typed, quotes and all, as it always was.
fn parse_get_or_delete(name: &str, rest: &str) -> Result<PromptCommand, String> {
    let verb = if name == "get" { "get" } else { "delete" };
    let mut typed = rest.split_whitespace();
    let key = match (typed.next(), typed.next()) {
        (None, _) => return Err(format!("{verb} needs a key: {verb} KEY")),
        (Some(key), None) => key.as_bytes().to_vec(),
        _ => match split_words(rest).map_err(|e| e.to_string())?.as_mut_slice() {
            [key] => std::mem::take(key),
            _ => {
                return Err(format!(
                "{verb} takes exactly one key: {verb} KEY, or {verb} \"A KEY\" for one with spaces"
            ))
            }
        },
    };
    let command: &[u8] = if verb == "get" { b"GET" } else { b"DEL" };
    Ok(PromptCommand::Kv(keyspace_request(&[command, &key])?))
}

/// Any other line: a command as redis-cli would send it.
fn parse_redis(line: &str) -> Result<PromptCommand, String> {
    // The name alone first: an unknown one is refused without reading the
    // rest of the line, which may be a pasted 8 MiB value.
    let (name, _) = next_word(line).map_err(|e| e.to_string())?;
    let known = commands::COMMAND_NAMES
        .iter()
        .any(|known| known.as_bytes().eq_ignore_ascii_case(&name));
    if !known {
        return Err(format!(
            "unknown command '{}'; expected {COMMAND_LIST} (type help)",
            shown(&name)
        ));
    }
    let words: Vec<Bytes> = split_words(line)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(Bytes::from)
        .collect();
    // Checked here with the port's own parser, so a mistake is told at once;
    // the session reads the words again in its selected database.
    match commands::parse(&words, 0) {
        Ok(_) => Ok(PromptCommand::Redis(words)),
        // Redis's own error line (`ERR syntax error`), as redis-cli shows it.
        Err(e) => Err(one_line(&e)),
    }
}

/// The words of put, get or delete's request, checked as the client port
/// checks them.
fn keyspace_request(words: &[impl AsRef<[u8]>]) -> Result<Vec<Bytes>, String> {
    let words: Vec<Bytes> = words
        .iter()
        .map(|word| Bytes::copy_from_slice(word.as_ref()))
        .collect();
    match commands::parse(&words, 0) {
        Ok(commands::ClientCommand::Kv(_)) => Ok(words),
        Ok(_) => Err(format!(
            "'{}' is not a keyspace command",
            shown(words.first().map_or(&[][..], |w| w.as_ref()))
        )),
        Err(e) => Err(one_line(e.strip_prefix("ERR ").unwrap_or(&e))),
    }
}

/// `text` with every control character and every blank but the space made
/// `?`, so an answer is exactly one line whatever a word held.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || (c.is_whitespace() && c != ' ') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Words, as redis-cli reads them
// ---------------------------------------------------------------------------

/// Why a line could not be read as words. redis-cli answers both with
/// `Invalid argument(s)`; this says which rule was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("Invalid argument(s): a quote is opened and never closed")]
    UnclosedQuote,
    #[error(
        "Invalid argument(s): a closing quote must be followed by a space or the end of the line"
    )]
    TextAfterQuote,
}

/// Splits a line into words by redis-cli's rules (Redis's `sdssplitargs`):
///
/// - words are separated by blanks; outside quotes every other character,
///   backslash included, is part of the word;
/// - `"..."` may hold blanks and the escapes `\n \r \t \b \a`, `\xHH` (any
///   byte) and `\` before any other character for that character (`\"`, `\\`);
/// - `'...'` may hold blanks and knows one escape, `\'`;
/// - a quote may start mid-word (`a"b c"` is `ab c`), but a closing quote ends
///   the word: it must be followed by a blank or the end of the line;
/// - `""` is an empty word.
///
/// Two differences, both to agree with the rest of the prompt: a blank is any
/// Unicode whitespace (redis-cli knows only ASCII's), and a NUL is an ordinary
/// character (redis-cli's line cannot hold one). Words are bytes: `\xHH` need
/// not make UTF-8.
///
/// ```text
/// set "a key" 'it\'s' "\xe2\x82\xac" ex 10   ->   set | a key | it's | € | ex | 10
/// ```
pub fn split_words(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut words = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let (word, after) = next_word(rest)?;
        words.push(word);
        rest = after.trim_start();
    }
    Ok(words)
}

/// The word `text` starts with, and what follows it.
fn next_word(text: &str) -> Result<(Vec<u8>, &str), SplitError> {
    // Up to a blank or a quote, every character is the word's.
    let end = word_end(text, true);
    let mut word = text.as_bytes()[..end].to_vec();
    let rest = &text[end..];
    let rest = if let Some(inside) = rest.strip_prefix('"') {
        double_quoted(inside, &mut word)?
    } else if let Some(inside) = rest.strip_prefix('\'') {
        single_quoted(inside, &mut word)?
    } else {
        return Ok((word, rest));
    };
    // The closing quote ends the word.
    if rest.starts_with(|c: char| !c.is_whitespace()) {
        return Err(SplitError::TextAfterQuote);
    }
    Ok((word, rest))
}

/// Where the word that starts `text` ends: the index of the first blank (any
/// Unicode whitespace), or with `quotes` of the first `"` or `'` too;
/// `text.len()` if there is none.
///
/// It looks at bytes through a table and decodes a character only where a
/// non-ASCII blank could start: reading a pasted 8 MiB value this way takes
/// a fraction of the time `str::find` with a closure takes in a debug build,
/// where the unit tests read many.
fn word_end(text: &str, quotes: bool) -> usize {
    let stops = if quotes { &STOPS_AND_QUOTES } else { &STOPS };
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|&b| stops[b as usize]) {
        let at = from + offset;
        // A lead byte is never inside another character, so `at` is a boundary.
        if bytes[at] < 0x80 || text[at..].starts_with(char::is_whitespace) {
            return at;
        }
        from = at + 1;
    }
    text.len()
}

/// The bytes [`word_end`] stops at: ASCII blanks, and the first byte of every
/// non-ASCII character Rust counts as whitespace (U+0085 and U+00A0: 0xc2;
/// U+1680: 0xe1; U+2000-U+205F: 0xe2; U+3000: 0xe3). A unit test checks the
/// table against `char::is_whitespace` for every character.
const STOPS: [bool; 256] = stop_table(false);
const STOPS_AND_QUOTES: [bool; 256] = stop_table(true);

const fn stop_table(quotes: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let blanks: [u8; 10] = [
        b'\t', b'\n', 0x0b, 0x0c, b'\r', b' ', 0xc2, 0xe1, 0xe2, 0xe3,
    ];
    let mut i = 0;
    while i < blanks.len() {
        table[blanks[i] as usize] = true;
        i += 1;
    }
    table[b'"' as usize] = quotes;
    table[b'\'' as usize] = quotes;
    table
}

/// The index of the first `a` or `b` (ASCII bytes) in `text`.
fn position_of(text: &str, a: u8, b: u8) -> Option<usize> {
    text.as_bytes()
        .iter()
        .position(|&byte| byte == a || byte == b)
}

/// The inside of `"..."` onto `word`; returns what follows the closing quote.
fn double_quoted<'a>(inside: &'a str, word: &mut Vec<u8>) -> Result<&'a str, SplitError> {
    let mut rest = inside;
    loop {
        let at = position_of(rest, b'"', b'\\').ok_or(SplitError::UnclosedQuote)?;
        word.extend_from_slice(&rest.as_bytes()[..at]);
        let (special, after) = (rest.as_bytes()[at], &rest[at + 1..]);
        if special == b'"' {
            return Ok(after);
        }
        rest = match hex_escape(after) {
            Some((byte, after_hex)) => {
                word.push(byte);
                after_hex
            }
            None => {
                let mut chars = after.chars();
                match chars.next().ok_or(SplitError::UnclosedQuote)? {
                    'n' => word.push(b'\n'),
                    'r' => word.push(b'\r'),
                    't' => word.push(b'\t'),
                    'b' => word.push(0x08),
                    'a' => word.push(0x07),
                    other => word.extend_from_slice(other.encode_utf8(&mut [0; 4]).as_bytes()),
                }
                chars.as_str()
            }
        };
    }
}

/// After a backslash: `xHH` (two hex digits) is that byte; returns it and
/// what follows.
fn hex_escape(text: &str) -> Option<(u8, &str)> {
    match text.as_bytes() {
        [b'x', high, low, ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
            let byte = u8::from_str_radix(&text[1..3], 16).ok()?;
            // The three characters are ASCII, so index 3 is a character boundary.
            Some((byte, &text[3..]))
        }
        _ => None,
    }
}

/// The inside of `'...'` onto `word`; returns what follows the closing quote.
fn single_quoted<'a>(inside: &'a str, word: &mut Vec<u8>) -> Result<&'a str, SplitError> {
    let mut rest = inside;
    loop {
        let at = position_of(rest, b'\'', b'\\').ok_or(SplitError::UnclosedQuote)?;
        word.extend_from_slice(&rest.as_bytes()[..at]);
        let (special, after) = (rest.as_bytes()[at], &rest[at + 1..]);
        match (special, after.strip_prefix('\'')) {
            (b'\'', _) => return Ok(after),
            // `\'` is a quote; any other backslash is itself.
            (_, Some(after_quote)) => {
                word.push(b'\'');
                rest = after_quote;
            }
            (_, None) => {
                word.push(b'\\');
                rest = after;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Replies, as redis-cli prints them
// ---------------------------------------------------------------------------

/// A reply as redis-cli prints it on a terminal, one string per line:
/// `OK`, `(nil)`, `(integer) 5`, `"a value"` (quoted, see [`quoted`]),
/// `(error) ERR ...`, `(empty array)`, and an array as numbered lines, a
/// nested array indented under its number:
///
/// ```text
/// 1) "0"
/// 2) 1) "a key"
///    2) "hits"
/// ```
pub fn reply_lines(reply: &Frame) -> Vec<String> {
    // INFO's text is printed as it is, a line a line, as redis-cli does.
    if let Frame::Verbatim(text) = reply {
        return text.lines().map(one_line).collect();
    }
    let mut text = String::new();
    render_tty(reply, "", &mut text);
    text.lines().map(str::to_string).collect()
}

/// redis-cli's `cliFormatReplyTTY`: `reply` and a newline onto `out`; the
/// lines after the first of an array start with `indent`.
fn render_tty(reply: &Frame, indent: &str, out: &mut String) {
    let items = elements(reply);
    if items.is_empty() {
        out.push_str(&reply_line(reply));
        out.push('\n');
        return;
    }
    let width = items.len().to_string().len();
    let inner = format!("{indent}{}", " ".repeat(width + 2));
    for (i, item) in items.into_iter().enumerate() {
        // The first element follows the number its parent printed.
        if i > 0 {
            out.push_str(indent);
        }
        out.push_str(&format!("{:>width$}) ", i + 1));
        render_tty(item, &inner, out);
    }
}

/// A reply on one line, for when standard input is not a terminal and each
/// command gets exactly one line: as [`reply_lines`], with an array's elements
/// side by side and a nested array in brackets, `1) "0" 2) [1) "a key" 2) "hits"]`.
/// Strings are quoted, so a bracket inside one is never taken for structure.
pub fn reply_line(reply: &Frame) -> String {
    match reply {
        Frame::Simple(text) => one_line(text),
        Frame::Status(text) => one_line(text),
        // redis-cli shows a null array (EXEC after a WATCHed change) as nil too.
        Frame::Null | Frame::NullArray | Frame::Bulk(None) => "(nil)".into(),
        Frame::Integer(n) => format!("(integer) {n}"),
        Frame::Bulk(Some(bytes)) => quoted(bytes),
        // INFO's text, quoted as a string so it stays on one line.
        Frame::Verbatim(text) => quoted(text.as_bytes()),
        Frame::Error(e) => format!("(error) {}", one_line(e)),
        Frame::Array(_) | Frame::Map(_) => {
            let items = elements(reply);
            if items.is_empty() {
                return "(empty array)".into();
            }
            let numbered: Vec<String> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let text = reply_line(item);
                    if elements(item).is_empty() {
                        format!("{}) {text}", i + 1)
                    } else {
                        format!("{}) [{text}]", i + 1)
                    }
                })
                .collect();
            numbered.join(" ")
        }
    }
}

/// The elements of an array reply (none for any other reply). A map's are
/// key, value, key, value: the flat array RESP2 sends it as, which is how
/// redis-cli (RESP2 unless started with -3) shows it.
fn elements(reply: &Frame) -> Vec<&Frame> {
    match reply {
        Frame::Array(items) => items.iter().collect(),
        Frame::Map(pairs) => pairs.iter().flat_map(|(key, value)| [key, value]).collect(),
        _ => Vec::new(),
    }
}

/// A string as redis-cli shows it (Redis's `sdscatrepr`): in double quotes,
/// `"` and `\` escaped, `\n \r \t \a \b` for those controls, and every other
/// byte outside printable ASCII as `\xHH` (UTF-8 text too, as redis-cli does;
/// `get` prints a value as it is). [`split_words`] reads it back as the same
/// bytes.
pub fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b' '..=b'~' => out.push(byte as char),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out.push('"');
    out
}

/// The one line `status` prints: `key=value` pairs a script can split.
pub fn format_status(status: &Status) -> String {
    let pairs: Vec<String> = status
        .fields()
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join(" ")
}

/// `status` for a person at a terminal: one field a line, values aligned.
fn status_lines(status: &Status) -> Vec<String> {
    let fields = status.fields();
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    fields
        .into_iter()
        .map(|(name, value)| format!("{name:width$}  {value}"))
        .collect()
}

/// Runs `adding` (an add-replica) while a line on the terminal says how far
/// the newcomer has caught up, renewed twice a second and cleared at the end:
/// adding waits until the new replica holds the whole log, which for a large
/// state takes a while.
async fn with_catch_up_progress<T>(
    kv: &Kv,
    newcomer: NodeId,
    adding: impl std::future::Future<Output = T>,
) -> T {
    let started = std::time::Instant::now();
    let mut adding = std::pin::pin!(adding);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
    ticks.tick().await;
    loop {
        tokio::select! {
            outcome = &mut adding => {
                eprint!("\r\x1b[K");
                return outcome;
            }
            _ = ticks.tick() => {
                let line = catch_up_progress(&kv.status(), newcomer, started.elapsed());
                eprint!("\r\x1b[K{line}");
            }
        }
    }
}

/// How far `newcomer` has caught up, as far as this replica knows: only the
/// leader tracks what each member holds.
fn catch_up_progress(status: &Status, newcomer: NodeId, elapsed: std::time::Duration) -> String {
    let seconds = elapsed.as_secs();
    let held = status
        .members
        .iter()
        .find(|member| member.id == newcomer)
        .and_then(|member| member.matched);
    match (status.role, held) {
        (Role::Leader, Some(held)) => {
            let of = status.last_log_index.max(1);
            let percent = held.min(of) * 100 / of;
            format!(
                "replica {newcomer} catching up: holds {held} of {} entries ({percent}%), {seconds} s",
                status.last_log_index
            )
        }
        (Role::Leader, None) => {
            format!("replica {newcomer} catching up: no answer from it yet, {seconds} s")
        }
        _ => format!("waiting for the leader to add replica {newcomer}, {seconds} s"),
    }
}

/// Runs one command in `session` and returns the lines to print: one, except
/// a Redis command's array reply (or INFO's text) on a terminal (see
/// [`reply_lines`]).
async fn execute(session: &mut Session, command: PromptCommand, on_terminal: bool) -> Vec<String> {
    let kv = session.shared().kv.clone();
    let answer = match command {
        PromptCommand::Redis(words) => {
            let reply = run_counted(session, &words).await;
            return if on_terminal {
                reply_lines(&reply)
            } else {
                vec![reply_line(&reply)]
            };
        }
        PromptCommand::Kv(words) => Ok(match run_counted(session, &words).await {
            Frame::Bulk(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
            Frame::Bulk(None) | Frame::Null => "(nil)".to_string(),
            Frame::Error(e) => format!("(error) {}", one_line(&e)),
            // Inside MULTI.
            Frame::Simple("QUEUED") => "QUEUED".to_string(),
            // put and delete of one key answer OK, whether or not it existed.
            _ => "OK".to_string(),
        }),
        PromptCommand::Membership(change) => {
            let done = change.clone();
            let newcomer = match &change {
                MembershipChange::Add { id, .. } if on_terminal => Some(*id),
                _ => None,
            };
            let changing = kv.change_membership(change);
            let changed = match newcomer {
                Some(id) => with_catch_up_progress(&kv, id, changing).await,
                None => changing.await,
            };
            changed.map(|changed| done.done_text(&changed))
        }
        PromptCommand::Status if on_terminal => return status_lines(&kv.status()),
        PromptCommand::Status => Ok(format_status(&kv.status())),
        PromptCommand::Checksum => kv
            .state()
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

/// Runs a request in the session, counted in INFO as the port counts its own.
async fn run_counted(session: &mut Session, words: &[Bytes]) -> Frame {
    let started = std::time::Instant::now();
    let reply = session.run_one(words).await;
    if let Some(name) = words.first() {
        session
            .shared()
            .stats
            .count_command(name, started.elapsed());
    }
    reply
}

/// The prompt itself: the session its commands run in, and where they run.
struct Prompt<'a> {
    runtime: &'a Runtime,
    /// `None` only while a command runs (it is lent to the task).
    session: Option<Session>,
    shared: Shared,
}

impl Prompt<'_> {
    /// Handles one input line; returns false when the person asked to leave
    /// (or SHUTDOWN was accepted).
    fn handle_line(&mut self, line: &str, on_terminal: bool, out: &mut impl Write) -> bool {
        let lines = match parse_line(line) {
            Ok(None) => return true,
            Ok(Some(PromptCommand::Exit)) => return false,
            Ok(Some(command)) => {
                let mut session = self.take_session();
                // Run on the runtime's workers: storage calls expect to be
                // there. The session comes back with the answer.
                let task = self.runtime.spawn(async move {
                    let lines = execute(&mut session, command, on_terminal).await;
                    (session, lines)
                });
                match self.runtime.block_on(task) {
                    Ok((session, lines)) => {
                        self.session = Some(session);
                        lines
                    }
                    Err(e) => vec![format!(
                        "(error) the command failed inside the replica (the session starts afresh): {e}"
                    )],
                }
            }
            Err(why) => {
                // Inside MULTI a mistyped command aborts the transaction, as
                // it does when Redis refuses one, rather than letting it run
                // without the command the person meant to queue.
                if let Some(session) = self.session.as_mut() {
                    session.refused_elsewhere();
                }
                vec![format!("(error) {why}")]
            }
        };
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        !self.session.as_ref().is_some_and(Session::stopping)
    }

    fn take_session(&mut self) -> Session {
        self.session
            .take()
            .unwrap_or_else(|| prompt_session(self.shared.clone()))
    }

    /// What the prompt shows: the replica, and as redis-cli shows them, the
    /// selected database (`[1]`) and a transaction being queued (`(TX)`).
    fn prompt_text(&self) -> String {
        let id = self.shared.kv.replica_id();
        let (db, in_transaction) = self
            .session
            .as_ref()
            .map_or((0, false), |s| (s.db(), s.in_transaction()));
        prompt_text(id, db, in_transaction)
    }
}

/// `replica-1> `, `replica-1[3]> `, `replica-1[3](TX)> `.
fn prompt_text(id: NodeId, db: u8, in_transaction: bool) -> String {
    let db = if db == 0 {
        String::new()
    } else {
        format!("[{db}]")
    };
    let tx = if in_transaction { "(TX)" } else { "" };
    format!("replica-{id}{db}{tx}> ")
}

/// The prompt's session: logged in (the prompt asks for no password).
fn prompt_session(shared: Shared) -> Session {
    Session::new(shared, "prompt".into(), true)
}

/// Reads commands until `exit`, SHUTDOWN or end of input.
pub fn run(runtime: &Runtime, shared: Shared, replica_dir: &Path) {
    let mut prompt = Prompt {
        runtime,
        session: Some(prompt_session(shared.clone())),
        shared,
    };
    if std::io::stdin().is_terminal() {
        run_interactive(&mut prompt, replica_dir);
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
            if !prompt.handle_line(line, false, &mut stdout.lock()) {
                break;
            }
        }
    }
}

fn run_interactive(prompt: &mut Prompt, replica_dir: &Path) {
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
        prompt.shared.kv.replica_id()
    );
    loop {
        match editor.readline(&prompt.prompt_text()) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                    let _ = editor.save_history(&history);
                }
                if !prompt.handle_line(&line, true, &mut std::io::stdout()) {
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
    use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN};
    use crate::machine::Reply;
    use crate::session::frame_of;

    #[test]
    fn status_is_one_line_for_scripts_and_aligned_lines_for_people() {
        let status = Status::example();
        let line = format_status(&status);
        assert!(
            line.starts_with("role=leader leader=1 term=3 last_log_index=42"),
            "{line}"
        );
        let lines = status_lines(&status);
        assert_eq!(lines.len(), line.split(' ').count());
        assert_eq!(lines[0], "role                 leader");
        assert_eq!(lines[6], "members              1,2,3");
        let value_column = |l: &String| l.len() - l.split_whitespace().last().unwrap().len();
        assert!(lines
            .iter()
            .all(|l| value_column(l) == value_column(&lines[0])));
    }

    #[test]
    fn catch_up_progress_says_what_the_newcomer_holds_where_that_is_known() {
        let member = |id, matched| crate::kv::MemberStatus {
            id,
            voter: id != 4,
            addr: format!("127.0.0.1:{}", 63000 + id),
            matched,
        };
        let mut status = Status {
            last_log_index: 2000,
            learners: vec![4],
            members: vec![member(1, Some(2000)), member(4, Some(500))],
            ..Status::example()
        };
        let after = std::time::Duration::from_secs(7);
        assert_eq!(
            catch_up_progress(&status, 4, after),
            "replica 4 catching up: holds 500 of 2000 entries (25%), 7 s"
        );
        status.members[1].matched = None;
        assert_eq!(
            catch_up_progress(&status, 4, after),
            "replica 4 catching up: no answer from it yet, 7 s"
        );
        status.role = Role::Follower;
        assert_eq!(
            catch_up_progress(&status, 4, after),
            "waiting for the leader to add replica 4, 7 s"
        );
    }

    /// The words of a prompt request.
    fn words_of(request: &[Bytes]) -> Vec<Vec<u8>> {
        request.iter().map(|word| word.to_vec()).collect()
    }

    fn lines_of(reply: &Reply) -> Vec<String> {
        reply_lines(&frame_of(reply.clone()))
    }

    fn line_of(reply: &Reply) -> String {
        reply_line(&frame_of(reply.clone()))
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
            .contains(&format!("at most {MAX_KEY_LEN}")));
        assert!(parse_line(&format!("put {} v", "k".repeat(MAX_KEY_LEN))).is_ok());
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        assert!(parse_line(&format!("put k {long_value}"))
            .unwrap_err()
            .contains("values are at most"));
        // The Redis commands: Redis's error line, from the one parser.
        assert!(parse_line(&format!("set k \"{long_value}\""))
            .unwrap_err()
            .starts_with("ERR the value is"));
        assert!(parse_line(&format!("append {long_key} v"))
            .unwrap_err()
            .starts_with("ERR the key is"));
        let longest_value = &long_value[1..];
        assert!(parse_line(&format!("set k '{longest_value}'")).is_ok());
    }

    #[test]
    fn word_end_finds_every_blank() {
        for c in (0..=char::MAX as u32).filter_map(char::from_u32) {
            let text = format!("ab{c}cd");
            let expected = if c.is_whitespace() { 2 } else { text.len() };
            let with_quotes = if c == '"' || c == '\'' { 2 } else { expected };
            assert_eq!(word_end(&text, false), expected, "{c:?}");
            assert_eq!(word_end(&text, true), with_quotes, "{c:?}");
        }
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
                    assert!(key.len() <= MAX_KEY_LEN, "{line:?}");
                    // Only a quoted key (`get "a key"`) may be empty or hold blanks.
                    if !line.contains(['"', '\'']) {
                        assert!(!key.is_empty(), "{line:?}");
                        assert!(
                            !String::from_utf8_lossy(key).contains(char::is_whitespace),
                            "{line:?}"
                        );
                    }
                }
                Ok(Some(PromptCommand::Redis(request))) => {
                    assert_eq!(Ok(words_of(&request)), split_words(&line), "{line:?}");
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

    fn words(line: &str) -> Result<Vec<Vec<u8>>, SplitError> {
        split_words(line)
    }

    fn owned(words: &[&[u8]]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.to_vec()).collect()
    }

    fn redis(words: &[&[u8]]) -> PromptCommand {
        let words: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
        match commands::parse(&words, 0) {
            Ok(_) => PromptCommand::Redis(words),
            Err(e) => panic!("{words:?} is not a command: {e}"),
        }
    }

    #[test]
    fn words_split_on_blanks_outside_quotes() {
        assert_eq!(words("").unwrap(), owned(&[]));
        assert_eq!(words(" \t ").unwrap(), owned(&[]));
        assert_eq!(
            words("  incr   hits\t").unwrap(),
            owned(&[b"incr", b"hits"])
        );
        // Outside quotes a backslash is only a backslash.
        assert_eq!(words(r"get a\nb").unwrap(), owned(&[b"get", br"a\nb"]));
        // Any Unicode blank separates, as elsewhere at the prompt.
        assert_eq!(
            words("get\u{3000}ключ\u{a0}🔑").unwrap(),
            owned(&[b"get", "ключ".as_bytes(), "🔑".as_bytes()])
        );
    }

    #[test]
    fn double_quotes_hold_blanks_and_escapes() {
        assert_eq!(
            words(r#"set "a key" "a value" ex 10"#).unwrap(),
            owned(&[b"set", b"a key", b"a value", b"ex", b"10"])
        );
        assert_eq!(
            words(r#""\n\r\t\b\a\\\"\q""#).unwrap(),
            owned(&[b"\n\r\t\x08\x07\\\"q"])
        );
        assert_eq!(
            words(r#""\x00\xff\xE2\x82\xac""#).unwrap(),
            owned(&[b"\x00\xff\xe2\x82\xac"])
        );
        // Not two hex digits: `\x` is an `x`, and what follows is itself.
        assert_eq!(words(r#""\x4g" "\x""#).unwrap(), owned(&[b"x4g", b"x"]));
        assert_eq!(words(r#""" ''"#).unwrap(), owned(&[b"", b""]));
        assert_eq!(
            words(r#""ключ 🔑""#).unwrap(),
            owned(&["ключ 🔑".as_bytes()])
        );
        // A quote may open mid-word; the word ends at the closing quote.
        assert_eq!(words(r#"a"b c" d"#).unwrap(), owned(&[b"ab c", b"d"]));
    }

    #[test]
    fn single_quotes_know_only_the_escaped_quote() {
        assert_eq!(
            words(r"'it\'s' '\n\x41\\ x'").unwrap(),
            owned(&[b"it's", br"\n\x41\\ x"])
        );
        assert_eq!(words(r#"'say "hi"'"#).unwrap(), owned(&[br#"say "hi""#]));
    }

    #[test]
    fn bad_quoting_is_refused_as_redis_cli_refuses_it() {
        for line in [
            r#"set "a"#,
            "set 'a",
            r#"get "a\"#,
            r#"get "a\""#,
            "'",
            "\"",
        ] {
            assert_eq!(words(line), Err(SplitError::UnclosedQuote), "{line:?}");
        }
        for line in [r#""a"b"#, "'a'b", r#""a""b""#, r#"set "k"v"#] {
            assert_eq!(words(line), Err(SplitError::TextAfterQuote), "{line:?}");
        }
        for error in [SplitError::UnclosedQuote, SplitError::TextAfterQuote] {
            assert!(error.to_string().starts_with("Invalid argument(s): "));
        }
    }

    #[test]
    fn redis_commands_are_read_with_quoting() {
        assert_eq!(
            parse_line(r#"set "a key" "a value" ex 10"#).unwrap(),
            Some(redis(&[b"set", b"a key", b"a value", b"ex", b"10"]))
        );
        assert_eq!(
            parse_line("INCR hits").unwrap(),
            Some(redis(&[b"INCR", b"hits"]))
        );
        assert_eq!(
            parse_line(r#"mget "a key" hits"#).unwrap(),
            Some(redis(&[b"mget", b"a key", b"hits"]))
        );
        assert_eq!(
            parse_line(r#"SET k "\xff""#).unwrap(),
            Some(redis(&[b"SET", b"k", b"\xff"]))
        );
        // `set` is Redis's SET: its value is one word, not the rest of the line.
        assert_eq!(
            parse_line("set k v").unwrap(),
            Some(redis(&[b"set", b"k", b"v"]))
        );
    }

    #[test]
    fn redis_errors_are_one_line_as_redis_says_them() {
        for (line, says) in [
            ("set k hello world", "ERR syntax error"),
            ("set k", "ERR wrong number of arguments for 'set' command"),
            ("incr", "ERR wrong number of arguments for 'incr' command"),
            (
                "expire k soon",
                "ERR value is not an integer or out of range",
            ),
            (
                r#"set "a key "a value""#,
                "Invalid argument(s): a closing quote",
            ),
            (r#"incr "hits"#, "Invalid argument(s): a quote is opened"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.starts_with(says), "{line:?} gave {err:?}");
        }
        // Words quoted back in an error cannot break the line or drive the terminal.
        for line in ["getex k \"\u{2028}\u{1b}[2J\"", "\"frob\u{85}\u{1b}[2J\" x"] {
            let err = parse_line(line).unwrap_err();
            assert!(!err.contains(['\u{2028}', '\u{85}', '\u{1b}']), "{err:?}");
        }
    }

    #[test]
    fn unknown_commands_mention_the_redis_commands() {
        let err = parse_line("frobnicate x").unwrap_err();
        assert!(err.contains("unknown command 'frobnicate'"), "{err}");
        assert!(err.contains("incr"), "{err}");
        let err = parse_line("\"frob\\nnicate\" x").unwrap_err();
        assert!(err.contains("'frob?nicate'"), "{err}");
    }

    #[test]
    fn put_get_and_delete_keep_their_words_as_typed() {
        // put's value is still the rest of the line, quotes and all.
        assert_eq!(
            parse_line(r#"put k say "hi" ex 10"#).unwrap(),
            Some(put("k", r#"say "hi" ex 10"#))
        );
        assert_eq!(parse_line("put \"k v").unwrap(), Some(put("\"k", "v")));
        let get = |key: &[u8]| PromptCommand::Kv(keyspace_request(&[&b"GET"[..], key]).unwrap());
        let del = |key: &[u8]| PromptCommand::Kv(keyspace_request(&[&b"DEL"[..], key]).unwrap());
        // One word is the key as typed...
        assert_eq!(parse_line(r#"get "ab""#).unwrap(), Some(get(br#""ab""#)));
        assert_eq!(parse_line("get it's").unwrap(), Some(get(b"it's")));
        // ...and a quoted key with spaces is read as redis-cli reads it.
        assert_eq!(parse_line(r#"get "a key""#).unwrap(), Some(get(b"a key")));
        assert_eq!(parse_line("del 'a key'").unwrap(), Some(del(b"a key")));
        assert_eq!(parse_line("delete 'a key' ").unwrap(), Some(del(b"a key")));
        // (A one-word key is as typed even when quoted: `get "ab"` above.)
        assert_eq!(
            parse_line(r#"delete "a\x20key""#).unwrap(),
            Some(del(br#""a\x20key""#))
        );
        assert!(parse_line(r#"get "a key" b"#)
            .unwrap_err()
            .contains("exactly one key"));
        assert!(parse_line(r#"get "a key"#)
            .unwrap_err()
            .starts_with("Invalid argument(s)"));
    }

    #[test]
    fn every_command_of_the_port_is_read_at_the_prompt() {
        for (line, words) in [
            ("multi", &[&b"multi"[..]][..]),
            ("EXEC", &[b"EXEC"]),
            ("select 3", &[b"select", b"3"]),
            ("watch a 'b c'", &[b"watch", b"a", b"b c"]),
            ("ping \"hello there\"", &[b"ping", b"hello there"]),
            ("info keyspace", &[b"info", b"keyspace"]),
            (
                "config set appendonly yes",
                &[b"config", b"set", b"appendonly", b"yes"],
            ),
            ("client setname me", &[b"client", b"setname", b"me"]),
            ("save", &[b"save"]),
            ("lastsave", &[b"lastsave"]),
            ("shutdown nosave", &[b"shutdown", b"nosave"]),
            ("hello 3", &[b"hello", b"3"]),
        ] {
            assert_eq!(parse_line(line).unwrap(), Some(redis(words)), "{line:?}");
        }
        for (line, says) in [
            ("select 16", "ERR DB index is out of range"),
            ("select", "ERR wrong number of arguments for 'select'"),
            ("exec now", "ERR wrong number of arguments for 'exec'"),
            ("shutdown later", "ERR syntax error"),
            (
                "config set x",
                "ERR wrong number of arguments for 'config|set'",
            ),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.starts_with(says), "{line:?} gave {err:?}");
        }
    }

    #[test]
    fn the_prompt_shows_the_database_and_a_transaction_as_redis_cli_does() {
        assert_eq!(prompt_text(1, 0, false), "replica-1> ");
        assert_eq!(prompt_text(2, 3, false), "replica-2[3]> ");
        assert_eq!(prompt_text(2, 0, true), "replica-2(TX)> ");
        assert_eq!(prompt_text(3, 15, true), "replica-3[15](TX)> ");
    }

    #[test]
    fn info_text_is_printed_as_lines_on_a_terminal_and_one_line_elsewhere() {
        let info = Frame::Verbatim("# Server\r\nredis_version:7.0.15\r\n".into());
        assert_eq!(reply_lines(&info), ["# Server", "redis_version:7.0.15"]);
        assert_eq!(
            reply_line(&info),
            r##""# Server\r\nredis_version:7.0.15\r\n""##
        );
        assert_eq!(reply_line(&Frame::Simple("QUEUED")), "QUEUED");
        assert_eq!(reply_line(&Frame::Bulk(None)), "(nil)");
    }

    #[test]
    fn strings_are_quoted_as_redis_cli_quotes_them() {
        assert_eq!(quoted(b"a value"), r#""a value""#);
        assert_eq!(quoted(b""), r#""""#);
        assert_eq!(
            quoted(b"\"\\\n\r\t\x07\x08\x00\x1b\x7f~ "),
            r#""\"\\\n\r\t\a\b\x00\x1b\x7f~ ""#
        );
        assert_eq!(quoted("é€".as_bytes()), r#""\xc3\xa9\xe2\x82\xac""#);
    }

    #[test]
    fn replies_are_printed_as_redis_cli_prints_them() {
        let bulk = |text: &str| Reply::bulk(text);
        for (reply, line) in [
            (Reply::Ok, "OK"),
            (Reply::Status("string".into()), "string"),
            (Reply::Nil, "(nil)"),
            (Reply::NilArray, "(nil)"),
            (Reply::Int(-5), "(integer) -5"),
            (bulk("a value"), r#""a value""#),
            (
                Reply::Error("ERR no such key".into()),
                "(error) ERR no such key",
            ),
            (Reply::Array(vec![]), "(empty array)"),
            (Reply::Status("two\nlines".into()), "two?lines"),
        ] {
            assert_eq!(lines_of(&reply), [line], "{reply:?}");
            assert_eq!(line_of(&reply), line, "{reply:?}");
        }
    }

    #[test]
    fn arrays_are_numbered_lines_on_a_terminal_and_one_line_elsewhere() {
        let bulk = |text: &str| Reply::bulk(text);
        let flat = Reply::Array(vec![bulk("a"), Reply::Nil, Reply::Int(3)]);
        assert_eq!(lines_of(&flat), [r#"1) "a""#, "2) (nil)", "3) (integer) 3"]);
        assert_eq!(line_of(&flat), r#"1) "a" 2) (nil) 3) (integer) 3"#);

        // SCAN's answer: a cursor and a nested array, indented under its number.
        let scan = Reply::Array(vec![
            bulk("0"),
            Reply::Array(vec![bulk("a key"), bulk("hits")]),
            Reply::Array(vec![]),
        ]);
        assert_eq!(
            lines_of(&scan),
            [
                r#"1) "0""#,
                r#"2) 1) "a key""#,
                r#"   2) "hits""#,
                "3) (empty array)"
            ]
        );
        assert_eq!(
            line_of(&scan),
            r#"1) "0" 2) [1) "a key" 2) "hits"] 3) (empty array)"#
        );

        // Ten or more elements: numbers right-aligned, nesting indented past them.
        let mut many: Vec<Reply> = (1..=9).map(Reply::Int).collect();
        many.push(Reply::Array(vec![Reply::Int(10), Reply::Int(11)]));
        let lines = lines_of(&Reply::Array(many));
        assert_eq!(lines[0], " 1) (integer) 1");
        assert_eq!(lines[9], "10) 1) (integer) 10");
        assert_eq!(lines[10], "    2) (integer) 11");

        // A map (LCS ... IDX) is the flat array RESP2 sends.
        let map = Reply::Map(vec![
            (bulk("matches"), Reply::Array(vec![])),
            (bulk("len"), Reply::Int(0)),
        ]);
        assert_eq!(
            lines_of(&map),
            [
                r#"1) "matches""#,
                "2) (empty array)",
                r#"3) "len""#,
                "4) (integer) 0"
            ]
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
            "incr",
            "ttl",
            "mget",
            "ex",
            "10",
            "\"",
            "'",
            "\\",
            "\\x",
            "\"a key\"",
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

        /// Pieces of commands, blanks of every kind, any characters (controls
        /// included).
        fn parts() -> impl Strategy<Value = String> + Clone {
            let part = prop_oneof![
                3 => prop::sample::select(FRAGMENTS).prop_map(String::from),
                3 => prop::sample::select(BLANKS).prop_map(String::from),
                2 => prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
            ];
            prop::collection::vec(part, 0..12).prop_map(|parts| parts.concat())
        }

        /// A line of [`parts`] or of any characters, of ordinary length.
        fn short_line() -> impl Strategy<Value = String> {
            prop_oneof![
                8 => parts(),
                3 => prop::collection::vec(any::<char>(), 0..200).prop_map(String::from_iter),
            ]
        }

        /// Any line: a [`short_line`], now and then with a word near a size
        /// limit in it.
        fn any_line() -> impl Strategy<Value = String> {
            prop_oneof![
                11 => short_line(),
                1 => (parts(), long_word(), parts())
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
                        prop_assert!(key.len() <= MAX_KEY_LEN);
                        let after_name = line.trim().split_once(char::is_whitespace).map_or("", |(_, rest)| rest);
                        if after_name.split_whitespace().count() > 1 && value.is_none() {
                            // get or delete of a quoted key: the one word the quoting gives.
                            prop_assert_eq!(split_words(after_name), Ok(vec![key.clone()]));
                            return Ok(());
                        }
                        let key = std::str::from_utf8(key).expect("a typed key comes from a str");
                        prop_assert!(!key.is_empty());
                        prop_assert!(!key.contains(char::is_whitespace), "{:?}", key);
                        prop_assert!(line.contains(key));
                        if let Some(value) = value {
                            let value = std::str::from_utf8(value).expect("values come from a str");
                            prop_assert!(!value.is_empty() && value.len() <= MAX_VALUE_LEN);
                            prop_assert_eq!(value, value.trim());
                            prop_assert!(line.contains(value));
                        }
                    }
                    Ok(Some(PromptCommand::Redis(request))) => {
                        // Exactly the words redis-cli would have sent.
                        prop_assert_eq!(Ok(words_of(&request)), split_words(&line));
                    }
                    Ok(Some(PromptCommand::Membership(MembershipChange::Add { addr, .. }))) => {
                        prop_assert!(!addr.is_empty() && !addr.contains(char::is_whitespace));
                    }
                    Ok(Some(_)) => {}
                }
            }
        }

        /// A word of any bytes: often text with quotes, backslashes and
        /// blanks in it, sometimes not UTF-8 at all.
        fn any_word() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                3 => prop::collection::vec(any::<char>(), 0..12)
                    .prop_map(|chars| String::from_iter(chars).into_bytes()),
                2 => prop::collection::vec(
                    prop::sample::select(&[b'"', b'\'', b'\\', b' ', b'x', b'\n', b'a'][..]),
                    0..12,
                ),
                1 => prop::collection::vec(any::<u8>(), 0..12),
            ]
        }

        proptest! {
            #![proptest_config(config(1000))]

            /// Any line splits into words or is refused with one of the two
            /// errors, never a panic; a line without quotes is its blank-separated
            /// words, exactly as before quoting existed. (Lengths do not matter
            /// to the splitter: the long lines are left to the property above.)
            #[test]
            fn prop_any_line_splits_or_is_refused(line in short_line()) {
                let split = split_words(&line);
                if !line.contains(['"', '\'']) {
                    let typed: Vec<Vec<u8>> =
                        line.split_whitespace().map(|w| w.as_bytes().to_vec()).collect();
                    prop_assert_eq!(split, Ok(typed));
                }
            }

            /// Words of any bytes, each printed as redis-cli prints a string and
            /// joined by any blanks, read back as exactly those words.
            #[test]
            fn prop_quoted_words_read_back_exactly(
                words in prop::collection::vec(any_word(), 0..6),
                blank in blank(),
            ) {
                let line = words.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(&blank);
                prop_assert_eq!(split_words(&line), Ok(words));
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// `set KEY VALUE` with both quoted as redis-cli quotes them: Redis's
            /// SET of exactly those bytes when they are within the limits, else
            /// an error line; never the put shorthand.
            #[test]
            fn prop_set_is_redis_set_of_the_quoted_words(
                set in spelled(&["set"]),
                key in prop_oneof![4 => any_word(), 1 => key().prop_map(String::into_bytes)],
                // Near the value limit only once, in `size_limits_are_enforced`:
                // 256 values at the size limit would take minutes in a debug build.
                value in prop_oneof![4 => any_word(), 1 => key().prop_map(String::into_bytes)],
                blanks in prop::collection::vec(blank(), 2),
            ) {
                let line = format!("{set}{}{}{}{}", blanks[0], quoted(&key), blanks[1], quoted(&value));
                let parsed = parse_line(&line);
                if key.len() <= MAX_KEY_LEN && value.len() <= MAX_VALUE_LEN {
                    let expected = redis(&[set.as_bytes(), &key, &value]);
                    prop_assert_eq!(parsed, Ok(Some(expected)));
                } else {
                    let err = parsed.unwrap_err();
                    prop_assert!(err.starts_with("ERR ") && err.contains("at most"), "{}", err);
                }
            }
        }

        proptest! {
            #![proptest_config(config(256))]

            /// `put KEY VALUE`, `get KEY` and `delete KEY`, spelled in any case
            /// with any blanks around the words: accepted exactly when the key
            /// and value are within the limits, as exactly those bytes (the
            /// value without its surrounding blanks). (`set` is Redis's SET,
            /// with redis-cli's quoting: see the next property.)
            #[test]
            fn prop_well_formed_lines_are_understood_exactly(
                put in spelled(&["put"]),
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
