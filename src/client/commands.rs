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
use crate::membership::MembershipChange;

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
    /// CLUSTER ADD-REPLICA / REMOVE-REPLICA: as at the prompt.
    Membership(MembershipChange),
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
        "cluster" => cluster_command(rest)?,
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

/// `CLUSTER ADD-REPLICA ID HOST:PORT` and `CLUSTER REMOVE-REPLICA ID`: the
/// prompt's membership commands. This is not a Redis Cluster, so the Redis
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
        (b"add-replica", _) => {
            return Err("ERR usage: CLUSTER ADD-REPLICA ID HOST:PORT".into());
        }
        (b"remove-replica", _) => return Err("ERR usage: CLUSTER REMOVE-REPLICA ID".into()),
        _ => {
            return Err(format!(
                "ERR this is not a Redis Cluster: CLUSTER '{}' is not supported; \
                 CLUSTER ADD-REPLICA ID HOST:PORT and CLUSTER REMOVE-REPLICA ID are",
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

        type Words<'a> = Vec<&'a [u8]>;

        /// The keys, the values, and both in the order they were sent.
        fn contents(request: &Request) -> (Words<'_>, Words<'_>, Words<'_>) {
            let mut keys = Vec::new();
            let mut values = Vec::new();
            let mut in_order = Vec::new();
            match request {
                Request::Get(key) => keys.push(&key[..]),
                Request::Put(key, value) => {
                    keys.push(&key[..]);
                    values.push(&value[..]);
                }
                Request::GetMany(list) | Request::CountExisting(list) | Request::Delete(list) => {
                    keys.extend(list.iter().map(|k| &k[..]))
                }
                Request::PutMany(pairs) => {
                    for (key, value) in pairs {
                        keys.push(&key[..]);
                        values.push(&value[..]);
                    }
                }
            }
            match request {
                Request::Put(key, value) => in_order.extend([&key[..], &value[..]]),
                Request::PutMany(pairs) => {
                    for (key, value) in pairs {
                        in_order.extend([&key[..], &value[..]]);
                    }
                }
                _ => in_order.extend(keys.iter().copied()),
            }
            (keys, values, in_order)
        }

        /// Whether a key-value command's words are well formed and within the
        /// limits: what the parser must accept exactly.
        fn kv_acceptable(name: &str, rest: &[Bytes]) -> Option<bool> {
            let key_ok = |k: &Bytes| k.len() <= MAX_KEY_LEN;
            let value_ok = |v: &Bytes| v.len() <= MAX_VALUE_LEN;
            Some(match name {
                "get" => rest.len() == 1 && key_ok(&rest[0]),
                "mget" | "exists" | "del" | "unlink" => !rest.is_empty() && rest.iter().all(key_ok),
                "set" => rest.len() == 2 && key_ok(&rest[0]) && value_ok(&rest[1]),
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
                let parsed = parse(&args);
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
                        let expected = match name.as_str() {
                            "get" => matches!(request, Request::Get(_)),
                            "mget" => matches!(request, Request::GetMany(_)),
                            "exists" => matches!(request, Request::CountExisting(_)),
                            "del" | "unlink" => matches!(request, Request::Delete(_)),
                            "set" => matches!(request, Request::Put(..)),
                            "mset" => matches!(request, Request::PutMany(_)),
                            _ => false,
                        };
                        prop_assert!(expected, "{:?} made {:?}", name, request);
                        let (keys, values, in_order) = contents(&request);
                        prop_assert!(keys.iter().all(|k| k.len() <= MAX_KEY_LEN));
                        prop_assert!(values.iter().all(|v| v.len() <= MAX_VALUE_LEN));
                        let sent: Vec<&[u8]> = rest.iter().map(|a| &a[..]).collect();
                        prop_assert!(in_order == sent, "the request is not the words sent");
                    }
                    Ok(_) => prop_assert!(
                        kv_acceptable(&name, rest).is_none(),
                        "{:?} is a key-value command", name
                    ),
                }
            }
        }
    }
}
