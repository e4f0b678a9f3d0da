//! The script cache: SCRIPT LOAD, EXISTS and FLUSH, and EVALSHA's lookup.
//!
//! As in Redis, the cache belongs to the process: it is shared by every
//! connection and the prompt, filled by SCRIPT LOAD and by EVAL, and lost on
//! restart. It is not replicated state and never needs to be: a log entry
//! always carries a script's body, so every replica can run it whatever its
//! own cache holds. EVALSHA is turned into EVAL where it is received
//! ([`ScriptCache::resolve`]), before anything is proposed; inside MULTI,
//! when it is queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::command::{Bytes, Queued};
use crate::machine::parse::{parse_numkeys, shown};
use crate::machine::script::{compile_check, sha1_hex};
use crate::machine::Reply;

/// EVALSHA's answer for a script this process does not hold (Redis's words).
pub const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// `SCRIPT ...`, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptCommand {
    Load(Vec<u8>),
    Exists(Vec<Vec<u8>>),
    Flush,
    /// Scripts here are bounded (an instruction budget counted the same on
    /// every replica), so there is never one to kill.
    Kill,
}

impl ScriptCommand {
    /// Understands the words after `SCRIPT`.
    pub fn parse(rest: &[impl AsRef<[u8]>]) -> Result<ScriptCommand, String> {
        let Some(sub) = rest.first() else {
            return Err("ERR wrong number of arguments for 'script' command".into());
        };
        let sub = sub.as_ref().to_ascii_lowercase();
        let words = &rest[1..];
        let arity = || {
            Err(format!(
                "ERR wrong number of arguments for 'script|{}' command",
                shown(&sub)
            ))
        };
        Ok(match (sub.as_slice(), words.len()) {
            (b"load", 1) => ScriptCommand::Load(words[0].as_ref().to_vec()),
            (b"exists", 1..) => {
                ScriptCommand::Exists(words.iter().map(|w| w.as_ref().to_vec()).collect())
            }
            (b"flush", 0) => ScriptCommand::Flush,
            (b"flush", 1)
                if matches!(
                    words[0].as_ref().to_ascii_lowercase().as_slice(),
                    b"sync" | b"async"
                ) =>
            {
                ScriptCommand::Flush
            }
            (b"flush", _) => return Err("ERR SCRIPT FLUSH only support SYNC|ASYNC option".into()),
            (b"kill", 0) => ScriptCommand::Kill,
            (b"load" | b"exists" | b"kill", _) => return arity(),
            (b"debug", _) => {
                return Err(
                    "ERR SCRIPT DEBUG is not supported here (the debugger would stop \
                            every replica)"
                        .into(),
                )
            }
            _ => {
                return Err(format!(
                    "ERR unknown subcommand '{}'. Try SCRIPT HELP.",
                    shown(&sub)
                ))
            }
        })
    }
}

