//! What each Redis command means here: a pure function from a request's words
//! to a [`ClientCommand`], unit-tested without a server.
//!
//! The keyspace commands (GET, SET, INCR, EXPIRE, SCAN, ...) become the same
//! [`Request`]s the prompt makes, checked by `machine::parse`. The rest is
//! connection state (HELLO, SELECT, MULTI/EXEC, WATCH, CLIENT) that the
//! session keeps, what redis-cli, redis-benchmark and client libraries send
//! when they connect (`COMMAND`, `CONFIG GET`), answered so they work
//! unchanged, and the server commands (`SAVE`, `SHUTDOWN`, `CONFIG SET`);
//! anything else is refused with a Redis-style error.

use bytes::Bytes;

use super::frame::{Frame, Protocol};
use crate::kv::Request;
use crate::machine::parse::{parse_db, shown};
use crate::membership::MembershipChange;

/// A request from a client, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    /// A keyspace command: through Raft, as at the prompt.
    Kv(Request),
    /// INFO, with the section asked for (lower case), if any.
    Info(Option<String>),
    /// CHECKSUM: as at the prompt, the digest of the whole state and its index.
    Checksum,
    /// BACKUP: the whole state at a linearizable read point, in the snapshot
    /// file format, as one bulk string (what `example-ondisk backup` asks for).
    Backup,
    /// CLUSTER ADD-REPLICA / REMOVE-REPLICA / TRANSFER-LEADER: as at the prompt.
    Membership(MembershipChange),
    /// QUIT: answer OK, then close.
    Quit,
    /// TIME: this replica's clock (it decides nothing in the state).
    Time,
    /// A command whose answer does not depend on the store or the connection.
    Constant(Frame),
    /// HELLO [protover] [AUTH user pass] [SETNAME name]: maybe log in and
    /// switch protocol, answer who we are.
    Hello {
        protocol: Option<Protocol>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    },
    /// AUTH [user] password.
    Auth {
        user: Option<Bytes>,
        password: Bytes,
    },
    Select(u8),
    Multi,
    Exec,
    Discard,
    Watch(Vec<Vec<u8>>),
    Unwatch,
    /// CLIENT SETNAME.
    SetName(Bytes),
    /// CLIENT GETNAME.
    GetName,
    /// CLIENT ID.
    ClientId,
    /// CLIENT INFO and CLIENT LIST: this connection's line.
    ClientInfo {
        list: bool,
    },
    /// CONFIG RESETSTAT: INFO's counters start again from zero.
    ResetStats,
    /// SAVE: every acknowledged write is on disk already; answers OK.
    Save,
    /// BGSAVE [SCHEDULE]: the same, answered as Redis starts a background save.
    BgSave,
    /// LASTSAVE: when everything acknowledged was last known to be on disk.
    LastSave,
    /// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]: stop this replica as SIGTERM does.
    Shutdown,
}

impl ClientCommand {
    /// The command's name, for a message about it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientCommand::Kv(_) => "a keyspace command",
            ClientCommand::Info(_) => "info",
            ClientCommand::Checksum => "checksum",
            ClientCommand::Backup => "backup",
            ClientCommand::Membership(_) => "cluster",
            ClientCommand::Quit => "quit",
            ClientCommand::Time => "time",
            ClientCommand::Constant(_) => "a constant",
            ClientCommand::Hello { .. } => "hello",
            ClientCommand::Auth { .. } => "auth",
            ClientCommand::Select(_) => "select",
            ClientCommand::Multi => "multi",
            ClientCommand::Exec => "exec",
            ClientCommand::Discard => "discard",
            ClientCommand::Watch(_) => "watch",
            ClientCommand::Unwatch => "unwatch",
            ClientCommand::SetName(_) | ClientCommand::GetName => "client",
            ClientCommand::ClientId | ClientCommand::ClientInfo { .. } => "client",
            ClientCommand::ResetStats => "config",
            ClientCommand::Save => "save",
            ClientCommand::BgSave => "bgsave",
            ClientCommand::LastSave => "lastsave",
            ClientCommand::Shutdown => "shutdown",
        }
    }
}

/// Every command name [`parse`] knows, in upper case: the only names the
/// port's per-command metrics are labelled with (`metrics::CommandTable`);
/// any other name a client sends is counted as `OTHER`.
#[rustfmt::skip]
pub const COMMAND_NAMES: &[&str] = &[
    // The keyspace (machine/parse.rs) and scripts (scripts.rs).
    "APPEND", "COPY", "DBSIZE", "DECR", "DECRBY", "DEL", "EVAL", "EVAL_RO", "EVALSHA",
    "EVALSHA_RO", "EXISTS", "EXPIRE", "EXPIREAT", "EXPIRETIME", "FLUSHALL", "FLUSHDB", "GET",
    "GETBIT", "GETDEL", "GETEX", "GETRANGE", "GETSET", "INCR", "INCRBY", "INCRBYFLOAT", "KEYS",
    "LCS", "MGET", "MSET", "MSETNX", "PERSIST", "PEXPIRE", "PEXPIREAT", "PEXPIRETIME", "PSETEX",
    "PTTL", "RANDOMKEY", "RENAME", "RENAMENX", "SCAN", "SCRIPT", "SET", "SETBIT", "SETEX",
    "SETNX", "SETRANGE", "STRLEN", "SUBSTR", "TOUCH", "TTL", "TYPE", "UNLINK",
    // The connection and the server (this file).
    "AUTH", "BACKUP", "BGSAVE", "CHECKSUM", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DISCARD",
    "ECHO", "EXEC", "FUNCTION", "HELLO", "INFO", "LASTSAVE", "MULTI", "PING", "QUIT", "SAVE",
    "SELECT", "SHUTDOWN", "TIME", "UNWATCH", "WATCH",
];

