//! What each Redis command means here: a pure function from a request's words
//! to a [`ClientCommand`], unit-tested without a server.
//!
//! The keyspace commands (GET, SET, INCR, EXPIRE, SCAN, ...) become the same
//! [`Request`]s the prompt makes, checked by `machine::parse`. The rest is
//! connection state (HELLO, SELECT, MULTI/EXEC, WATCH, CLIENT) that the
//! connection keeps, or what redis-cli, redis-benchmark and client libraries
//! send when they connect (`COMMAND`, `CONFIG GET`), answered so they work
//! unchanged; anything else is refused with a Redis-style error.

use bytes::Bytes;

use super::resp::{Frame, Protocol};
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
    "AUTH", "BACKUP", "CHECKSUM", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DISCARD", "ECHO", "EXEC",
    "FUNCTION", "HELLO", "INFO", "MULTI", "PING", "QUIT", "SELECT", "TIME", "UNWATCH", "WATCH",
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
        "checksum" | "backup" | "multi" | "exec" | "discard" | "unwatch" | "watch" | "time" => {
            return Err(wrong_arity())
        }
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
                    ("databases", "16"),
                ] {
                    if glob_matches(pattern, name.as_bytes()) {
                        pairs.push((Frame::bulk(name), Frame::bulk(value)));
                    }
                }
            }
            Ok(ClientCommand::Constant(Frame::Map(pairs)))
        }
        (Some("get"), _) => Err("ERR wrong number of arguments for 'config|get' command".into()),
        _ => Err("ERR only CONFIG GET is supported here".into()),
    }
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
            (&["config", "set", "x", "y"], "only CONFIG GET"),
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
