//! A Redis command's words, understood: a pure function with unit tests.
//!
//! The front ends call [`Command::parse`] before anything is proposed, so a
//! command with a syntax error never reaches the log (and, inside MULTI, makes
//! EXEC answer EXECABORT). Apply parses the same words again from the log entry:
//! the log holds what the client sent, and this one function gives it meaning.

use crate::command::{MAX_KEY_LEN, MAX_VALUE_LEN, PROPOSAL_FORMAT, REDIS_ORDER_FORMAT};

pub type Key = Vec<u8>;

/// When SET, GETEX and EXPIRE put an expiry, as the client said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Milliseconds from the entry's time (EX, PX, EXPIRE, PEXPIRE).
    In(i64),
    /// Milliseconds since the epoch (EXAT, PXAT, EXPIREAT, PEXPIREAT).
    At(i64),
}

/// Which expiry a write leaves on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: a plain write removes any expiry.
    Clear,
    /// KEEPTTL.
    Keep,
    Set(Expiry),
}

/// What GETEX does to the key's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetExOption {
    /// No option: the expiry stays.
    Keep,
    Persist,
    /// EX, PX, EXAT or PXAT, or why its time is refused: an error reported
    /// only if the key holds a string, as Redis does.
    Set(Result<Expiry, ParseError>),
}

/// NX / XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Any,
    OnlyIfAbsent,
    OnlyIfPresent,
}

/// How a SET-like command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetAnswer {
    /// SET: OK, or nil when NX/XX stopped it.
    Ok,
    /// SET ... GET, GETSET: the old value.
    OldValue,
    /// SETNX: 1 or 0.
    Flag,
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCondition {
    Always,
    NoExpiry,
    HasExpiry,
    Later,
    Sooner,
}

/// What LCS answers: the common string, its length, or where it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LcsAnswer {
    String,
    Len,
    Indexes,
}

/// TTL, PTTL, EXPIRETIME, PEXPIRETIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlQuery {
    pub millis: bool,
    pub absolute: bool,
}

/// A command of the string keyspace, with its arguments checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    // Reads.
    Get(Key),
    MGet(Vec<Key>),
    Exists(Vec<Key>),
    StrLen(Key),
    GetRange(Key, i64, i64),
    Ttl(Key, TtlQuery),
    Type(Key),
    Keys(Vec<u8>),
    Scan {
        cursor: u64,
        pattern: Option<Vec<u8>>,
        count: usize,
        kind: Option<Vec<u8>>,
    },
    RandomKey,
    DbSize,
    GetBit(Key, u64),
    Lcs {
        a: Key,
        b: Key,
        answer: LcsAnswer,
        min_match_len: u64,
        with_match_len: bool,
    },
    // Writes.
    Set {
        key: Key,
        value: Vec<u8>,
        presence: Presence,
        expiry: SetExpiry,
        answer: SetAnswer,
        /// SET, SETNX, SETEX, PSETEX or GETSET: the name an expiry that
        /// overflows at apply is reported under.
        command: &'static str,
    },
    MSet(Vec<(Key, Vec<u8>)>),
    MSetNx(Vec<(Key, Vec<u8>)>),
    GetDel(Key),
    GetEx(Key, GetExOption),
    IncrBy(Key, i64),
    IncrByFloat(Key, f64),
    Append(Key, Vec<u8>),
    SetBit(Key, u64, bool),
    SetRange(Key, i64, Vec<u8>),
    Del(Vec<Key>),
    /// The last field is the command's name, for its error line.
    Expire(Key, Expiry, ExpireCondition, &'static str),
    Persist(Key),
    Rename {
        from: Key,
        to: Key,
        only_if_absent: bool,
    },
    Copy {
        from: Key,
        to: Key,
        db: Option<u8>,
        replace: bool,
    },
    Touch(Vec<Key>),
    FlushDb,
    FlushAll,
    /// EVAL and EVAL_RO: a Lua script, run where the command runs (at apply
    /// for a write, on a read view for a read-only one). See `machine/script/`.
    Eval(Eval),
}

/// EVAL's script, keys and arguments, as the client sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    /// The body as sent, shebang line included: its SHA1 names the script.
    pub body: Vec<u8>,
    pub keys: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
    /// What a `#!lua` first line says; `None` without one (Redis calls that
    /// compatibility mode: the script may write unless sent with EVAL_RO).
    pub shebang: Option<Shebang>,
    /// EVAL_RO or EVALSHA_RO: writes are refused.
    pub read_only: bool,
}

impl Eval {
    /// Whether the script may not write, so it can be served as a read.
    pub fn is_read(&self) -> bool {
        self.read_only || self.shebang.is_some_and(|s| s.no_writes)
    }