/// Understands one request made in database `db`. `Err` holds the Redis
/// error to send back; the connection stays usable.
pub fn parse(args: &[Bytes], db: u8) -> Result<ClientCommand, String> {
    let Some(name) = args.first() else {
        return Err("ERR empty command".into());
    };
    if let Some(request) = Request::parse(db, args) {
        return request.map(ClientCommand::Kv);
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = &args[1..];
    let wrong_arity = || format!("ERR wrong number of arguments for '{name}' command");
    let command = match name.as_str() {
        "ping" => match rest {
            [] => ClientCommand::Constant(Frame::Simple("PONG")),
            [message] => ClientCommand::Constant(Frame::bulk(message.clone())),
            _ => return Err(wrong_arity()),
        },
        "echo" => match rest {
            [message] => ClientCommand::Constant(Frame::bulk(message.clone())),
            _ => return Err(wrong_arity()),
        },
        "info" => match rest {
            [] => ClientCommand::Info(None),
            [section] => {
                ClientCommand::Info(Some(String::from_utf8_lossy(section).to_ascii_lowercase()))
            }
            _ => return Err(wrong_arity()),
        },
        "checksum" if rest.is_empty() => ClientCommand::Checksum,
        "backup" if rest.is_empty() => ClientCommand::Backup,
        "quit" => ClientCommand::Quit,
        "time" if rest.is_empty() => ClientCommand::Time,
        "select" => match rest {
            [db] => ClientCommand::Select(parse_db(db)?),
            _ => return Err(wrong_arity()),
        },
        "multi" if rest.is_empty() => ClientCommand::Multi,
        "exec" if rest.is_empty() => ClientCommand::Exec,
        "discard" if rest.is_empty() => ClientCommand::Discard,
        "unwatch" if rest.is_empty() => ClientCommand::Unwatch,
        "watch" if !rest.is_empty() => ClientCommand::Watch(
            rest.iter()
                .map(|key| {
                    Request::parse(db, &[&b"exists"[..], key])
                        .and_then(Result::ok)
                        .map(|_| key.to_vec())
                        .ok_or_else(|| "ERR a WATCHed key is too long".to_string())
                })
                .collect::<Result<_, _>>()?,
        ),
        "function" => match rest {
            [sub, ..] if sub.eq_ignore_ascii_case(b"flush") => ClientCommand::Constant(Frame::ok()),
            _ => {
                return Err(
                    "ERR functions (FUNCTION, FCALL) are not supported here; EVAL and EVALSHA are"
                        .into(),
                )
            }
        },
        "command" => command_command(rest)?,
        "client" => client_command(rest)?,
        "hello" => hello_command(rest)?,
        "auth" => match rest {
            [password] => ClientCommand::Auth {
                user: None,
                password: password.clone(),
            },
            [user, password] => ClientCommand::Auth {
                user: Some(user.clone()),
                password: password.clone(),
            },
            _ => return Err(wrong_arity()),
        },
        "config" => config_command(rest)?,
        "cluster" => cluster_command(rest)?,
        "save" if rest.is_empty() => ClientCommand::Save,
        "bgsave" => match rest {
            [] => ClientCommand::BgSave,
            [schedule] if schedule.eq_ignore_ascii_case(b"schedule") => ClientCommand::BgSave,
            [_] => return Err(SYNTAX_ERROR.into()),
            _ => return Err(wrong_arity()),
        },
        "lastsave" if rest.is_empty() => ClientCommand::LastSave,
        "shutdown" => shutdown_command(rest)?,
        "checksum" | "backup" | "multi" | "exec" | "discard" | "unwatch" | "watch" | "time"
        | "save" | "lastsave" => return Err(wrong_arity()),
        _ => {
            let mut message = format!(
                "ERR unknown command '{}', with args beginning with:",
                shown(&args[0])
            );
            for arg in rest.iter().take(3) {
                message.push_str(&format!(" '{}'", shown(arg)));
            }
            return Err(message);
        }
    };
    Ok(command)
}

/// `CLUSTER ADD-REPLICA ID HOST:PORT`, `CLUSTER REMOVE-REPLICA ID` and
/// `CLUSTER TRANSFER-LEADER ID`: the prompt's membership commands. This is not a Redis Cluster, so the Redis
/// Cluster subcommands (`CLUSTER SLOTS`, `CLUSTER NODES`...) are refused, the
/// way a Redis server without cluster support refuses them.
fn cluster_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let Some(sub) = rest.first() else {
        return Err("ERR wrong number of arguments for 'cluster' command".into());
    };
    let words: Vec<String> = rest[1..]
        .iter()
        .map(|word| String::from_utf8_lossy(word).into_owned())
        .collect();
    let change = match (sub.to_ascii_lowercase().as_slice(), &words[..]) {
        (b"add-replica", [id, addr]) => MembershipChange::parse_add(id, addr),
        (b"remove-replica", [id]) => MembershipChange::parse_remove(id),
        (b"transfer-leader", [id]) => MembershipChange::parse_transfer(id),
        (b"add-replica", _) => {
            return Err("ERR usage: CLUSTER ADD-REPLICA ID HOST:PORT".into());
        }
        (b"remove-replica", _) => return Err("ERR usage: CLUSTER REMOVE-REPLICA ID".into()),
        (b"transfer-leader", _) => return Err("ERR usage: CLUSTER TRANSFER-LEADER ID".into()),
        _ => {
            return Err(format!(
                "ERR this is not a Redis Cluster: CLUSTER '{}' is not supported; \
                 CLUSTER ADD-REPLICA ID HOST:PORT, CLUSTER REMOVE-REPLICA ID and \
                 CLUSTER TRANSFER-LEADER ID are",
                shown(sub)
            ))
        }
    };
    change
        .map(ClientCommand::Membership)
        .map_err(|e| format!("ERR {e}"))
}

