//! What `redis.call` may run, and with which answer when it may not.
//!
//! The keyspace commands run through the [`Host`], parsed by the same
//! `Command::parse` as anywhere else. PING, ECHO, TIME and SELECT are
//! answered here (TIME with the entry's time, SELECT for the rest of the
//! script only). Commands Redis refuses inside scripts, and this server's
//! commands whose answer depends on the replica that runs them (INFO,
//! CHECKSUM, CLIENT...), are refused: a script's writes may depend only on
//! the log.

use super::Host;
use crate::machine::parse::{parse_db, Command, Refusal};
use crate::machine::Reply;

/// Redis's `noscript` commands, its blocking ones, and this server's
/// commands that read the replica rather than the state.
const NOT_ALLOWED: &[&str] = &[
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "script",
    "function",
    "fcall",
    "fcall_ro",
    "blpop",
    "brpop",
    "brpoplpush",
    "blmove",
    "blmpop",
    "bzpopmin",
    "bzpopmax",
    "bzmpop",
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "unsubscribe",
    "punsubscribe",
    "sunsubscribe",
    "monitor",
    "sync",
    "psync",
    "replconf",
    "hello",
    "auth",
    "reset",
    "quit",
    "client",
    "cluster",
    "config",
    "info",
    "checksum",
    "command",
    "debug",
    "save",
    "bgsave",
    "shutdown",
    "wait",
];

fn refused(message: &str) -> Reply {
    Reply::Error(message.to_string())
}

fn wrong_arity() -> Reply {
    refused("ERR Wrong number of args calling Redis command from script")
}

/// The script's side of its calls: the database it has selected, whether it
/// may write, and how many calls it made (which seeds RANDOMKEY).
pub struct Calls {
    pub db: u8,
    pub read_only: bool,
    made: u64,
}

impl Calls {
    pub fn new(db: u8, read_only: bool) -> Calls {
        Calls {
            db,
            read_only,
            made: 0,
        }
    }

    /// Runs one call's words. `Err` is a storage failure.
    pub fn run(&mut self, host: &mut impl Host, words: &[Vec<u8>]) -> Result<Reply, String> {
        self.made += 1;
        let name = String::from_utf8_lossy(&words[0]).to_ascii_lowercase();
        let rest = &words[1..];
        Ok(match name.as_str() {
            "ping" => match rest {
                [] => Reply::Status("PONG".into()),
                [message] => Reply::bulk(message.clone()),
                _ => wrong_arity(),
            },
            "echo" => match rest {
                [message] => Reply::bulk(message.clone()),
                _ => wrong_arity(),
            },
            "time" if rest.is_empty() => {
                let now = host.now();
                Reply::Array(vec![
                    Reply::bulk((now / 1000).to_string()),
                    Reply::bulk((now % 1000 * 1000).to_string()),
                ])
            }
            "time" => wrong_arity(),
            "select" => match rest {
                [db] => match parse_db(db) {
                    Ok(db) => {
                        self.db = db;
                        Reply::Ok
                    }
                    Err(message) => Reply::Error(message),
                },
                _ => wrong_arity(),
            },
            name if NOT_ALLOWED.contains(&name) => {
                refused("ERR This Redis command is not allowed from script")
            }
            _ => return self.keyspace(host, words),
        })
    }

    fn keyspace(&mut self, host: &mut impl Host, words: &[Vec<u8>]) -> Result<Reply, String> {
        let command = match Command::parse_checked(words, host.format()) {
            None => return Ok(refused("ERR Unknown Redis command called from script")),
            Some(Err(Refusal::WrongArity(_))) => return Ok(wrong_arity()),
            Some(Err(Refusal::Invalid(message))) => return Ok(Reply::Error(message)),
            Some(Ok(command)) => command,
        };
        if self.read_only && !command.is_read() {
            return Ok(refused(
                "ERR Write commands are not allowed from read-only scripts.",
            ));
        }
        match command {
            Command::RandomKey => host.random_key(self.db, self.made),
            command => host.run(self.db, command),
        }
    }
}