    /// The Lua source to compile: the body after the shebang line (its line
    /// feed is kept, so line numbers in errors match what the client sent).
    pub fn code(&self) -> &[u8] {
        &self.body[self.shebang.map_or(0, |s| s.length)..]
    }
}

/// A script's `#!lua flags=...` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shebang {
    /// Bytes of the line, up to (not including) its line feed.
    pub length: usize,
    /// `flags=no-writes`. Redis's other flags (allow-oom, allow-stale,
    /// no-cluster, allow-cross-slot-keys) are accepted and change nothing here.
    pub no_writes: bool,
}

/// Reads a script's first line if it is a shebang (`#!lua [flags=a,b]`), as
/// Redis 7 does; `Ok(None)` for a script without one.
pub fn parse_shebang(body: &[u8]) -> Result<Option<Shebang>, ParseError> {
    if !body.starts_with(b"#!") {
        return Ok(None);
    }
    let Some(length) = body.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..length]);
    let mut parts = line.split_ascii_whitespace();
    match parts.next() {
        Some("#!lua") => {}
        Some(engine) => {
            return Err(format!(
                "ERR Unexpected engine in script shebang: {}",
                shown(engine.as_bytes())
            ))
        }
        None => return Err("ERR Invalid engine in script shebang".into()),
    }
    let mut no_writes = false;
    for part in parts {
        let Some(flags) = part.strip_prefix("flags=") else {
            return Err(format!(
                "ERR Unknown lua shebang option: {}",
                shown(part.as_bytes())
            ));
        };
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => no_writes = true,
                "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => {
                    return Err(format!(
                        "ERR Unexpected flag in script shebang: {}",
                        shown(other.as_bytes())
                    ))
                }
            }
        }
    }
    Ok(Some(Shebang { length, no_writes }))
}

/// EVAL's and EVALSHA's `numkeys`: how many of the words after it are keys,
/// checked against how many there are (`rest` starts at numkeys).
pub fn parse_numkeys(rest: &[impl AsRef<[u8]>]) -> Result<usize, ParseError> {
    let Some(word) = rest.first() else {
        return Err(not_an_integer());
    };
    let n = integer(word.as_ref())?;
    if n < 0 {
        return Err("ERR Number of keys can't be negative".into());
    }
    match usize::try_from(n) {
        Ok(n) if n < rest.len() => Ok(n),
        _ => Err("ERR Number of keys can't be greater than number of args".into()),
    }
}

fn parse_eval(read_only: bool, rest: &[impl AsRef<[u8]>]) -> Result<Command, ParseError> {
    let body = value(rest[0].as_ref())?;
    let numkeys = parse_numkeys(&rest[1..])?;
    let (keys, args) = rest[2..].split_at(numkeys);
    let shebang = parse_shebang(&body)?;
    if read_only && shebang.is_some_and(|s| !s.no_writes) {
        return Err("ERR Can not execute a script with write flag using *_ro command.".into());
    }
    Ok(Command::Eval(Eval {
        body,
        keys: self::keys(keys)?,
        args: args
            .iter()
            .map(|a| value(a.as_ref()))
            .collect::<Result<_, _>>()?,
        shebang,
        read_only,
    }))
}

/// Why a command was refused before anything ran: a Redis error line.
pub type ParseError = String;

/// A refusal, with the one kind code decides by: a script reports a wrong
/// number of arguments in its own words (Redis's "Wrong number of args
/// calling Redis command from script").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    WrongArity(ParseError),
    Invalid(ParseError),
}