/// `COMMAND`, `COMMAND DOCS`, `COMMAND COUNT`: redis-cli asks at start for
/// hints; an empty table makes it go on without them.
fn command_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    Ok(ClientCommand::Constant(match sub.as_deref() {
        None | Some("docs") | Some("info") | Some("list") => Frame::Array(Vec::new()),
        Some("count") => Frame::Integer(0),
        Some(_) => return Err("ERR unknown COMMAND subcommand".into()),
    }))
}

/// `CLIENT ...`: libraries send SETNAME, SETINFO and ID at connect.
fn client_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    Ok(match (sub.as_deref(), &rest[1.min(rest.len())..]) {
        (Some("setname"), [name]) => ClientCommand::SetName(checked_name(name)?),
        (Some("getname"), []) => ClientCommand::GetName,
        (Some("id"), []) => ClientCommand::ClientId,
        (Some("info"), []) => ClientCommand::ClientInfo { list: false },
        (Some("list"), _) => ClientCommand::ClientInfo { list: true },
        (Some("setinfo"), [_, _]) | (Some("no-evict" | "no-touch" | "reply"), [_]) => {
            ClientCommand::Constant(Frame::ok())
        }
        (
            Some(
                sub @ ("setname" | "getname" | "id" | "info" | "setinfo" | "no-evict" | "no-touch"
                | "reply"),
            ),
            _,
        ) => {
            return Err(format!(
                "ERR wrong number of arguments for 'client|{sub}' command"
            ))
        }
        _ => {
            return Err(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                rest.first().map(|sub| shown(sub)).unwrap_or_default()
            ))
        }
    })
}

/// A connection name as Redis allows it: printable, no spaces.
fn checked_name(name: &Bytes) -> Result<Bytes, String> {
    if name.iter().all(|&b| b.is_ascii_graphic()) {
        Ok(name.clone())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let Some((version, options)) = rest.split_first() else {
        return Ok(ClientCommand::Hello {
            protocol: None,
            auth: None,
            name: None,
        });
    };
    let protocol = match version.as_ref() {
        b"2" => Protocol::Resp2,
        b"3" => Protocol::Resp3,
        _ if std::str::from_utf8(version).is_ok_and(|v| v.parse::<i64>().is_ok()) => {
            return Err("NOPROTO unsupported protocol version".into())
        }
        _ => return Err("ERR Protocol version is not an integer or out of range".into()),
    };
    let mut name = None;
    let mut auth = None;
    let mut i = 0;
    while i < options.len() {
        let option = options[i].to_ascii_lowercase();
        match option.as_slice() {
            b"auth" if i + 2 < options.len() => {
                auth = Some((options[i + 1].clone(), options[i + 2].clone()));
                i += 3;
            }
            b"setname" if i + 1 < options.len() => {
                name = Some(checked_name(&options[i + 1])?);
                i += 2;
            }
            _ => {
                return Err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    shown(&options[i])
                ))
            }
        }
    }
    Ok(ClientCommand::Hello {
        protocol: Some(protocol),
        auth,
        name,
    })
}

const SYNTAX_ERROR: &str = "ERR syntax error";

/// `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]`, checked as Redis 7.0
/// checks it. Every option stops the replica the same way: there is nothing
/// unsaved to keep or to drop, and no replica to wait for (a leader hands
/// over before it stops). So a shutdown is never in progress for ABORT to
/// abort.
fn shutdown_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let (mut save, mut nosave, mut abort, mut others) = (false, false, false, false);
    for option in rest {
        match option.to_ascii_lowercase().as_slice() {
            b"save" => save = true,
            b"nosave" => nosave = true,
            b"abort" => abort = true,
            b"now" | b"force" => others = true,
            _ => return Err(SYNTAX_ERROR.into()),
        }
    }
    if (save && nosave) || (abort && (save || nosave || others)) {
        return Err(SYNTAX_ERROR.into());
    }
    if abort {
        return Ok(ClientCommand::Constant(Frame::error(
            "ERR No shutdown in progress.",
        )));
    }
    Ok(ClientCommand::Shutdown)
}

/// A parameter CONFIG GET shows and CONFIG SET knows, with the one value it
/// has here.
struct Parameter {
    name: &'static str,
    /// Another name Redis accepts for it.
    alias: Option<&'static str>,
    value: &'static str,
    kind: ValueKind,
    /// Why it cannot be set to anything else here.
    fixed_because: &'static str,
    /// Redis itself refuses to set it at run time, whatever the value.
    immutable: bool,
}

/// How Redis reads a parameter's value, for Redis's error when it cannot.
#[derive(Clone, Copy)]
enum ValueKind {
    Bool,
    /// One of these words.
    Enum(&'static [&'static str]),
    /// A whole number in this range.
    Integer(i64, i64),
    /// A byte count, with Redis's units (`100mb`, `1gb`).
    Memory,
    /// Any text.
    Text,
}