/// EVALSHA's words, checked as far as they can be without the script, in
/// Redis's order: the number of words, a SHA1 of the wrong length, numkeys.
pub fn check_evalsha(name: &str, args: &[impl AsRef<[u8]>]) -> Result<(), String> {
    if args.len() < 3 {
        return Err(format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
    if args[1].as_ref().len() != 40 {
        return Err(NOSCRIPT.into());
    }
    parse_numkeys(&args[2..]).map(|_| ())
}

/// Scripts by their SHA1 (lower-case hex).
#[derive(Default)]
pub struct ScriptCache {
    scripts: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl ScriptCache {
    fn scripts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        // A panic elsewhere cannot leave the map half-changed: every change
        // is one insert or one clear.
        self.scripts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a SCRIPT subcommand.
    pub fn answer(&self, command: ScriptCommand) -> Reply {
        match command {
            ScriptCommand::Load(body) => match self.remember(&body) {
                Ok(sha) => Reply::bulk(sha),
                Err(error) => Reply::Error(error),
            },
            ScriptCommand::Exists(shas) => {
                let scripts = self.scripts();
                Reply::Array(
                    shas.iter()
                        .map(|sha| {
                            let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                            Reply::Int(scripts.contains_key(&sha) as i64)
                        })
                        .collect(),
                )
            }
            ScriptCommand::Flush => {
                self.scripts().clear();
                Reply::Ok
            }
            ScriptCommand::Kill => {
                Reply::Error("NOTBUSY No scripts in execution right now.".into())
            }
        }
    }

    /// Adds a script (SCRIPT LOAD, or an EVAL seen for the first time) if it
    /// compiles; its SHA1, or Redis's compile error.
    pub fn remember(&self, body: &[u8]) -> Result<String, String> {
        let sha = sha1_hex(body);
        if self.scripts().contains_key(&sha) {
            return Ok(sha);
        }
        // Compiled outside the lock: a large script takes a moment.
        compile_check(body)?;
        self.scripts().insert(sha.clone(), Arc::new(body.to_vec()));
        Ok(sha)
    }

    /// EVALSHA's words as the EVAL they stand for (the script's body in place
    /// of its SHA1); Redis's NOSCRIPT if it is not here.
    pub fn resolve(&self, queued: &Queued) -> Result<Queued, String> {
        let [name, sha, rest @ ..] = &queued.args[..] else {
            return Err(NOSCRIPT.into());
        };
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        let Some(body) = self.scripts().get(&sha).cloned() else {
            return Err(NOSCRIPT.into());
        };
        let eval: &[u8] = if name.eq_ignore_ascii_case(b"evalsha_ro") {
            b"EVAL_RO"
        } else {
            b"EVAL"
        };
        let mut args = Vec::with_capacity(queued.args.len());
        args.push(Bytes(eval.to_vec()));
        args.push(Bytes(body.to_vec()));
        args.extend(rest.iter().cloned());
        Ok(Queued {
            db: queued.db,
            args,
        })
    }

    /// Scripts held, and the bytes of their bodies (for INFO).
    pub fn size(&self) -> (usize, usize) {
        let scripts = self.scripts();
        (scripts.len(), scripts.values().map(|body| body.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Bytes;

    fn evalsha(words: &[&str]) -> Queued {
        Queued {
            db: 0,
            args: words.iter().map(|w| Bytes::from(*w)).collect(),
        }
    }

    #[test]
    fn load_then_evalsha_becomes_eval_with_the_body() {
        let cache = ScriptCache::default();
        let sha = cache
            .remember(b"return redis.call('get', KEYS[1])")
            .unwrap();
        assert_eq!(sha, "4e6d8fc8bb01276962cce5371fa795a7763657ae");
        let upper = sha.to_ascii_uppercase();
        let Ok(queued) = cache.resolve(&evalsha(&["EVALSHA", &upper, "1", "k"])) else {
            panic!("not resolved");
        };
        let words: Vec<&[u8]> = queued.args.iter().map(|a| &a[..]).collect();
        assert_eq!(
            words,
            [
                &b"EVAL"[..],
                b"return redis.call('get', KEYS[1])",
                b"1",
                b"k"
            ]
        );
        assert_eq!(
            cache.answer(ScriptCommand::Exists(vec![
                sha.into_bytes(),
                b"nope".to_vec()
            ])),
            Reply::Array(vec![Reply::Int(1), Reply::Int(0)])
        );
        assert_eq!(cache.answer(ScriptCommand::Flush), Reply::Ok);
        assert_eq!(
            cache
                .resolve(&evalsha(&["evalsha", &upper, "1", "k"]))
                .unwrap_err(),
            NOSCRIPT
        );
    }

    #[test]
    fn a_script_that_does_not_compile_is_not_kept() {
        let cache = ScriptCache::default();
        let error = cache.remember(b"return 1 +").unwrap_err();
        assert!(error.starts_with("ERR Error compiling script"), "{error}");
        assert_eq!(cache.size(), (0, 0));
        let error = cache.remember(b"#!perl\nreturn 1").unwrap_err();
        assert!(error.contains("Unexpected engine"), "{error}");
    }

    #[test]
    fn script_subcommands_are_read_as_redis_reads_them() {
        for (words, expected) in [
            (
                &["load", "return 1"][..],
                Ok(ScriptCommand::Load(b"return 1".to_vec())),
            ),
            (&["FLUSH", "async"], Ok(ScriptCommand::Flush)),
            (&["kill"], Ok(ScriptCommand::Kill)),
            (
                &["flush", "now"],
                Err("ERR SCRIPT FLUSH only support SYNC|ASYNC option".to_string()),
            ),
            (
                &["exists"],
                Err("ERR wrong number of arguments for 'script|exists' command".to_string()),
            ),
            (
                &["load"],
                Err("ERR wrong number of arguments for 'script|load' command".to_string()),
            ),
            (
                &["frob"],
                Err("ERR unknown subcommand 'frob'. Try SCRIPT HELP.".to_string()),
            ),
        ] {
            assert_eq!(ScriptCommand::parse(words), expected, "{words:?}");
        }
        assert!(ScriptCommand::parse(&[] as &[&str]).is_err());
        assert_eq!(
            ScriptCache::default().answer(ScriptCommand::Kill),
            Reply::Error("NOTBUSY No scripts in execution right now.".into())
        );
    }
}
