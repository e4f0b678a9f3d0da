//! What each Redis command means here: a pure function from a request's words
//! to a [`ClientCommand`], unit-tested without a server.
//!
//! The key-value commands become the same [`Request`]s the prompt makes. The
//! rest is what redis-cli, redis-benchmark and client libraries send when they
//! connect (`COMMAND`, `CLIENT`, `HELLO`, `CONFIG GET`, `SELECT`), answered so
//! they work unchanged; anything else is refused with a Redis-style error.

use bytes::Bytes;

use super::resp::Frame;
use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::kv::Request;

/// A request from a client, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// GET, MGET, EXISTS, SET, MSET, DEL: through Raft, as at the prompt.
    Kv(Request),
    /// INFO, with the section asked for (lower case), if any.
    Info(Option<String>),
    /// DBSIZE: the key count this replica has applied (not a linearizable read).
    DbSize,
    /// CHECKSUM: as at the prompt, the digest of the whole state and its index.
    Checksum,
    /// QUIT: answer OK, then close.
    Quit,
    /// A command whose answer does not depend on the store.
    Constant(Frame),
}

/// Understands one request. `Err` holds the Redis error to send back; the
/// connection stays usable.
pub fn parse(args: &[Bytes]) -> Result<ClientCommand, String> {
    let Some(name) = args.first() else {
        return Err("ERR empty command".into());
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = &args[1..];
    let wrong_arity = || format!("ERR wrong number of arguments for '{name}' command");
    let command = match name.as_str() {
        "get" => match rest {
            [key] => ClientCommand::Kv(Request::Get(key_of(key)?)),
            _ => return Err(wrong_arity()),
        },
        "mget" | "exists" | "del" | "unlink" => {
            if rest.is_empty() {
                return Err(wrong_arity());
            }
            let keys = rest.iter().map(key_of).collect::<Result<Vec<_>, _>>()?;
            ClientCommand::Kv(match name.as_str() {
                "mget" => Request::GetMany(keys),
                "exists" => Request::CountExisting(keys),
                _ => Request::Delete(keys),
            })
        }
        "set" => match rest {
            [key, value] => ClientCommand::Kv(Request::Put(key_of(key)?, value_of(value)?)),
            [_, _, option, ..] => {
                return Err(format!(
                    "ERR SET option '{}' is not supported here; use the plain form SET key value",
                    shown(option)
                ))
            }
            _ => return Err(wrong_arity()),
        },
        "mset" => {
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(wrong_arity());
            }
            let pairs = rest
                .chunks(2)
                .map(|pair| Ok((key_of(&pair[0])?, value_of(&pair[1])?)))
                .collect::<Result<Vec<_>, String>>()?;
            ClientCommand::Kv(Request::PutMany(pairs))
        }
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
        "dbsize" if rest.is_empty() => ClientCommand::DbSize,
        "checksum" if rest.is_empty() => ClientCommand::Checksum,
        "quit" => ClientCommand::Quit,
        "select" => match rest {
            [db] if db.as_ref() == b"0" => ClientCommand::Constant(Frame::ok()),
            [_] => return Err("ERR DB index is out of range (there is only database 0)".into()),
            _ => return Err(wrong_arity()),
        },
        "command" => command_command(rest)?,
        "client" => client_command(rest)?,
        "hello" => hello_command(rest)?,
        "config" => config_command(rest)?,
        "dbsize" | "checksum" => return Err(wrong_arity()),
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

fn key_of(key: &Bytes) -> Result<Vec<u8>, String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "ERR the key is {} bytes; keys are at most {MAX_KEY_LEN} bytes",
            key.len()
        ));
    }
    Ok(key.to_vec())
}

fn value_of(value: &Bytes) -> Result<Vec<u8>, String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "ERR the value is {} bytes; values are at most {MAX_VALUE_LEN} bytes",
            value.len()
        ));
    }
    Ok(value.to_vec())
}

/// An argument as it may appear inside an error line: short, printable.
fn shown(arg: &Bytes) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(40)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
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

/// `CLIENT SETNAME` and `CLIENT SETINFO` are sent by libraries at connect.
fn client_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    Ok(ClientCommand::Constant(match sub.as_deref() {
        Some("setname") | Some("setinfo") | Some("reply") | Some("no-evict") | Some("no-touch") => {
            Frame::ok()
        }
        Some("getname") => Frame::Bulk(None),
        Some("id") => Frame::Integer(0),
        _ => return Err("ERR this CLIENT subcommand is not supported here".into()),
    }))
}

/// `HELLO [2]` answers who we are; RESP3 is refused the way Redis refuses an
/// unknown protocol version, so clients fall back to RESP2.
fn hello_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    if let Some(version) = rest.first() {
        if version.as_ref() != b"2" {
            return Err("NOPROTO this server speaks RESP2 only".into());
        }
    }
    let field = |name: &'static str, value: Frame| [Frame::bulk(name), value];
    Ok(ClientCommand::Constant(Frame::Array(
        [
            field("server", Frame::bulk("example-ondisk")),
            field("version", Frame::bulk(env!("CARGO_PKG_VERSION"))),
            field("proto", Frame::Integer(2)),
            field("id", Frame::Integer(0)),
            field("mode", Frame::bulk("standalone")),
            field("role", Frame::bulk("master")),
            field("modules", Frame::Array(Vec::new())),
        ]
        .into_iter()
        .flatten()
        .collect(),
    )))
}