#[rustfmt::skip]
const PARAMETERS: &[Parameter] = &[
    Parameter { name: "appendonly", alias: None, value: "yes", kind: ValueKind::Bool,
        fixed_because: "every write is fsynced at a majority of replicas before it is acknowledged", immutable: false },
    Parameter { name: "appendfsync", alias: None, value: "always",
        kind: ValueKind::Enum(&["always", "everysec", "no"]),
        fixed_because: "every write is fsynced at a majority of replicas before it is acknowledged", immutable: false },
    Parameter { name: "save", alias: None, value: "", kind: ValueKind::Text,
        fixed_because: "there are no snapshot schedules to set: every write is on disk when acknowledged", immutable: false },
    Parameter { name: "databases", alias: None, value: "16", kind: ValueKind::Integer(1, i32::MAX as i64),
        fixed_because: "can't set immutable config", immutable: true },
    Parameter { name: "maxmemory", alias: None, value: "0", kind: ValueKind::Memory,
        fixed_because: "there is no memory limit here: keys live on disk, and nothing is evicted", immutable: false },
    Parameter { name: "busy-reply-threshold", alias: Some("lua-time-limit"), value: "0",
        kind: ValueKind::Integer(0, i64::MAX),
        fixed_because: "a script is stopped by its instruction budget, the same on every replica, not by time", immutable: false },
];

/// `CONFIG GET`, `CONFIG SET`, `CONFIG RESETSTAT`. redis-benchmark reads
/// `save` and `appendonly` to describe the server. Nothing is configurable
/// at run time here, so CONFIG SET answers OK only for a parameter's one
/// value, and otherwise refuses in Redis's words. Its refusals are errors of
/// running it, as in Redis: inside MULTI it is queued, and EXEC holds the
/// error in its place.
fn config_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match (sub.as_deref(), rest.len()) {
        (Some("get"), 2..) => {
            let mut pairs = Vec::new();
            for pattern in &rest[1..] {
                for parameter in PARAMETERS {
                    if glob_matches(pattern, parameter.name.as_bytes()) {
                        pairs.push((Frame::bulk(parameter.name), Frame::bulk(parameter.value)));
                    }
                }
            }
            Ok(ClientCommand::Constant(Frame::Map(pairs)))
        }
        (Some("set"), 3..) if rest.len().is_multiple_of(2) => Err(SYNTAX_ERROR.into()),
        (Some("set"), 3..) => Ok(ClientCommand::Constant(match config_set(&rest[1..]) {
            Ok(()) => Frame::ok(),
            Err(refusal) => Frame::Error(refusal),
        })),
        (Some("resetstat"), 1) => Ok(ClientCommand::ResetStats),
        (Some(sub @ ("get" | "set" | "resetstat")), _) => Err(format!(
            "ERR wrong number of arguments for 'config|{sub}' command"
        )),
        _ => Err(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            rest.first().map(|sub| shown(sub)).unwrap_or_default()
        )),
    }
}

/// CONFIG SET's pairs, checked in Redis's order: every name first (the first
/// unknown one is named), then what may not be set, then each value.
fn config_set(pairs: &[Bytes]) -> Result<(), String> {
    let mut found: Vec<(&Parameter, &Bytes)> = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let name = pair[0].to_ascii_lowercase();
        let parameter = PARAMETERS.iter().find(|parameter| {
            parameter.name.as_bytes() == name
                || parameter
                    .alias
                    .is_some_and(|alias| alias.as_bytes() == name)
        });
        let Some(parameter) = parameter else {
            return Err(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                shown(&pair[0])
            ));
        };
        found.push((parameter, &pair[0]));
    }
    for (i, (parameter, name)) in found.iter().enumerate() {
        if parameter.immutable {
            return Err(config_set_failed(name, parameter.fixed_because));
        }
        if found[..i]
            .iter()
            .any(|(seen, _)| std::ptr::eq(*seen, *parameter))
        {
            return Err(config_set_failed(name, "duplicate parameter"));
        }
    }
    for ((parameter, _), pair) in found.iter().zip(pairs.chunks(2)) {
        let value = read_value(parameter.kind, &pair[1])
            .map_err(|why| config_set_failed(parameter.name.as_bytes(), &why))?;
        let current = read_value(parameter.kind, parameter.value.as_bytes());
        if current.as_ref() != Ok(&value) {
            return Err(config_set_failed(
                parameter.name.as_bytes(),
                parameter.fixed_because,
            ));
        }
    }
    Ok(())
}

fn config_set_failed(name: &[u8], why: &str) -> String {
    format!(
        "ERR CONFIG SET failed (possibly related to argument '{}') - {why}",
        shown(name)
    )
}

/// A parameter's value as Redis reads it, in one canonical form to compare
/// (`Err`: Redis's words for why it cannot be read).
fn read_value(kind: ValueKind, value: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(value).unwrap_or("\u{fffd}");
    let lower = text.to_ascii_lowercase();
    match kind {
        ValueKind::Bool => match lower.as_str() {
            "yes" | "no" => Ok(lower),
            _ => Err("argument must be 'yes' or 'no'".into()),
        },
        ValueKind::Enum(words) => match words.iter().find(|word| **word == lower) {
            Some(word) => Ok(word.to_string()),
            None => Err(format!(
                "argument(s) must be one of the following: {}",
                words.join(", ")
            )),
        },
        ValueKind::Integer(min, max) => match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            Ok(_) => Err(format!(
                "argument must be between {min} and {max} inclusive"
            )),
            Err(_) => Err("argument couldn't be parsed into an integer".into()),
        },
        ValueKind::Memory => memory_bytes(&lower)
            .map(|bytes| bytes.to_string())
            .ok_or_else(|| "argument must be a memory value".into()),
        ValueKind::Text => Ok(text.to_string()),
    }
}