impl Refusal {
    /// The Redis error line.
    pub fn into_message(self) -> ParseError {
        match self {
            Refusal::WrongArity(message) | Refusal::Invalid(message) => message,
        }
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal::Invalid(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Refusal {
        Refusal::Invalid(message.to_string())
    }
}

/// A word as an error line may quote it, at the prompt, on the Redis port or
/// in a membership answer: its first 40 characters, with every control
/// character and every blank but the space made `?`, so that the line stays
/// one line and cannot drive a terminal.
pub fn shown(word: &[u8]) -> String {
    const SHOWN_CHARS: usize = 40;
    String::from_utf8_lossy(word)
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| {
            if c.is_control() || (c.is_whitespace() && c != ' ') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn syntax_error() -> ParseError {
    "ERR syntax error".into()
}

fn not_an_integer() -> ParseError {
    "ERR value is not an integer or out of range".into()
}

/// A decimal integer as Redis reads one: no spaces, no plus sign, no leading zeros.
pub fn parse_integer(word: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(word).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.starts_with('0') && (digits.len() > 1 || text.starts_with('-')))
    {
        return None;
    }
    text.parse().ok()
}

/// A float as INCRBYFLOAT reads one: no spaces, not NaN. Infinity reads, as
/// in Redis, so that the sum is refused ("would produce NaN or Infinity").
pub fn parse_float(word: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(word).ok()?;
    if text.is_empty()
        || text.starts_with(|c: char| c.is_whitespace())
        || text.ends_with(|c: char| c.is_whitespace())
    {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

fn integer(word: &[u8]) -> Result<i64, ParseError> {
    parse_integer(word).ok_or_else(not_an_integer)
}

fn key(word: &[u8]) -> Result<Key, ParseError> {
    if word.len() > MAX_KEY_LEN {
        return Err(format!(
            "ERR the key is {} bytes; keys are at most {MAX_KEY_LEN} bytes",
            word.len()
        ));
    }
    Ok(word.to_vec())
}

fn value(word: &[u8]) -> Result<Vec<u8>, ParseError> {
    if word.len() > MAX_VALUE_LEN {
        return Err(format!(
            "ERR the value is {} bytes; values are at most {MAX_VALUE_LEN} bytes",
            word.len()
        ));
    }
    Ok(word.to_vec())
}

fn keys(words: &[impl AsRef<[u8]>]) -> Result<Vec<Key>, ParseError> {
    words.iter().map(|w| key(w.as_ref())).collect()
}

fn pairs(words: &[impl AsRef<[u8]>]) -> Result<Vec<(Key, Vec<u8>)>, ParseError> {
    words
        .chunks(2)
        .map(|pair| Ok((key(pair[0].as_ref())?, value(pair[1].as_ref())?)))
        .collect()
}

/// The expiry given with a number of seconds or milliseconds; Redis refuses
/// zero, negative and overflowing times with this command's name.
fn expiry_time(
    word: &[u8],
    millis: bool,
    absolute: bool,
    command: &str,
) -> Result<Expiry, ParseError> {
    let n = integer(word)?;
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    if n <= 0 {
        return Err(invalid());
    }
    let ms = if millis { Some(n) } else { n.checked_mul(1000) }.ok_or_else(invalid)?;
    Ok(if absolute {
        Expiry::At(ms)
    } else {
        Expiry::In(ms)
    })
}

impl Command {
    /// Understands `args` (the command name first) if it is a command of the
    /// keyspace: `None` for a name this module does not own (the front end
    /// deals with connection commands), `Some(Err)` for a syntax error.
    /// By this build's newest rules: what the front ends check before they
    /// propose.
    pub fn parse(args: &[impl AsRef<[u8]>]) -> Option<Result<Command, ParseError>> {
        Self::parse_in(args, PROPOSAL_FORMAT)
    }

    /// [`Command::parse`] by the rules of machine version `format`: what
    /// apply does with a log entry of that format.
    pub fn parse_in(args: &[impl AsRef<[u8]>], format: u32) -> Option<Result<Command, ParseError>> {
        Self::parse_checked(args, format).map(|parsed| parsed.map_err(Refusal::into_message))
    }

    /// [`Command::parse_in`], saying whether a refusal was for the number of
    /// arguments.
    pub fn parse_checked(
        args: &[impl AsRef<[u8]>],
        format: u32,
    ) -> Option<Result<Command, Refusal>> {
        let redis_order = format >= REDIS_ORDER_FORMAT;
        let name = String::from_utf8_lossy(args.first()?.as_ref()).to_ascii_lowercase();
        let rest = &args[1..];
        let arity = |ok: bool| -> Result<(), Refusal> {
            if ok {
                Ok(())
            } else {
                Err(Refusal::WrongArity(format!(
                    "ERR wrong number of arguments for '{name}' command"
                )))
            }
        };
        let word = |i: usize| rest[i].as_ref();
        // `Ok(None)`: a name this module does not own.
        let parsed = (|| -> Result<Option<Command>, Refusal> {
            Ok(Some(match name.as_str() {
                "get" => {
                    arity(rest.len() == 1)?;
                    Command::Get(key(word(0))?)
                }
                "mget" => {
                    arity(!rest.is_empty())?;
                    Command::MGet(keys(rest)?)
                }
                "exists" => {
                    arity(!rest.is_empty())?;
                    Command::Exists(keys(rest)?)
                }
                "touch" => {
                    arity(!rest.is_empty())?;
                    Command::Touch(keys(rest)?)
                }
                "strlen" => {
                    arity(rest.len() == 1)?;
                    Command::StrLen(key(word(0))?)
                }
                "getrange" | "substr" => {
                    arity(rest.len() == 3)?;
                    Command::GetRange(key(word(0))?, integer(word(1))?, integer(word(2))?)
                }
                "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
                    arity(rest.len() == 1)?;
                    let query = TtlQuery {
                        millis: name.starts_with('p'),
                        absolute: name.ends_with("time"),
                    };
                    Command::Ttl(key(word(0))?, query)
                }
                "type" => {
                    arity(rest.len() == 1)?;
                    Command::Type(key(word(0))?)
                }
                "keys" => {
                    arity(rest.len() == 1)?;
                    Command::Keys(word(0).to_vec())
                }
                "scan" => {
                    arity(!rest.is_empty())?;
                    parse_scan(rest)?
                }
                "randomkey" => {
                    arity(rest.is_empty())?;
                    Command::RandomKey
                }
                "dbsize" => {
                    arity(rest.is_empty())?;
                    Command::DbSize
                }
                "getbit" => {
                    arity(rest.len() == 2)?;
                    Command::GetBit(key(word(0))?, bit_offset(word(1))?)
                }
                "setbit" => {
                    arity(rest.len() == 3)?;
                    // Redis reads the offset first; formats before 6 read the bit first.
                    let offset = if redis_order {
                        Some(bit_offset(word(1))?)
                    } else {
                        None
                    };
                    let bit = match word(2) {
                        b"0" => false,
                        b"1" => true,
                        _ => return Err("ERR bit is not an integer or out of range".into()),
                    };
                    let offset = match offset {
                        Some(offset) => offset,
                        None => bit_offset(word(1))?,
                    };
                    Command::SetBit(key(word(0))?, offset, bit)
                }
                "lcs" => {
                    arity(rest.len() >= 2)?;
                    parse_lcs(key(word(0))?, key(word(1))?, &rest[2..])?
                }
                "set" => {
                    arity(rest.len() >= 2)?;
                    parse_set(key(word(0))?, value(word(1))?, &rest[2..], redis_order)?
                }
                "setnx" => {
                    arity(rest.len() == 2)?;
                    Command::Set {
                        key: key(word(0))?,
                        value: value(word(1))?,
                        presence: Presence::OnlyIfAbsent,
                        expiry: SetExpiry::Clear,
                        answer: SetAnswer::Flag,
                        command: "setnx",
                    }
                }
                "setex" | "psetex" => {
                    arity(rest.len() == 3)?;
                    let expiry = expiry_time(word(1), name == "psetex", false, &name)?;
                    Command::Set {
                        key: key(word(0))?,
                        value: value(word(2))?,
                        presence: Presence::Any,
                        expiry: SetExpiry::Set(expiry),
                        answer: SetAnswer::Ok,
                        command: if name == "psetex" { "psetex" } else { "setex" },
                    }
                }
                "getset" => {
                    arity(rest.len() == 2)?;
                    Command::Set {
                        key: key(word(0))?,
                        value: value(word(1))?,
                        presence: Presence::Any,
                        expiry: SetExpiry::Clear,
                        answer: SetAnswer::OldValue,
                        command: "getset",
                    }
                }
                "mset" | "msetnx" => {
                    arity(!rest.is_empty() && rest.len().is_multiple_of(2))?;
                    let pairs = pairs(rest)?;
                    if name == "mset" {
                        Command::MSet(pairs)
                    } else {
                        Command::MSetNx(pairs)
                    }
                }
                "getdel" => {
                    arity(rest.len() == 1)?;
                    Command::GetDel(key(word(0))?)
                }
                "getex" => {
                    arity(!rest.is_empty())?;
                    parse_getex(key(word(0))?, &rest[1..], redis_order)?
                }
                "incr" | "decr" => {
                    arity(rest.len() == 1)?;
                    Command::IncrBy(key(word(0))?, if name == "incr" { 1 } else { -1 })
                }
                "incrby" | "decrby" => {
                    arity(rest.len() == 2)?;
                    let by = integer(word(1))?;
                    let by = if name == "incrby" {
                        by
                    } else {
                        by.checked_neg()
                            .ok_or_else(|| "ERR decrement would overflow".to_string())?
                    };
                    Command::IncrBy(key(word(0))?, by)
                }
                "incrbyfloat" => {
                    arity(rest.len() == 2)?;
                    let by = parse_float(word(1))
                        .ok_or_else(|| "ERR value is not a valid float".to_string())?;
                    Command::IncrByFloat(key(word(0))?, by)
                }
                "append" => {
                    arity(rest.len() == 2)?;
                    Command::Append(key(word(0))?, value(word(1))?)
                }
                "setrange" => {
                    arity(rest.len() == 3)?;
                    let offset = integer(word(1))?;
                    if offset < 0 {
                        return Err("ERR offset is out of range".into());
                    }
                    Command::SetRange(key(word(0))?, offset, value(word(2))?)
                }
                "del" | "unlink" => {
                    arity(!rest.is_empty())?;
                    Command::Del(keys(rest)?)
                }
                "expire" | "pexpire" | "expireat" | "pexpireat" => {
                    arity(rest.len() >= 2)?;
                    parse_expire(&name, key(word(0))?, word(1), &rest[2..])?
                }
                "persist" => {
                    arity(rest.len() == 1)?;
                    Command::Persist(key(word(0))?)
                }
                "rename" | "renamenx" => {
                    arity(rest.len() == 2)?;
                    Command::Rename {
                        from: key(word(0))?,
                        to: key(word(1))?,
                        only_if_absent: name == "renamenx",
                    }
                }
                "copy" => {
                    arity(rest.len() >= 2)?;
                    parse_copy(key(word(0))?, key(word(1))?, &rest[2..])?
                }
                "flushdb" | "flushall" => {
                    arity(rest.len() <= 1)?;
                    if let Some(mode) = rest.first() {
                        let mode = mode.as_ref().to_ascii_lowercase();
                        if mode != b"async" && mode != b"sync" {
                            return Err(syntax_error().into());
                        }
                    }
                    if name == "flushdb" {
                        Command::FlushDb
                    } else {
                        Command::FlushAll
                    }
                }
                "eval" | "eval_ro" => {
                    arity(rest.len() >= 2)?;
                    parse_eval(name == "eval_ro", rest)?
                }
                _ => return Ok(None),
            }))
        })();
        parsed.transpose()
    }

    /// Whether the command only reads (served on a read index, not proposed).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Get(_)
                | Command::MGet(_)
                | Command::Exists(_)
                | Command::StrLen(_)
                | Command::GetRange(..)
                | Command::Ttl(..)
                | Command::Type(_)
                | Command::Keys(_)
                | Command::Scan { .. }
                | Command::RandomKey
                | Command::DbSize
                | Command::Touch(_)
                | Command::GetBit(..)
                | Command::Lcs { .. }
        ) || matches!(self, Command::Eval(eval) if eval.is_read())
    }
}

/// A bit offset: the byte it falls in must fit in a value.
fn bit_offset(word: &[u8]) -> Result<u64, ParseError> {
    parse_integer(word)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n / 8 < MAX_VALUE_LEN as u64)
        .ok_or_else(|| "ERR bit offset is not an integer or out of range".into())
}

fn parse_lcs(a: Key, b: Key, options: &[impl AsRef<[u8]>]) -> Result<Command, ParseError> {
    let (mut len, mut indexes, mut with_match_len, mut min_match_len) = (false, false, false, 0);
    let mut i = 0;
    while i < options.len() {
        match options[i].as_ref().to_ascii_lowercase().as_slice() {
            b"len" => len = true,
            b"idx" => indexes = true,
            b"withmatchlen" => with_match_len = true,
            b"minmatchlen" if i + 1 < options.len() => {
                min_match_len = integer(options[i + 1].as_ref())?.max(0) as u64;
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    let answer = match (len, indexes) {
        (true, true) => {
            return Err("ERR If you want both the length and indexes, please just use IDX.".into())
        }
        (true, false) => LcsAnswer::Len,
        (false, true) => LcsAnswer::Indexes,
        (false, false) => LcsAnswer::String,
    };
    Ok(Command::Lcs {
        a,
        b,
        answer,
        min_match_len,
        with_match_len,
    })
}

fn parse_set(
    key: Key,
    value: Vec<u8>,
    options: &[impl AsRef<[u8]>],
    redis_order: bool,
) -> Result<Command, ParseError> {
    let mut presence = Presence::Any;
    let mut answer = SetAnswer::Ok;
    let mut keep_ttl = false;
    // The unit word and the time after it, checked once the options are.
    let mut time: Option<(Vec<u8>, &[u8])> = None;
    let mut i = 0;
    while i < options.len() {
        let option = options[i].as_ref().to_ascii_lowercase();
        let next = options.get(i + 1).map(|w| w.as_ref());
        // Redis lets an option repeat where it does not contradict itself
        // (`NX NX`, `GET GET`, `EX 1 EX 2`: the last time counts); formats
        // before 6 refused every repeat.
        let may_repeat = |set: bool| !set || redis_order;
        match (option.as_slice(), next) {
            (b"nx", _)
                if presence != Presence::OnlyIfPresent
                    && may_repeat(presence == Presence::OnlyIfAbsent) =>
            {
                presence = Presence::OnlyIfAbsent
            }
            (b"xx", _)
                if presence != Presence::OnlyIfAbsent
                    && may_repeat(presence == Presence::OnlyIfPresent) =>
            {
                presence = Presence::OnlyIfPresent
            }
            (b"get", _) if may_repeat(answer == SetAnswer::OldValue) => {
                answer = SetAnswer::OldValue
            }
            (b"keepttl", _) if time.is_none() && may_repeat(keep_ttl) => keep_ttl = true,
            (b"ex" | b"px" | b"exat" | b"pxat", Some(word))
                if !keep_ttl
                    && time
                        .as_ref()
                        .is_none_or(|(unit, _)| redis_order && *unit == option) =>
            {
                // Formats before 6 checked the time where it stood, before
                // any option after it.
                if !redis_order {
                    unit_expiry(&option, word, "set")?;
                }
                time = Some((option, word));
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    let expiry = match time {
        Some((unit, word)) => SetExpiry::Set(unit_expiry(&unit, word, "set")?),
        None if keep_ttl => SetExpiry::Keep,
        None => SetExpiry::Clear,
    };
    Ok(Command::Set {
        key,
        value,
        presence,
        expiry,
        answer,
        command: "set",
    })
}

/// The expiry of SET's or GETEX's `EX`, `PX`, `EXAT` or `PXAT` (`unit`,
/// lower case) and the time after it.
fn unit_expiry(unit: &[u8], word: &[u8], command: &str) -> Result<Expiry, ParseError> {
    let millis = unit.starts_with(b"p");
    let absolute = unit.ends_with(b"at");
    expiry_time(word, millis, absolute, command)
}

fn parse_getex(
    key: Key,
    options: &[impl AsRef<[u8]>],
    redis_order: bool,
) -> Result<Command, ParseError> {
    if !redis_order {
        return parse_getex_before_6(key, options);
    }
    // As SET's options: PERSIST may repeat, a time unit may repeat itself
    // (the last time counts), nothing else may meet.
    let mut persist = false;
    let mut time: Option<(Vec<u8>, &[u8])> = None;
    let mut i = 0;
    while i < options.len() {
        let option = options[i].as_ref().to_ascii_lowercase();
        let next = options.get(i + 1).map(|w| w.as_ref());
        match (option.as_slice(), next) {
            (b"persist", _) if time.is_none() => persist = true,
            (b"ex" | b"px" | b"exat" | b"pxat", Some(word))
                if !persist && time.as_ref().is_none_or(|(unit, _)| *unit == option) =>
            {
                time = Some((option, word));
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    // Redis checks the time only once it has found a string under the key:
    // GETEX of a missing key answers nil whatever the time says.
    let option = match time {
        Some((unit, word)) => GetExOption::Set(unit_expiry(&unit, word, "getex")),
        None if persist => GetExOption::Persist,
        None => GetExOption::Keep,
    };
    Ok(Command::GetEx(key, option))
}

/// GETEX in formats before 6: one option at most, its time checked first.
fn parse_getex_before_6(key: Key, options: &[impl AsRef<[u8]>]) -> Result<Command, ParseError> {
    let words: Vec<Vec<u8>> = options
        .iter()
        .map(|w| w.as_ref().to_ascii_lowercase())
        .collect();
    let option = match words.as_slice() {
        [] => GetExOption::Keep,
        [persist] if persist == b"persist" => GetExOption::Persist,
        [unit, _] if matches!(unit.as_slice(), b"ex" | b"px" | b"exat" | b"pxat") => {
            GetExOption::Set(Ok(unit_expiry(unit, options[1].as_ref(), "getex")?))
        }
        _ => return Err(syntax_error()),
    };
    Ok(Command::GetEx(key, option))
}

fn parse_expire(
    name: &str,
    key: Key,
    time: &[u8],
    options: &[impl AsRef<[u8]>],
) -> Result<Command, ParseError> {
    let mut condition = ExpireCondition::Always;
    for option in options {
        let wanted = match option.as_ref().to_ascii_lowercase().as_slice() {
            b"nx" => ExpireCondition::NoExpiry,
            b"xx" => ExpireCondition::HasExpiry,
            b"gt" => ExpireCondition::Later,
            b"lt" => ExpireCondition::Sooner,
            _ => return Err(format!("ERR Unsupported option {}", shown(option.as_ref()))),
        };
        use ExpireCondition::*;
        condition = match (condition, wanted) {
            (Always, wanted) => wanted,
            (a, b) if a == b => a,
            (NoExpiry, _) | (_, NoExpiry) => {
                return Err(
                    "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
                )
            }
            (Later, Sooner) | (Sooner, Later) => {
                return Err("ERR GT and LT options at the same time are not compatible".into())
            }
            (_, wanted) => wanted,
        };
    }
    // EXPIRE accepts any integer: zero or less removes the key, as Redis does.
    let n = integer(time)?;
    let millis = name.starts_with('p');
    let invalid = || format!("ERR invalid expire time in '{name}' command");
    let ms = if millis { Some(n) } else { n.checked_mul(1000) }.ok_or_else(invalid)?;
    let expiry = if name.ends_with("at") {
        Expiry::At(ms)
    } else {
        Expiry::In(ms)
    };
    let name = match name {
        "expire" => "expire",
        "pexpire" => "pexpire",
        "expireat" => "expireat",
        _ => "pexpireat",
    };
    Ok(Command::Expire(key, expiry, condition, name))
}

fn parse_copy(from: Key, to: Key, options: &[impl AsRef<[u8]>]) -> Result<Command, ParseError> {
    let mut db = None;
    let mut replace = false;
    let mut i = 0;
    while i < options.len() {
        match options[i].as_ref().to_ascii_lowercase().as_slice() {
            b"replace" => replace = true,
            b"db" if i + 1 < options.len() => {
                db = Some(parse_db(options[i + 1].as_ref())?);
                i += 1;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    Ok(Command::Copy {
        from,
        to,
        db,
        replace,
    })
}

/// A database number, as SELECT, COPY ... DB and MOVE take it.
pub fn parse_db(word: &[u8]) -> Result<u8, ParseError> {
    let n = integer(word)?;
    u8::try_from(n)
        .ok()
        .filter(|&db| db < super::DATABASES)
        .ok_or_else(|| "ERR DB index is out of range".to_string())
}

fn parse_scan(rest: &[impl AsRef<[u8]>]) -> Result<Command, ParseError> {
    let cursor = std::str::from_utf8(rest[0].as_ref())
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| "ERR invalid cursor".to_string())?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut kind = None;
    let mut i = 1;
    while i < rest.len() {
        let option = rest[i].as_ref().to_ascii_lowercase();
        let Some(arg) = rest.get(i + 1).map(|w| w.as_ref()) else {
            return Err(syntax_error());
        };
        match option.as_slice() {
            b"match" => pattern = Some(arg.to_vec()),
            b"count" => {
                let n = integer(arg)?;
                if n < 1 {
                    return Err(syntax_error());
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            b"type" => kind = Some(arg.to_ascii_lowercase()),
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    Ok(Command::Scan {
        cursor,
        pattern,
        count,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(words: &[&str]) -> Option<Result<Command, ParseError>> {
        Command::parse(words)
    }

    #[test]
    fn set_options_combine_as_in_redis() {
        assert_eq!(
            parsed(&["SET", "k", "v", "nx", "px", "30000"]),
            Some(Ok(Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                presence: Presence::OnlyIfAbsent,
                expiry: SetExpiry::Set(Expiry::In(30000)),
                answer: SetAnswer::Ok,
                command: "set",
            }))
        );
        for bad in [
            &["set", "k", "v", "nx", "xx"][..],
            &["set", "k", "v", "ex", "10", "px", "10"],
            &["set", "k", "v", "ex"],
            &["set", "k", "v", "keepttl", "ex", "1"],
            &["set", "k", "v", "what"],
        ] {
            assert_eq!(parsed(bad), Some(Err("ERR syntax error".into())), "{bad:?}");
        }
        for bad in [
            &["set", "k", "v", "ex", "0"][..],
            &["set", "k", "v", "px", "-1"],
        ] {
            assert_eq!(
                parsed(bad),
                Some(Err("ERR invalid expire time in 'set' command".into()))
            );
        }
        assert_eq!(
            parsed(&["set", "k", "v", "ex", "x"]),
            Some(Err(not_an_integer()))
        );
    }

    /// What format 6 changed (`REDIS_ORDER_FORMAT`), each case beside what
    /// format 5 said, which entries of that format must go on saying.
    #[test]
    fn format_6_checks_in_redis_order_and_format_5_as_before() {
        let set = |expiry, presence, answer| Command::Set {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            presence,
            expiry,
            answer,
            command: "set",
        };
        let in_format = |words: &[&str], format| Command::parse_in(words, format);
        let syntax = Some(Err(syntax_error()));
        // A repeated option that does not contradict itself.
        for (words, then) in [
            (
                &["set", "k", "v", "nx", "NX"][..],
                set(SetExpiry::Clear, Presence::OnlyIfAbsent, SetAnswer::Ok),
            ),
            (
                &["set", "k", "v", "get", "get"],
                set(SetExpiry::Clear, Presence::Any, SetAnswer::OldValue),
            ),
            (
                &["set", "k", "v", "ex", "1", "ex", "20"],
                set(
                    SetExpiry::Set(Expiry::In(20_000)),
                    Presence::Any,
                    SetAnswer::Ok,
                ),
            ),
            (
                &["set", "k", "v", "keepttl", "keepttl"],
                set(SetExpiry::Keep, Presence::Any, SetAnswer::Ok),
            ),
        ] {
            assert_eq!(in_format(words, 6), Some(Ok(then)), "{words:?}");
            assert_eq!(in_format(words, 5), syntax, "{words:?}");
        }
        // Two mistakes: Redis names the options' conflict before the time.
        for words in [
            &["set", "k", "v", "px", "-5", "keepttl"][..],
            &["set", "k", "v", "exat", "x", "pxat", "1"],
        ] {
            assert_eq!(in_format(words, 6), syntax, "{words:?}");
            assert_ne!(in_format(words, 5), syntax, "{words:?}");
        }
        // SETBIT reads its offset before its bit.
        let setbit = ["setbit", "k", "-1", "2"];
        assert_eq!(
            in_format(&setbit, 6),
            Some(Err(
                "ERR bit offset is not an integer or out of range".into()
            ))
        );
        assert_eq!(
            in_format(&setbit, 5),
            Some(Err("ERR bit is not an integer or out of range".into()))
        );
        // GETEX keeps its time's mistake for apply, which reports it only
        // for a key holding a string.
        let getex = ["getex", "k", "ex", "soon"];
        assert_eq!(
            in_format(&getex, 6),
            Some(Ok(Command::GetEx(
                b"k".to_vec(),
                GetExOption::Set(Err(not_an_integer()))
            )))
        );
        assert_eq!(in_format(&getex, 5), Some(Err(not_an_integer())));
        assert_eq!(
            in_format(&["getex", "k", "persist", "persist"], 6),
            Some(Ok(Command::GetEx(b"k".to_vec(), GetExOption::Persist)))
        );
        assert_eq!(
            in_format(&["getex", "k", "px", "5", "px", "7"], 6),
            Some(Ok(Command::GetEx(
                b"k".to_vec(),
                GetExOption::Set(Ok(Expiry::In(7)))
            )))
        );
        for words in [
            &["getex", "k", "persist", "ex", "1"][..],
            &["getex", "k", "ex", "1", "px", "1"],
            &["getex", "k", "keepttl"],
            &["getex", "k", "ex"],
        ] {
            assert_eq!(in_format(words, 6), syntax, "{words:?}");
        }
    }

    #[test]
    fn integers_are_read_strictly() {
        for good in [
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "42",
        ] {
            assert!(parse_integer(good.as_bytes()).is_some(), "{good}");
        }
        for bad in [
            "",
            "+1",
            " 1",
            "1 ",
            "01",
            "-0",
            "9223372036854775808",
            "1.0",
            "-",
        ] {
            assert!(parse_integer(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn expire_conditions_refuse_contradictions() {
        assert!(matches!(
            parsed(&["expire", "k", "10", "nx", "xx"]),
            Some(Err(e)) if e.contains("NX and XX")
        ));
        assert!(matches!(
            parsed(&["expire", "k", "10", "gt", "lt"]),
            Some(Err(e)) if e.contains("GT and LT")
        ));
        assert_eq!(
            parsed(&["pexpireat", "k", "5", "gt"]),
            Some(Ok(Command::Expire(
                b"k".to_vec(),
                Expiry::At(5),
                ExpireCondition::Later,
                "pexpireat"
            )))
        );
    }

    #[test]
    fn names_this_module_does_not_own_are_left_alone() {
        assert!(parsed(&["ping"]).is_none());
        assert!(parsed(&["multi"]).is_none());
        assert!(matches!(parsed(&["get"]), Some(Err(e)) if e.contains("wrong number")));
    }

    #[test]
    fn scan_reads_its_options() {
        assert_eq!(
            parsed(&["scan", "0", "match", "a*", "count", "100"]),
            Some(Ok(Command::Scan {
                cursor: 0,
                pattern: Some(b"a*".to_vec()),
                count: 100,
                kind: None
            }))
        );
        assert_eq!(
            parsed(&["scan", "x"]),
            Some(Err("ERR invalid cursor".into()))
        );
        assert_eq!(parsed(&["scan", "0", "count"]), Some(Err(syntax_error())));
    }
}