/// `CONFIG GET`: redis-benchmark reads `save` and `appendonly` to describe the
/// server. Every write here is fsynced before it is acknowledged, which is what
/// `appendonly yes` means to a Redis user; nothing else is configurable.
fn config_command(rest: &[Bytes]) -> Result<ClientCommand, String> {
    let sub = rest
        .first()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    match (sub.as_deref(), rest.len()) {
        (Some("get"), 2..) => {
            let mut pairs = Vec::new();
            for pattern in &rest[1..] {
                for (name, value) in [
                    ("save", ""),
                    ("appendonly", "yes"),
                    ("appendfsync", "always"),
                ] {
                    if glob_matches(pattern, name.as_bytes()) {
                        pairs.push(Frame::bulk(name));
                        pairs.push(Frame::bulk(value));
                    }
                }
            }
            Ok(ClientCommand::Constant(Frame::Array(pairs)))
        }
        (Some("get"), _) => Err("ERR wrong number of arguments for 'config|get' command".into()),
        _ => Err("ERR only CONFIG GET is supported here".into()),
    }
}

/// Redis's pattern match for the `*` wildcard (and exact names), without
/// case. Greedy with one backtrack point, so a pattern of many stars costs
/// time in proportion to its length, not exponential in it.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            last_star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&name[n]) {
            p += 1;
            n += 1;
        } else if let Some((star, matched)) = last_star {
            // Let the last star swallow one more byte and try again from there.
            p = star + 1;
            n = matched + 1;
            last_star = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn parsed(words: &[&str]) -> Result<ClientCommand, String> {
        parse(&args(words))
    }

    #[test]
    fn key_value_commands_become_requests() {
        assert_eq!(
            parsed(&["get", "k"]),
            Ok(ClientCommand::Kv(Request::Get(b"k".to_vec())))
        );
        assert_eq!(
            parsed(&["SET", "k", "v"]),
            Ok(ClientCommand::Kv(Request::Put(
                b"k".to_vec(),
                b"v".to_vec()
            )))
        );
        assert_eq!(
            parsed(&["del", "a", "b"]),
            Ok(ClientCommand::Kv(Request::Delete(vec![
                b"a".to_vec(),
                b"b".to_vec()
            ])))
        );
        assert_eq!(
            parsed(&["MSET", "a", "1", "b", "2"]),
            Ok(ClientCommand::Kv(Request::PutMany(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ])))
        );
        assert_eq!(
            parsed(&["exists", "a", "a"]),
            Ok(ClientCommand::Kv(Request::CountExisting(vec![
                b"a".to_vec(),
                b"a".to_vec()
            ])))
        );
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
            (
                &["set", "k", "v", "EX", "10"],
                "SET option 'EX' is not supported",
            ),
            (&["flushall"], "unknown command 'flushall'"),
            (&["hello", "3"], "NOPROTO"),
            (&["select", "1"], "out of range"),
            (&["config", "set", "x", "y"], "only CONFIG GET"),
            (&["dbsize", "x"], "wrong number of arguments"),
        ] {
            let error = parsed(words).unwrap_err();
            assert!(error.contains(says), "{words:?} gave {error}");
            assert!(!error.contains('\n'));
        }
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn size_limits_are_enforced() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        assert!(parsed(&["get", &long_key])
            .unwrap_err()
            .contains("keys are at most"));
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
            Ok(ClientCommand::Constant(Frame::Array(vec![
                Frame::bulk("appendonly"),
                Frame::bulk("yes")
            ])))
        );
        assert_eq!(
            parsed(&["config", "get", "nothing"]),
            Ok(ClientCommand::Constant(Frame::Array(vec![])))
        );
        assert!(matches!(
            parsed(&["hello"]),
            Ok(ClientCommand::Constant(Frame::Array(_)))
        ));
        assert!(matches!(
            parsed(&["hello", "2"]),
            Ok(ClientCommand::Constant(Frame::Array(_)))
        ));
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
            b"quit",
            b"unlink",
            b"get\x00",
            b"",
        ];
        let args: &[&[u8]] = &[
            b"k", b"v", b"", b"2", b"3", b"get", b"docs", b"*", b"\r\n", b"EX",
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
            match parse(&request) {
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
                Ok(ClientCommand::Kv(request)) => {
                    let (keys, values): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = match &request {
                        Request::Get(key) => (vec![key], vec![]),
                        Request::Put(key, value) => (vec![key], vec![value]),
                        Request::GetMany(keys)
                        | Request::CountExisting(keys)
                        | Request::Delete(keys) => (keys.iter().collect(), vec![]),
                        Request::PutMany(pairs) => pairs.iter().map(|(k, v)| (k, v)).unzip(),
                    };
                    assert!(keys.iter().all(|k| k.len() <= MAX_KEY_LEN));
                    assert!(values.iter().all(|v| v.len() <= MAX_VALUE_LEN));
                }
                Ok(_) => {}
            }
        }
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
}