/// Redis's memory units (`memtoull`): a number, and `b`, `k`, `kb`, `m`,
/// `mb`, `g` or `gb` (`k` is 1000, `kb` 1024).
fn memory_bytes(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// CONFIG GET's pattern match: Redis's glob, without case.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    crate::machine::pattern_matches(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN};

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn parsed(words: &[&str]) -> Result<ClientCommand, String> {
        parse(&args(words), 0)
    }

    #[test]
    fn every_name_in_the_metrics_list_is_a_command_here() {
        for name in COMMAND_NAMES {
            let refused = match parsed(&[name]) {
                Ok(_) => continue,
                Err(message) => message,
            };
            assert!(
                !refused.starts_with("ERR unknown command"),
                "{name}: {refused}"
            );
        }
        assert!(parsed(&["NOSUCHCOMMAND"])
            .unwrap_err()
            .starts_with("ERR unknown command"));
    }

    #[test]
    fn cluster_changes_membership_like_the_prompt() {
        assert_eq!(
            parsed(&["CLUSTER", "add-replica", "4", "10.0.0.4:63001"]),
            Ok(ClientCommand::Membership(MembershipChange::Add {
                id: 4,
                addr: "10.0.0.4:63001".into()
            }))
        );
        assert_eq!(
            parsed(&["cluster", "REMOVE-REPLICA", "2"]),
            Ok(ClientCommand::Membership(MembershipChange::Remove {
                id: 2
            }))
        );
        let long = "x".repeat(100_000);
        for (words, expected) in [
            (vec!["cluster"], "wrong number of arguments"),
            (
                vec!["cluster", "add-replica", "4"],
                "CLUSTER ADD-REPLICA ID HOST:PORT",
            ),
            (
                vec!["cluster", "remove-replica"],
                "CLUSTER REMOVE-REPLICA ID",
            ),
            (vec!["cluster", "add-replica", "0", "h:1"], "ids start at 1"),
            (
                vec!["cluster", "add-replica", "four", "h:1"],
                "not a replica id",
            ),
            (vec!["cluster", "add-replica", "4", "h:0"], "not HOST:PORT"),
            (vec!["cluster", "add-replica", "4", &long], "not HOST:PORT"),
            (vec!["cluster", "remove-replica", &long], "not a replica id"),
            (vec!["cluster", "slots"], "not a Redis Cluster"),
            (vec!["cluster", "nodes"], "not a Redis Cluster"),
        ] {
            let error = parsed(&words).unwrap_err();
            assert!(error.starts_with("ERR "), "{words:?}: {error}");
            assert!(error.contains(expected), "{words:?}: {error}");
            assert!(
                error.len() < 200,
                "{words:?}: an error of {} bytes",
                error.len()
            );
        }
    }

    /// The words a keyspace request carries to the log, and its database.
    fn words_of(request: &Request) -> (u8, Vec<&[u8]>) {
        match request {
            Request::Run { queued, .. } | Request::EvalSha(queued) => {
                (queued.db, queued.args.iter().map(|a| &a[..]).collect())
            }
            other => panic!("a client request became {other:?}"),
        }
    }

    #[test]
    fn keyspace_commands_become_requests_of_the_words_sent() {
        for words in [
            &["get", "k"][..],
            &["SET", "k", "v", "NX", "PX", "30000"],
            &["del", "a", "b"],
            &["MSET", "a", "1", "b", "2"],
            &["incr", "n"],
            &["scan", "0", "match", "a*"],
        ] {
            let Ok(ClientCommand::Kv(request)) = parse(&args(words), 5) else {
                panic!("{words:?} was not a keyspace request");
            };
            let (db, sent) = words_of(&request);
            assert_eq!(db, 5);
            let expected: Vec<&[u8]> = words.iter().map(|w| w.as_bytes()).collect();
            assert_eq!(sent, expected);
        }
    }

    #[test]
    fn wrong_arity_and_unknown_commands_say_so() {
        for (words, says) in [
            (&["get"][..], "wrong number of arguments for 'get'"),
            (&["get", "a", "b"], "wrong number of arguments for 'get'"),
            (&["set", "k"], "wrong number of arguments for 'set'"),
            (
                &["mset", "a", "1", "b"],
                "wrong number of arguments for 'mset'",
            ),
            (&["del"], "wrong number of arguments for 'del'"),
            (&["mget"], "wrong number of arguments"),
            (&["set", "k", "v", "EX", "ten"], "not an integer"),
            (&["set", "k", "v", "sometimes"], "syntax error"),
            (&["flushx"], "unknown command 'flushx'"),
            (&["hello", "4"], "NOPROTO"),
            (&["select", "16"], "out of range"),
            (&["select", "x"], "not an integer"),
            (
                &["config", "set", "x"],
                "wrong number of arguments for 'config|set'",
            ),
            (&["config", "set", "x", "y", "z"], "ERR syntax error"),
            (&["config", "resetstat", "x"], "wrong number of arguments"),
            (&["config", "rewrite"], "unknown subcommand 'rewrite'"),
            (&["save", "x"], "wrong number of arguments for 'save'"),
            (&["bgsave", "now"], "ERR syntax error"),
            (&["bgsave", "schedule", "x"], "wrong number of arguments"),
            (&["lastsave", "x"], "wrong number of arguments"),
            (&["shutdown", "later"], "ERR syntax error"),
            (&["shutdown", "save", "nosave"], "ERR syntax error"),
            (&["shutdown", "abort", "now"], "ERR syntax error"),
            (&["dbsize", "x"], "wrong number of arguments"),
            (&["exec", "x"], "wrong number of arguments"),
            (&["watch"], "wrong number of arguments"),
            (&["client", "setname", "a b"], "cannot contain spaces"),
            (&["client", "kill"], "unknown subcommand"),
            (
                &["eval", "return 1"],
                "wrong number of arguments for 'eval'",
            ),
            (
                &["eval", "return 1", "-1"],
                "ERR Number of keys can't be negative",
            ),
            (&["eval", "return 1", "x"], "not an integer"),
            (
                &["eval", "return 1", "2", "a"],
                "can't be greater than number of args",
            ),
            (
                &["evalsha", "abc"],
                "wrong number of arguments for 'evalsha'",
            ),
            (&["evalsha", "abc", "0"], "NOSCRIPT"),
            (&["script", "flush", "now"], "only support SYNC|ASYNC"),
            (&["function", "load", "x"], "EVAL and EVALSHA are"),
        ] {
            let error = parsed(words).unwrap_err();
            assert!(error.contains(says), "{words:?} gave {error}");
            assert!(!error.contains('\n'));
        }
        assert!(parse(&[], 0).is_err());
    }

    #[test]
    fn size_limits_are_enforced() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        assert!(parsed(&["get", &long_key])
            .unwrap_err()
            .contains("keys are at most"));
        assert!(parsed(&["watch", &long_key]).is_err());
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        assert!(parsed(&["set", "k", &long_value])
            .unwrap_err()
            .contains("values are at most"));
        assert!(parsed(&["mset", "k", &long_value]).is_err());
    }

    #[test]
    fn connection_commands_answer_what_tools_expect() {
        assert_eq!(
            parsed(&["PING"]),
            Ok(ClientCommand::Constant(Frame::Simple("PONG")))
        );
        assert_eq!(
            parsed(&["command", "docs"]),
            Ok(ClientCommand::Constant(Frame::Array(vec![])))
        );
        assert_eq!(
            parsed(&["client", "setinfo", "lib-name", "x"]),
            Ok(ClientCommand::Constant(Frame::ok()))
        );
        assert_eq!(
            parsed(&["config", "get", "appendonly"]),
            Ok(ClientCommand::Constant(Frame::Map(vec![(
                Frame::bulk("appendonly"),
                Frame::bulk("yes")
            )])))
        );
        assert_eq!(
            parsed(&["config", "get", "nothing"]),
            Ok(ClientCommand::Constant(Frame::Map(vec![])))
        );
        assert_eq!(
            parsed(&["hello"]),
            Ok(ClientCommand::Hello {
                protocol: None,
                auth: None,
                name: None
            })
        );
        assert_eq!(
            parsed(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me"]),
            Ok(ClientCommand::Hello {
                protocol: Some(Protocol::Resp3),
                auth: Some((Bytes::from_static(b"default"), Bytes::from_static(b"pw"))),
                name: Some(Bytes::from_static(b"me"))
            })
        );
        assert_eq!(
            parsed(&["auth", "pw"]),
            Ok(ClientCommand::Auth {
                user: None,
                password: Bytes::from_static(b"pw")
            })
        );
        assert_eq!(
            parsed(&["AUTH", "default", "pw"]),
            Ok(ClientCommand::Auth {
                user: Some(Bytes::from_static(b"default")),
                password: Bytes::from_static(b"pw")
            })
        );
        assert!(parsed(&["auth"])
            .unwrap_err()
            .contains("wrong number of arguments"));
        assert!(parsed(&["auth", "a", "b", "c"])
            .unwrap_err()
            .contains("wrong number of arguments"));
        assert_eq!(parsed(&["select", "15"]), Ok(ClientCommand::Select(15)));
        assert_eq!(
            parsed(&["function", "flush"]),
            Ok(ClientCommand::Constant(Frame::ok()))
        );
        assert_eq!(parsed(&["multi"]), Ok(ClientCommand::Multi));
        assert_eq!(
            parsed(&["watch", "a", "b"]),
            Ok(ClientCommand::Watch(vec![b"a".to_vec(), b"b".to_vec()]))
        );
    }

    #[test]
    fn any_arguments_get_a_command_or_a_one_line_error() {
        let names: &[&[u8]] = &[
            b"GET",
            b"set",
            b"DEL",
            b"mget",
            b"MSET",
            b"exists",
            b"info",
            b"ping",
            b"echo",
            b"command",
            b"client",
            b"hello",
            b"config",
            b"select",
            b"dbsize",
            b"checksum",
            b"backup",
            b"quit",
            b"unlink",
            b"incrbyfloat",
            b"expire",
            b"getex",
            b"scan",
            b"copy",
            b"watch",
            b"setrange",
            b"shutdown",
            b"bgsave",
            b"get\x00",
            b"",
        ];
        let args: &[&[u8]] = &[
            b"k", b"v", b"", b"2", b"3", b"get", b"docs", b"*", b"\r\n", b"EX", b"NX", b"-1",
            b"db", b"1e400", b"count", b"persist",
        ];
        let mut rng = crate::fuzz::Rng(0xc0ff_ee00_1234_4321);
        for _ in 0..20_000 {
            let mut request = vec![Bytes::copy_from_slice(names[rng.below(names.len())])];
            for _ in 0..rng.below(6) {
                request.push(Bytes::from(rng.bytes_from(args, 3)));
            }
            if rng.below(50) == 0 {
                request.push(Bytes::from(vec![b'x'; MAX_VALUE_LEN + 1]));
            }
            match parse(&request, 0) {
                Err(message) => {
                    assert!(
                        !message.contains('\r') && !message.contains('\n'),
                        "{message:?}"
                    );
                    let kind = message.split(' ').next().unwrap_or("");
                    assert!(
                        !kind.is_empty() && kind.chars().all(|c| c.is_ascii_uppercase()),
                        "{message:?}"
                    );
                }
                Ok(ClientCommand::Kv(parsed)) => {
                    let (_, words) = words_of(&parsed);
                    let sent: Vec<&[u8]> = request.iter().map(|a| &a[..]).collect();
                    assert_eq!(words, sent);
                    assert!(words.iter().all(|w| w.len() <= MAX_VALUE_LEN));
                }
                Ok(_) => {}
            }
        }
    }

    /// CONFIG SET's answer, which is run time's, not a refusal at parse.
    fn config_set_answer(words: &[&str]) -> Frame {
        let mut all = vec!["config", "set"];
        all.extend_from_slice(words);
        match parsed(&all) {
            Ok(ClientCommand::Constant(frame)) => frame,
            other => panic!("{words:?} gave {other:?}"),
        }
    }

    #[test]
    fn config_set_accepts_only_what_is_so_here_and_refuses_in_redis_words() {
        assert_eq!(config_set_answer(&["appendonly", "YES"]), Frame::ok());
        assert_eq!(
            config_set_answer(&["appendfsync", "always", "save", ""]),
            Frame::ok()
        );
        assert_eq!(config_set_answer(&["maxmemory", "0mb"]), Frame::ok());
        for (words, says) in [
            (
                &["nosuch", "1"][..],
                "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'",
            ),
            (
                &["appendonly", "yes", "nosuch", "1"],
                "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'",
            ),
            (
                &["maxmemory", "bla"],
                "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - \
                 argument must be a memory value",
            ),
            (
                &["appendonly", "maybe"],
                "ERR CONFIG SET failed (possibly related to argument 'appendonly') - \
                 argument must be 'yes' or 'no'",
            ),
            (
                &["appendfsync", "sometimes"],
                "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - \
                 argument(s) must be one of the following: always, everysec, no",
            ),
            (
                &["lua-time-limit", "ten"],
                "ERR CONFIG SET failed (possibly related to argument 'busy-reply-threshold') - \
                 argument couldn't be parsed into an integer",
            ),
            (
                &["appendonly", "yes", "appendonly", "yes"],
                "ERR CONFIG SET failed (possibly related to argument 'appendonly') - \
                 duplicate parameter",
            ),
            (
                &["databases", "16", "nosuch", "1"],
                "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'",
            ),
            (
                &["databases", "16"],
                "ERR CONFIG SET failed (possibly related to argument 'databases') - \
                 can't set immutable config",
            ),
        ] {
            assert_eq!(config_set_answer(words), Frame::error(says), "{words:?}");
        }
        // A value that reads well but is not this server's is refused, saying why.
        for words in [
            &["appendonly", "no"][..],
            &["maxmemory", "100mb"],
            &["save", "900 1"],
            &["lua-time-limit", "10"],
        ] {
            let Frame::Error(refusal) = config_set_answer(words) else {
                panic!("{words:?} was accepted");
            };
            assert!(
                refusal.starts_with("ERR CONFIG SET failed (possibly related to argument '"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn save_and_shutdown_read_their_options_as_redis_does() {
        assert_eq!(parsed(&["SAVE"]), Ok(ClientCommand::Save));
        assert_eq!(parsed(&["bgsave"]), Ok(ClientCommand::BgSave));
        assert_eq!(parsed(&["bgsave", "SCHEDULE"]), Ok(ClientCommand::BgSave));
        assert_eq!(parsed(&["lastsave"]), Ok(ClientCommand::LastSave));
        assert_eq!(
            parsed(&["config", "RESETSTAT"]),
            Ok(ClientCommand::ResetStats)
        );
        for words in [
            &["shutdown"][..],
            &["SHUTDOWN", "NOSAVE"],
            &["shutdown", "save", "now", "force"],
        ] {
            assert_eq!(parsed(words), Ok(ClientCommand::Shutdown), "{words:?}");
        }
        assert_eq!(
            parsed(&["shutdown", "abort"]),
            Ok(ClientCommand::Constant(Frame::error(
                "ERR No shutdown in progress."
            )))
        );
    }

    #[test]
    fn memory_values_read_as_redis_reads_them() {
        assert_eq!(memory_bytes("0"), Some(0));
        assert_eq!(memory_bytes("1k"), Some(1000));
        assert_eq!(memory_bytes("1kb"), Some(1024));
        assert_eq!(memory_bytes("2gb"), Some(2 << 30));
        assert_eq!(memory_bytes(""), None);
        assert_eq!(memory_bytes("bla"), None);
        assert_eq!(memory_bytes("-1"), None);
        assert_eq!(memory_bytes("99999999999999999999gb"), None);
    }

    #[test]
    fn config_patterns_match_like_redis() {
        assert!(glob_matches(b"*", b"save"));
        assert!(glob_matches(b"append*", b"appendonly"));
        assert!(glob_matches(b"SAVE", b"save"));
        assert!(!glob_matches(b"sav", b"save"));
        assert!(glob_matches(b"*o*ly", b"appendonly"));
        assert!(!glob_matches(b"*x*", b"appendonly"));
        let many_stars = "*a".repeat(5000) + "b";
        assert!(!glob_matches(many_stars.as_bytes(), b"appendonly"));
    }

    /// Property tests (proptest): any request words, real command names or
    /// not, of any arity and size.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config(cases: u32) -> ProptestConfig {
            crate::fuzz::proptest_config(cases, 0x5e5b_0002)
        }

        const NAMES: &[&str] = &[
            "get", "mget", "exists", "del", "unlink", "set", "mset", "ping", "echo", "info",
            "dbsize", "checksum", "quit", "select", "command", "client", "hello", "config",
        ];

        /// Words that mean something as an argument somewhere.
        const WORDS: &[&str] = &[
            "0", "1", "2", "3", "-1", "", "docs", "count", "info", "list", "get", "set", "setname",
            "setinfo", "getname", "id", "reply", "*", "save", "append*", "EX", "NX", "\r\n",
            "raft", "keyspace",
        ];

        /// A command name: a real one in any letter case, perhaps with a
        /// byte too many, or anything at all.
        fn name() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                4 => (prop::sample::select(NAMES), any::<u64>()).prop_map(|(name, case)| {
                    name.bytes()
                        .enumerate()
                        .map(|(i, b)| if case >> (i % 64) & 1 == 1 { b.to_ascii_uppercase() } else { b })
                        .collect()
                }),
                1 => (prop::sample::select(NAMES), any::<u8>())
                    .prop_map(|(name, extra)| [name.as_bytes(), &[extra]].concat()),
                1 => prop::collection::vec(any::<u8>(), 0..16),
            ]
        }

        /// An argument: a meaningful word, any bytes, or a key or value at
        /// (or one byte over) its size limit.
        fn arg() -> impl Strategy<Value = Vec<u8>> {
            let limits = prop_oneof![
                Just(MAX_KEY_LEN),
                Just(MAX_KEY_LEN + 1),
                Just(MAX_VALUE_LEN),
                Just(MAX_VALUE_LEN + 1),
            ];
            prop_oneof![
                8 => prop::sample::select(WORDS).prop_map(|w| w.as_bytes().to_vec()),
                8 => prop::collection::vec(any::<u8>(), 0..24),
                1 => (limits, any::<u8>()).prop_map(|(len, byte)| vec![byte; len]),
            ]
        }

        /// A key-value command of the right arity whose keys and values are
        /// often at, or one byte over, a size limit.
        fn sized_kv_request() -> impl Strategy<Value = Vec<Bytes>> {
            let sizes = prop_oneof![
                0usize..4,
                Just(MAX_KEY_LEN),
                Just(MAX_KEY_LEN + 1),
                Just(MAX_VALUE_LEN),
                Just(MAX_VALUE_LEN + 1),
            ];
            let names = prop::sample::select(
                &["get", "mget", "exists", "del", "unlink", "set", "mset"][..],
            );
            (names, prop::collection::vec((sizes, any::<u8>()), 1..5)).prop_map(|(name, sizes)| {
                let arity = match name {
                    "get" => 1,
                    "set" => 2,
                    "mset" => (sizes.len() & !1).max(2),
                    _ => sizes.len(),
                };
                let mut rest: Vec<Vec<u8>> =
                    sizes.iter().map(|&(len, byte)| vec![byte; len]).collect();
                rest.resize(arity, b"k".to_vec());
                std::iter::once(name.as_bytes().to_vec())
                    .chain(rest)
                    .map(Bytes::from)
                    .collect()
            })
        }

        fn request() -> impl Strategy<Value = Vec<Bytes>> {
            let any_words =
                (name(), prop::collection::vec(arg(), 0..8)).prop_map(|(name, rest)| {
                    std::iter::once(name).chain(rest).map(Bytes::from).collect()
                });
            prop_oneof![3 => any_words, 1 => sized_kv_request()]
        }

        /// Whether a key-value command's words are well formed and within the
        /// limits: what the parser must accept exactly (`None`: the plain
        /// forms do not decide it).
        fn kv_acceptable(name: &str, rest: &[Bytes]) -> Option<bool> {
            let key_ok = |k: &Bytes| k.len() <= MAX_KEY_LEN;
            let value_ok = |v: &Bytes| v.len() <= MAX_VALUE_LEN;
            Some(match name {
                "get" => rest.len() == 1 && key_ok(&rest[0]),
                "mget" | "exists" | "del" | "unlink" => !rest.is_empty() && rest.iter().all(key_ok),
                "set" if rest.len() <= 2 => {
                    rest.len() == 2 && key_ok(&rest[0]) && value_ok(&rest[1])
                }
                "mset" => {
                    !rest.is_empty()
                        && rest.len().is_multiple_of(2)
                        && rest.chunks(2).all(|p| key_ok(&p[0]) && value_ok(&p[1]))
                }
                _ => return None,
            })
        }

        proptest! {
            #![proptest_config(config(1000))]

            /// Any words: never a panic; an error is one line that starts with
            /// an upper-case kind; a key-value request is exactly the words
            /// sent, within the size limits, of the kind the name says; and a
            /// well-formed key-value command within the limits is never refused.
            #[test]
            fn prop_any_request_is_understood_or_refused_in_one_line(args in request()) {
                let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
                let rest = &args[1..];
                let parsed = parse(&args, 0);
                if let Some(acceptable) = kv_acceptable(&name, rest) {
                    prop_assert_eq!(parsed.is_ok(), acceptable, "{:?}", parsed);
                }
                match parsed {
                    Err(message) => {
                        prop_assert!(
                            !message.contains('\r') && !message.contains('\n'),
                            "{:?}", message
                        );
                        let (kind, text) = message.split_once(' ').unwrap_or((&message, ""));
                        prop_assert!(
                            !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_uppercase()),
                            "{:?}", message
                        );
                        prop_assert!(!text.trim().is_empty(), "{:?}", message);
                    }
                    Ok(ClientCommand::Kv(request)) => {
                        let (_, words) = words_of(&request);
                        let sent: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                        prop_assert!(words == sent, "the request is not the words sent");
                        prop_assert!(words[1..].iter().all(|w| w.len() <= MAX_VALUE_LEN));
                    }
                    Ok(_) => prop_assert!(
                        !matches!(kv_acceptable(&name, rest), Some(true)),
                        "{:?} is a key-value command", name
                    ),
                }
            }
        }
    }
}
