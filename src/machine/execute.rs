//! Running commands against the stored state.
//!
//! Reads take a [`Space`] (a point-in-time view) and change nothing. Writes
//! take a [`SpaceMut`] (the apply batch of one run of entries) and keep three
//! things true with every change, in the same batch:
//! - the expiry index holds exactly one entry per key with an expiry;
//! - the key counters of each database match the records;
//! - a record's `modified` is the index of the entry that last wrote it, and a
//!   key's removal bucket's `removed_at` the last index that removed a key of
//!   that bucket (WATCH
//!   is decided from these two at apply time, so forwarding and leader changes
//!   cannot fool it).
//!
//! A key whose expiry has passed at "now" is absent to every command. A write
//! that meets one removes it first, so the state never depends on whether the
//! leader's active expiry got there before.

use super::parse::{
    Command, ExpireCondition, Expiry, GetExOption, Presence, SetAnswer, SetExpiry, TtlQuery,
};
use super::record::{self, damaged, Kind, Record};
use super::script::{self, Host};
use super::Reply;
use crate::command::{
    Bytes, Expired, Op, Queued, Watched, MAX_VALUE_LEN, PROPOSAL_FORMAT, REDIS_ORDER_FORMAT,
};

/// Stored keys and their values, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The stored state as a command sees it.
pub trait Space {
    /// A stored value as the store hands it out (shared, not copied: a SET
    /// looks up the value it replaces, and copying it cost time).
    type Value: AsRef<[u8]>;
    /// The stored value under a stored key.
    fn get(&self, key: &[u8]) -> Result<Option<Self::Value>, String>;
    /// Up to `limit` entries whose key starts with `prefix`, from `from` on,
    /// in key order.
    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, String>;
    /// `db`'s flush mark (stored under [`record::flush_mark_key`]). Every
    /// command asks for it, so a store may keep it in memory, as long as
    /// the mark it gives belongs to the same point in time as its data.
    fn flush_mark(&self, db: u8) -> Result<u64, String>;
    /// The record under a stored data key without its value (left empty),
    /// for a write that replaces the value. A store may know it without
    /// reading the record (`store/known_heads.rs`).
    fn get_head(&self, key: &[u8]) -> Result<Option<Record>, String> {
        read_head(self, key)
    }
}

/// [`Space::get_head`] by reading the record.
pub fn read_head<S: Space + ?Sized>(space: &S, key: &[u8]) -> Result<Option<Record>, String> {
    space
        .get(key)?
        .map(|stored| Record::decode_head(stored.as_ref()).map_err(damaged))
        .transpose()
}

/// The stored state as an apply batch changes it.
pub trait SpaceMut: Space {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn remove(&mut self, key: Vec<u8>);
    /// Stores `db`'s flush mark under [`record::flush_mark_key`], in the
    /// same batch as everything else.
    fn set_flush_mark(&mut self, db: u8, mark: u64);
}

fn error(message: &str) -> Reply {
    Reply::Error(message.to_string())
}

fn counter<S: Space>(space: &S, key: &[u8]) -> Result<u64, String> {
    let stored = space.get(key)?;
    Ok(record::decode_counter(stored.as_ref().map(AsRef::as_ref)))
}

/// The machine's clock as stored (0 before the first entry).
fn stored_clock<S: Space>(space: &S) -> Result<u64, String> {
    counter(space, &record::CLOCK_KEY)
}

/// The cluster's machine version as stored (see `record::MACHINE_VERSION_KEY`).
pub fn machine_version<S: Space>(space: &S) -> Result<u32, String> {
    let stored = space.get(&record::MACHINE_VERSION_KEY)?;
    match stored.as_ref().map(AsRef::as_ref) {
        None => Ok(crate::command::UNVERSIONED_MACHINE),
        Some(bytes) => Ok(u32::try_from(record::decode_counter(Some(bytes))).unwrap_or(u32::MAX)),
    }
}

/// A key's record as stored, even if flushed or expired.
fn stored<S: Space>(space: &S, db: u8, key: &[u8]) -> Result<Option<Record>, String> {
    let Some(stored) = space.get(&record::data_key(db, key))? else {
        return Ok(None);
    };
    Record::decode(stored.as_ref()).map(Some).map_err(damaged)
}

/// A key's record, unless it is missing, flushed or has expired at `now`.
fn live<S: Space>(space: &S, db: u8, key: &[u8], now: u64) -> Result<Option<Record>, String> {
    let flush_mark = space.flush_mark(db)?;
    Ok(stored(space, db, key)?.filter(|record| record.is_present(flush_mark, now)))
}

/// Whether a stored value is a key that exists at `now` (not flushed, not
/// expired). Scans use it to skip what a command must not see.
fn is_present(stored: &[u8], flush_mark: u64, now: u64) -> bool {
    Record::decode_head(stored).is_ok_and(|r| r.is_present(flush_mark, now))
}

/// A string key's value. Other kinds, when they exist, answer `WRONGTYPE
/// Operation against a key holding the wrong kind of value` here.
fn string_value(record: &Record) -> Result<&[u8], Reply> {
    match record.kind {
        Kind::String => Ok(&record.value),
    }
}

/// Serves a read-only command at `leader_time`, the leader's clock when the
/// read's read-index round confirmed it (never earlier than the state's own).
pub fn read<S: Space>(
    space: &S,
    db: u8,
    command: &Command,
    leader_time: u64,
) -> Result<Reply, String> {
    let now = leader_time.max(stored_clock(space)?);
    read_at(space, db, command, now)
}

/// The stamp WATCH remembers for a key: the index that last wrote it, or 0.
pub fn watch_stamp<S: Space>(
    space: &S,
    db: u8,
    key: &[u8],
    leader_time: u64,
) -> Result<u64, String> {
    let now = leader_time.max(stored_clock(space)?);
    Ok(live(space, db, key, now)?.map_or(0, |r| r.modified))
}

/// Whether `db` holds records a FLUSHDB or FLUSHALL left behind: one counter
/// read, so the leader's sweep can skip a database without scanning it.
pub fn has_stale<S: Space>(space: &S, db: u8) -> Result<bool, String> {
    Ok(counter(space, &record::stale_count_key(db))? > 0)
}

/// The next range of `db` for the leader's sweep to clear, starting at SCAN
/// position `from` and holding at most `limit` stored records, with the
/// number of stale ones among them; `None` when `db` has nothing stale.
pub fn next_sweep<S: Space>(
    space: &S,
    db: u8,
    from: u64,
    limit: usize,
) -> Result<Option<SweepRange>, String> {
    if !has_stale(space, db)? {
        return Ok(None);
    }
    let flush_mark = space.flush_mark(db)?;
    let page = space.scan(&[db], &record::scan_start(db, from), limit + 1)?;
    let last = match page.get(limit) {
        Some((next, _)) => record::position_of(next).saturating_sub(1).max(from),
        None => u64::MAX,
    };
    let stale = page
        .iter()
        .take(limit)
        .filter(|(_, value)| Record::decode_head(value).is_ok_and(|r| r.flushed_by(flush_mark)))
        .count();
    Ok(Some(SweepRange {
        first: from,
        last,
        stale,
    }))
}

/// A range of SCAN positions of one database, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRange {
    pub first: u64,
    pub last: u64,
    /// Stale records in it when the leader looked.
    pub stale: usize,
}

/// The machine's clock: the leader's time (milliseconds since the epoch)
/// stamped into the newest entry applied, or a later one applied before it
/// (LASTSAVE's answer is built on it).
pub fn clock<S: Space>(space: &S) -> Result<u64, String> {
    stored_clock(space)
}

/// Keys and keys with an expiry, for each database that has any (INFO's
/// `# Keyspace`).
pub fn database_sizes<S: Space>(space: &S) -> Result<Vec<(u8, u64, u64)>, String> {
    let mut sizes = Vec::new();
    for db in 0..record::DATABASES {
        let keys = counter(space, &record::key_count_key(db))?;
        if keys > 0 {
            sizes.push((db, keys, counter(space, &record::expiring_count_key(db))?));
        }
    }
    Ok(sizes)
}

/// Up to `limit` keys whose expiry has passed at `now`, from the expiry index.
pub fn due_expiries<S: Space>(space: &S, now: u64, limit: usize) -> Result<Vec<Expired>, String> {
    let mut due = Vec::new();
    for (stored, _) in space.scan(&record::EXPIRY_INDEX, &record::EXPIRY_INDEX, limit)? {
        let Some((at, db, key)) = record::split_expiry_key(&stored) else {
            continue;
        };
        if at >= now {
            break;
        }
        due.push(Expired {
            db,
            key: Bytes(key.to_vec()),
            at,
        });
    }
    Ok(due)
}

fn read_at<S: Space>(space: &S, db: u8, command: &Command, now: u64) -> Result<Reply, String> {
    let value_of = |key: &[u8]| -> Result<Result<Option<Vec<u8>>, Reply>, String> {
        Ok(match live(space, db, key, now)? {
            None => Ok(None),
            Some(record) => string_value(&record).map(|v| Some(v.to_vec())),
        })
    };
    Ok(match command {
        Command::Get(key) => match value_of(key)? {
            Ok(Some(value)) => Reply::bulk(value),
            Ok(None) => Reply::Nil,
            Err(wrong) => wrong,
        },
        Command::MGet(keys) => {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(match value_of(key)? {
                    Ok(Some(value)) => Reply::bulk(value),
                    _ => Reply::Nil,
                });
            }
            Reply::Array(values)
        }
        Command::Exists(keys) | Command::Touch(keys) => {
            let mut count = 0;
            for key in keys {
                count += live(space, db, key, now)?.is_some() as i64;
            }
            Reply::Int(count)
        }
        Command::StrLen(key) => match value_of(key)? {
            Ok(value) => Reply::Int(value.map_or(0, |v| v.len() as i64)),
            Err(wrong) => wrong,
        },
        Command::GetRange(key, start, end) => match value_of(key)? {
            Ok(value) => Reply::bulk(substring(&value.unwrap_or_default(), *start, *end)),
            Err(wrong) => wrong,
        },
        Command::Ttl(key, query) => {
            Reply::Int(time_to_live(live(space, db, key, now)?, *query, now))
        }
        Command::Type(key) => Reply::Status(
            match live(space, db, key, now)? {
                Some(record) => match record.kind {
                    Kind::String => "string",
                },
                None => "none",
            }
            .into(),
        ),
        Command::Keys(pattern) => {
            let flush_mark = space.flush_mark(db)?;
            let mut found = Vec::new();
            for (stored, value) in space.scan(&[db], &[db], usize::MAX)? {
                let Some((_, key)) = record::split_data_key(&stored) else {
                    continue;
                };
                if pattern_matches(pattern, key) && is_present(&value, flush_mark, now) {
                    found.push(Reply::bulk(key));
                }
            }
            Reply::Array(found)
        }
        Command::Scan {
            cursor,
            pattern,
            count,
            kind,
        } => scan(
            space,
            db,
            *cursor,
            pattern.as_deref(),
            *count,
            kind.as_deref(),
            now,
        )?,
        Command::RandomKey => {
            // A reply only, never state, so it may use chance (a script's
            // RANDOMKEY, whose answer may be written, is seeded instead).
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(now);
            random_key(space, db, now, hasher.finish())?
        }
        Command::Eval(eval) => script::run(&mut ReadHost { space, now }, db, eval)?,
        Command::DbSize => Reply::Int(counter(space, &record::key_count_key(db))? as i64),
        Command::GetBit(key, offset) => match value_of(key)? {
            Ok(value) => {
                let byte = value
                    .unwrap_or_default()
                    .get((offset / 8) as usize)
                    .copied();
                Reply::Int(byte.map_or(0, |b| (b >> (7 - offset % 8)) & 1) as i64)
            }
            Err(wrong) => wrong,
        },
        Command::Lcs {
            a,
            b,
            answer,
            min_match_len,
            with_match_len,
        } => {
            let (a, b) = match (value_of(a)?, value_of(b)?) {
                (Ok(a), Ok(b)) => (a.unwrap_or_default(), b.unwrap_or_default()),
                (Err(wrong), _) | (_, Err(wrong)) => return Ok(wrong),
            };
            super::lcs::longest_common_subsequence(&a, &b, *answer, *min_match_len, *with_match_len)
        }
        write => return Err(format!("internal error: {write:?} is not a read")),
    })
}

/// GETRANGE's arithmetic: negative offsets count from the end; the range is
/// clamped to the string.
fn substring(value: &[u8], start: i64, end: i64) -> Vec<u8> {
    let len = value.len() as i64;
    if (start < 0 && end < 0 && start > end) || len == 0 {
        return Vec::new();
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end || start >= len {
        return Vec::new();
    }
    value[start as usize..=end as usize].to_vec()
}

fn time_to_live(record: Option<Record>, query: TtlQuery, now: u64) -> i64 {
    let Some(record) = record else { return -2 };
    let Some(at) = record.expires_at else {
        return -1;
    };
    let at = at.min(i64::MAX as u64) as i64;
    match (query.absolute, query.millis) {
        (true, true) => at,
        (true, false) => at / 1000,
        (false, true) => (at - now as i64).max(0),
        (false, false) => ((at - now as i64).max(0) + 500) / 1000,
    }
}

/// SCAN over one database in hash order: the cursor is the position to go on
/// from. A key present from the first call to the last is returned at least
/// once; keys that share a position with the cursor may come twice.
fn scan<S: Space>(
    space: &S,
    db: u8,
    cursor: u64,
    pattern: Option<&[u8]>,
    count: usize,
    kind: Option<&[u8]>,
    now: u64,
) -> Result<Reply, String> {
    let wanted = count.min(100_000);
    let flush_mark = space.flush_mark(db)?;
    let entries = space.scan(&[db], &record::scan_start(db, cursor), wanted + 1)?;
    let next = if entries.len() > wanted {
        record::position_of(&entries[wanted].0)
    } else {
        0
    };
    let mut keys = Vec::new();
    for (stored, value) in entries.iter().take(wanted) {
        let Some((_, key)) = record::split_data_key(stored) else {
            continue;
        };
        let type_matches = kind.is_none_or(|kind| kind == b"string");
        let pattern_ok = pattern.is_none_or(|p| pattern_matches(p, key));
        if is_present(value, flush_mark, now) && type_matches && pattern_ok {
            keys.push(Reply::bulk(key));
        }
    }
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(keys),
    ]))
}

/// RANDOMKEY: the first live key at or after hash position `from`, then
/// from the start, walking past keys that are gone.
fn random_key<S: Space>(space: &S, db: u8, now: u64, from: u64) -> Result<Reply, String> {
    const PAGE: usize = 256;
    if counter(space, &record::key_count_key(db))? == 0 {
        return Ok(Reply::Nil);
    }
    let flush_mark = space.flush_mark(db)?;
    for mut from in [from, 0] {
        loop {
            let page = space.scan(&[db], &record::scan_start(db, from), PAGE)?;
            for (stored, value) in &page {
                if let Some((_, key)) = record::split_data_key(stored) {
                    if is_present(value, flush_mark, now) {
                        return Ok(Reply::bulk(key));
                    }
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => {
                    from = record::position_of(last).saturating_add(1)
                }
                _ => break,
            }
        }
    }
    Ok(Reply::Nil)
}

/// Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, and `\` to escape. The last `*`
/// is the only backtrack point, so time grows with pattern times key, never
/// exponentially.
pub fn pattern_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_at, matched))) => {
                p = star_at + 1;
                t = matched + 1;
                star = Some((star_at, matched + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `byte` against the class starting at `pattern[open] == b'['`;
/// the index after the class if it matches.
fn match_class(pattern: &[u8], open: usize, byte: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == byte;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (low, high) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (low..=high).contains(&byte);
            i += 3;
        } else {
            matched |= pattern[i] == byte;
            i += 1;
        }
    }
    // An unclosed class ends at the end of the pattern, as in Redis.
    let after = (i + 1).min(pattern.len());
    (matched != negate).then_some(after)
}

/// Applies one log entry's operations: `index` is the entry's log index,
/// `stamped` the leader's time in it. Returns one reply per operation.
/// An `Err` is a storage failure, never a user's mistake.
pub fn apply_entry<S: SpaceMut>(
    space: &mut S,
    index: u64,
    stamped: u64,
    format: u32,
    ops: Vec<Op>,
) -> Result<Vec<Reply>, String> {
    let clock = stored_clock(space)?;
    let now = stamped.max(clock);
    if now != clock {
        space.put(record::CLOCK_KEY.to_vec(), now.to_be_bytes().to_vec());
    }
    let may_flush = ops.iter().any(may_flush);
    let mut writer = Writer {
        space,
        index,
        now,
        format,
        written: may_flush.then(Vec::new),
    };
    ops.into_iter().map(|op| writer.apply(op)).collect()
}

/// Applies commands at one entry's index and time.
struct Writer<'a, S> {
    space: &'a mut S,
    index: u64,
    now: u64,
    /// The entry's format: whose rules its commands are read and run by
    /// (`command.rs`, `REDIS_ORDER_FORMAT`).
    format: u32,
    /// Keys this entry has stored (database, key), if it holds a flush. They
    /// carry the entry's own index, which a flush later in the same entry does
    /// not mark stale, so that flush removes them itself.
    written: Option<Vec<(u8, Vec<u8>)>>,
}

/// Whether an operation may flush a database (the common entry does not, and
/// is spared remembering every key it writes). A script may call FLUSHDB.
fn may_flush(op: &Op) -> bool {
    let is_flush = |queued: &Queued| {
        queued.args.first().is_some_and(|name| {
            [&b"flushdb"[..], b"flushall", b"eval", b"eval_ro"]
                .iter()
                .any(|flushing| name.eq_ignore_ascii_case(flushing))
        })
    };
    match op {
        Op::Run(queued) => is_flush(queued),
        Op::Exec { commands, .. } => commands.iter().any(is_flush),
        Op::Reap(_) | Op::Sweep { .. } | Op::MachineVersion { .. } => false,
    }
}

impl<S: SpaceMut> Writer<'_, S> {
    fn apply(&mut self, op: Op) -> Result<Reply, String> {
        match op {
            Op::Run(queued) => self.run(queued),
            Op::Exec { watched, commands } => {
                for watch in &watched {
                    if self.changed_since_watch(watch)? {
                        return Ok(Reply::NilArray);
                    }
                }
                let mut replies = Vec::with_capacity(commands.len());
                for queued in commands {
                    replies.push(self.run(queued)?);
                }
                Ok(Reply::Array(replies))
            }
            Op::Reap(due) => {
                let mut removed = 0;
                for Expired { db, key, at } in due {
                    let flush_mark = self.space.flush_mark(db)?;
                    match stored(&*self.space, db, &key)? {
                        // Flushed before it expired: it goes as the sweep would
                        // take it, with its index entry.
                        Some(record) if record.flushed_by(flush_mark) => {
                            self.remove_flushed(db, &key, &record)?;
                            if record.expires_at != Some(at) {
                                self.space.remove(record::expiry_key(at, db, &key));
                            }
                        }
                        Some(record)
                            if record.expires_at == Some(at) && record.expired_at(self.now) =>
                        {
                            self.remove(db, &key, &record)?;
                            removed += 1;
                        }
                        Some(record) if record.expires_at == Some(at) => {}
                        // An index entry naming an expiry the key does not have
                        // (never written so; defended all the same): drop it, or
                        // the leader would propose it again and again.
                        _ if at < self.now => self.space.remove(record::expiry_key(at, db, &key)),
                        _ => {}
                    }
                }
                Ok(Reply::Int(removed))
            }
            Op::Sweep { db, first, last } => self.sweep(db, first, last),
            Op::MachineVersion { to } => {
                // Never back: a second leader's late entry for an older
                // version changes nothing.
                let now = machine_version(&*self.space)?;
                if to > now {
                    self.space.put(
                        record::MACHINE_VERSION_KEY.to_vec(),
                        u64::from(to).to_be_bytes().to_vec(),
                    );
                }
                Ok(Reply::Int(i64::from(to.max(now))))
            }
        }
    }

    /// Removes the stale records of `db` at SCAN positions `first..=last`.
    fn sweep(&mut self, db: u8, first: u64, last: u64) -> Result<Reply, String> {
        const PAGE: usize = 1024;
        if db >= record::DATABASES {
            return Ok(error("ERR DB index is out of range"));
        }
        let flush_mark = self.space.flush_mark(db)?;
        let mut removed = 0;
        let mut from = first;
        'pages: loop {
            let page = self
                .space
                .scan(&[db], &record::scan_start(db, from), PAGE)?;
            for (stored, value) in &page {
                let Some((_, key)) = record::split_data_key(stored) else {
                    continue;
                };
                if record::position_of(stored) > last {
                    break 'pages;
                }
                let record = Record::decode_head(value).map_err(damaged)?;
                if record.flushed_by(flush_mark) {
                    self.remove_flushed(db, key, &record)?;
                    removed += 1;
                }
            }
            match page.last() {
                Some((stored, _)) if page.len() == PAGE => {
                    from = record::position_of(stored).saturating_add(1)
                }
                _ => break,
            }
        }
        Ok(Reply::Int(removed))
    }

    fn run(&mut self, Queued { db, args }: Queued) -> Result<Reply, String> {
        let words: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let command = match Command::parse_in(&words, self.format) {
            Some(Ok(command)) => command,
            Some(Err(e)) => return Ok(Reply::Error(e)),
            None => return Ok(Reply::Error("ERR unknown command in the log".into())),
        };
        if db >= record::DATABASES {
            return Ok(error("ERR DB index is out of range"));
        }
        if command.is_read() {
            return read_at(&*self.space, db, &command, self.now);
        }
        self.write(db, command)
    }

    fn changed_since_watch(&mut self, watch: &Watched) -> Result<bool, String> {
        let flush_mark = self.space.flush_mark(watch.db)?;
        let stored = stored(&*self.space, watch.db, &watch.key)?;
        let live = stored
            .as_ref()
            .filter(|record| record.is_present(flush_mark, self.now));
        Ok(match (live, &stored) {
            (Some(record), _) => record.modified != watch.seen,
            (None, _) if watch.seen != 0 => true,
            // Absent then and now, but a record written since the WATCH lies
            // there flushed or expired: the key came and went.
            (None, Some(gone)) if gone.modified > watch.since => true,
            // Absent then and now: unless a key of its removal bucket was
            // removed meanwhile, it may have come and gone. Deciding "changed"
            // then can abort a transaction needlessly, never let one through
            // wrongly.
            (None, _) => {
                let bucket = record::removed_at_key(watch.db, &watch.key);
                counter(&*self.space, &bucket)? > watch.since
            }
        })
    }

    /// A key's record at apply: an expired one is removed first, so the
    /// command meets the key as absent and the counters stay exact.
    fn fetch(&mut self, db: u8, key: &[u8]) -> Result<Option<Record>, String> {
        self.fetch_parts(db, key, true)
    }

    /// [`Writer::fetch`] without the value (left empty), for a write that
    /// replaces it: the plain SET's path, which should cost little more than
    /// the write itself.
    fn fetch_head(&mut self, db: u8, key: &[u8]) -> Result<Option<Record>, String> {
        self.fetch_parts(db, key, false)
    }

    fn fetch_parts(
        &mut self,
        db: u8,
        key: &[u8],
        with_value: bool,
    ) -> Result<Option<Record>, String> {
        let found = if with_value {
            stored(&*self.space, db, key)?
        } else {
            self.space.get_head(&record::data_key(db, key))?
        };
        let Some(record) = found else {
            return Ok(None);
        };
        if record.flushed_by(self.space.flush_mark(db)?) {
            self.remove_flushed(db, key, &record)?;
            return Ok(None);
        }
        if record.expired_at(self.now) {
            self.remove(db, key, &record)?;
            return Ok(None);
        }
        Ok(Some(record))
    }

    fn add_to_counter(&mut self, key: &[u8], delta: i64) -> Result<(), String> {
        let value = counter(&*self.space, key)?.saturating_add_signed(delta);
        self.space.put(key.to_vec(), value.to_be_bytes().to_vec());
        Ok(())
    }

    /// Writes `value` under `key` with `expires_at`, replacing `old`.
    fn store(
        &mut self,
        db: u8,
        key: &[u8],
        value: Vec<u8>,
        expires_at: Option<u64>,
        old: Option<&Record>,
    ) -> Result<(), String> {
        let old_expiry = old.and_then(|r| r.expires_at);
        if old_expiry != expires_at {
            if let Some(at) = old_expiry {
                self.space.remove(record::expiry_key(at, db, key));
            }
            if let Some(at) = expires_at {
                self.space.put(record::expiry_key(at, db, key), Vec::new());
            }
            let delta = expires_at.is_some() as i64 - old_expiry.is_some() as i64;
            if delta != 0 {
                self.add_to_counter(&record::expiring_count_key(db), delta)?;
            }
        }
        if old.is_none() {
            self.add_to_counter(&record::key_count_key(db), 1)?;
        }
        let record = Record::string(value, self.index, expires_at);
        self.space.put(record::data_key(db, key), record.encode());
        if let Some(written) = &mut self.written {
            written.push((db, key.to_vec()));
        }
        Ok(())
    }

    /// A read-modify-write of a string that keeps its expiry (INCR, APPEND,
    /// SETRANGE, SETBIT): `edit` gets the value (`None` for no key) and gives
    /// the new value and the reply, or `Err(reply)` to leave the key as it is.
    fn edit_string(
        &mut self,
        db: u8,
        key: &[u8],
        edit: impl FnOnce(Option<&[u8]>) -> Result<(Vec<u8>, Reply), Reply>,
    ) -> Result<Reply, String> {
        let old = self.fetch(db, key)?;
        let current = match old.as_ref().map(string_value) {
            None => None,
            Some(Err(wrong)) => return Ok(wrong),
            Some(Ok(value)) => Some(value),
        };
        match edit(current) {
            Err(reply) => Ok(reply),
            Ok((value, reply)) => {
                let expires_at = old.as_ref().and_then(|r| r.expires_at);
                self.store(db, key, value, expires_at, old.as_ref())?;
                Ok(reply)
            }
        }
    }

    fn remove(&mut self, db: u8, key: &[u8], old: &Record) -> Result<(), String> {
        self.space.remove(record::data_key(db, key));
        if let Some(at) = old.expires_at {
            self.space.remove(record::expiry_key(at, db, key));
            self.add_to_counter(&record::expiring_count_key(db), -1)?;
        }
        self.add_to_counter(&record::key_count_key(db), -1)?;
        self.note_removal(db, key);
        Ok(())
    }

    /// Removes a record that a flush made stale. The counters forgot it at
    /// the flush; the stale counter has not.
    fn remove_flushed(&mut self, db: u8, key: &[u8], old: &Record) -> Result<(), String> {
        self.space.remove(record::data_key(db, key));
        if let Some(at) = old.expires_at {
            self.space.remove(record::expiry_key(at, db, key));
        }
        self.add_to_counter(&record::stale_count_key(db), -1)?;
        // A WATCH of this key, absent when watched, must still see that it
        // came and went (see `changed_since_watch`).
        self.note_removal(db, key);
        Ok(())
    }

    fn note_removal(&mut self, db: u8, key: &[u8]) {
        self.space.put(
            record::removed_at_key(db, key).to_vec(),
            self.index.to_be_bytes().to_vec(),
        );
    }

    /// The absolute expiry an option asks for, or `None` if it overflows.
    fn deadline(&self, expiry: Expiry) -> Option<i64> {
        match expiry {
            Expiry::In(ms) => (self.now as i64).checked_add(ms),
            Expiry::At(ms) => Some(ms),
        }
    }

    /// Whether this entry's commands run in Redis 7.0's order of checks.
    fn redis_order(&self) -> bool {
        self.format >= REDIS_ORDER_FORMAT
    }

    fn write(&mut self, db: u8, command: Command) -> Result<Reply, String> {
        Ok(match command {
            Command::Set {
                key,
                value,
                presence,
                expiry,
                answer,
                command,
            } => {
                // Formats before 6 named every SET-like command 'set' here.
                let command = if self.redis_order() { command } else { "set" };
                // Redis refuses a time that overflows before it looks at the
                // key (GET's WRONGTYPE comes after it); formats before 6 after.
                let overflows = matches!(expiry, SetExpiry::Set(e) if self.deadline(e).is_none());
                if overflows && self.redis_order() {
                    return Ok(invalid_expire_time(command));
                }
                let old = if answer == SetAnswer::OldValue {
                    self.fetch(db, &key)?
                } else {
                    self.fetch_head(db, &key)?
                };
                let old_value = match (&old, answer) {
                    (Some(record), SetAnswer::OldValue) => match string_value(record) {
                        Ok(v) => Some(v.to_vec()),
                        Err(wrong) => return Ok(wrong),
                    },
                    _ => None,
                };
                let allowed = match presence {
                    Presence::Any => true,
                    Presence::OnlyIfAbsent => old.is_none(),
                    Presence::OnlyIfPresent => old.is_some(),
                };
                let expires_at = match expiry {
                    SetExpiry::Clear => None,
                    SetExpiry::Keep => old.as_ref().and_then(|r| r.expires_at),
                    SetExpiry::Set(expiry) => match self.deadline(expiry) {
                        Some(at) => Some(at.max(0) as u64),
                        None => return Ok(invalid_expire_time(command)),
                    },
                };
                if allowed {
                    self.store(db, &key, value, expires_at, old.as_ref())?;
                }
                match answer {
                    SetAnswer::Ok if allowed => Reply::Ok,
                    SetAnswer::Ok => Reply::Nil,
                    SetAnswer::Flag => Reply::Int(allowed as i64),
                    SetAnswer::OldValue => old_value.map_or(Reply::Nil, Reply::bulk),
                }
            }
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    let old = self.fetch_head(db, &key)?;
                    self.store(db, &key, value, None, old.as_ref())?;
                }
                Reply::Ok
            }
            Command::MSetNx(pairs) => {
                for (key, _) in &pairs {
                    if self.fetch(db, key)?.is_some() {
                        return Ok(Reply::Int(0));
                    }
                }
                for (key, value) in pairs {
                    let old = self.fetch(db, &key)?;
                    self.store(db, &key, value, None, old.as_ref())?;
                }
                Reply::Int(1)
            }
            Command::GetDel(key) => match self.fetch(db, &key)? {
                None => Reply::Nil,
                Some(record) => match string_value(&record) {
                    Err(wrong) => wrong,
                    Ok(value) => {
                        let value = value.to_vec();
                        self.remove(db, &key, &record)?;
                        Reply::bulk(value)
                    }
                },
            },
            Command::GetEx(key, option) => {
                // A refused time is reported only for a string key (Redis).
                // Only format 6 parses one into the command; earlier formats
                // refused it at parse.
                let Some(record) = self.fetch(db, &key)? else {
                    return Ok(Reply::Nil);
                };
                let value = match string_value(&record) {
                    Ok(value) => value.to_vec(),
                    Err(wrong) => return Ok(wrong),
                };
                match option {
                    GetExOption::Keep => {}
                    GetExOption::Set(Err(refused)) => return Ok(Reply::Error(refused)),
                    GetExOption::Persist => {
                        if record.expires_at.is_some() {
                            self.store(db, &key, value.clone(), None, Some(&record))?;
                        }
                    }
                    GetExOption::Set(Ok(expiry)) => match self.deadline(expiry) {
                        None => return Ok(invalid_expire_time("getex")),
                        Some(at) if at <= self.now as i64 => self.remove(db, &key, &record)?,
                        Some(at) => {
                            self.store(db, &key, value.clone(), Some(at as u64), Some(&record))?
                        }
                    },
                }
                Reply::bulk(value)
            }
            Command::IncrBy(key, by) => self.edit_string(db, &key, |current| {
                let current = match current {
                    None => 0,
                    Some(text) => super::parse::parse_integer(text)
                        .ok_or_else(|| error("ERR value is not an integer or out of range"))?,
                };
                let sum = current
                    .checked_add(by)
                    .ok_or_else(|| error("ERR increment or decrement would overflow"))?;
                Ok((sum.to_string().into_bytes(), Reply::Int(sum)))
            })?,
            Command::IncrByFloat(key, by) => self.edit_string(db, &key, |current| {
                let current = match current {
                    None => 0.0,
                    Some(text) => super::parse::parse_float(text)
                        .ok_or_else(|| error("ERR value is not a valid float"))?,
                };
                let sum = current + by;
                if !sum.is_finite() {
                    return Err(error("ERR increment would produce NaN or Infinity"));
                }
                let text = format_float(sum);
                Ok((text.clone().into_bytes(), Reply::bulk(text)))
            })?,
            Command::SetBit(key, offset, bit) => self.edit_string(db, &key, |current| {
                let mut value = current.unwrap_or_default().to_vec();
                let byte = (offset / 8) as usize;
                if value.len() <= byte {
                    value.resize(byte + 1, 0);
                }
                let mask = 1u8 << (7 - offset % 8);
                let was = value[byte] & mask != 0;
                if bit {
                    value[byte] |= mask;
                } else {
                    value[byte] &= !mask;
                }
                Ok((value, Reply::Int(was as i64)))
            })?,
            Command::Append(key, tail) => self.edit_string(db, &key, |current| {
                let current = current.unwrap_or_default();
                if current.len() + tail.len() > MAX_VALUE_LEN {
                    return Err(too_long());
                }
                let value = [current, &tail[..]].concat();
                let len = value.len() as i64;
                Ok((value, Reply::Int(len)))
            })?,
            Command::SetRange(key, offset, patch) => self.edit_string(db, &key, |current| {
                let mut value = current.unwrap_or_default().to_vec();
                // An empty patch changes nothing, and creates no key.
                if patch.is_empty() {
                    return Err(Reply::Int(value.len() as i64));
                }
                let offset = offset as usize;
                if offset.saturating_add(patch.len()) > MAX_VALUE_LEN {
                    return Err(too_long());
                }
                if value.len() < offset + patch.len() {
                    value.resize(offset + patch.len(), 0);
                }
                value[offset..offset + patch.len()].copy_from_slice(&patch);
                let len = value.len() as i64;
                Ok((value, Reply::Int(len)))
            })?,
            Command::Del(keys) => {
                let mut removed = 0;
                for key in keys {
                    if let Some(record) = self.fetch(db, &key)? {
                        self.remove(db, &key, &record)?;
                        removed += 1;
                    }
                }
                Reply::Int(removed)
            }
            Command::Expire(key, expiry, condition, name) => {
                let deadline = self.deadline(expiry);
                // Redis refuses a time that overflows even for a missing
                // key; formats before 6 answered 0 for it.
                if deadline.is_none() && self.redis_order() {
                    return Ok(invalid_expire_time(name));
                }
                let Some(record) = self.fetch(db, &key)? else {
                    return Ok(Reply::Int(0));
                };
                let Some(at) = deadline else {
                    return Ok(invalid_expire_time(name));
                };
                let allowed = match (condition, record.expires_at) {
                    (ExpireCondition::Always, _) => true,
                    (ExpireCondition::NoExpiry, current) => current.is_none(),
                    (ExpireCondition::HasExpiry, current) => current.is_some(),
                    (ExpireCondition::Later, None) => false,
                    (ExpireCondition::Later, Some(current)) => at > current as i64,
                    (ExpireCondition::Sooner, None) => true,
                    (ExpireCondition::Sooner, Some(current)) => at < current as i64,
                };
                if !allowed {
                    return Ok(Reply::Int(0));
                }
                if at <= self.now as i64 {
                    self.remove(db, &key, &record)?;
                } else {
                    let value = record.value.clone();
                    self.store(db, &key, value, Some(at as u64), Some(&record))?;
                }
                Reply::Int(1)
            }
            Command::Persist(key) => match self.fetch(db, &key)? {
                Some(record) if record.expires_at.is_some() => {
                    let value = record.value.clone();
                    self.store(db, &key, value, None, Some(&record))?;
                    Reply::Int(1)
                }
                _ => Reply::Int(0),
            },
            Command::Rename {
                from,
                to,
                only_if_absent,
            } => {
                let Some(source) = self.fetch(db, &from)? else {
                    return Ok(error("ERR no such key"));
                };
                if from == to {
                    return Ok(if only_if_absent {
                        Reply::Int(0)
                    } else {
                        Reply::Ok
                    });
                }
                let target = self.fetch(db, &to)?;
                if only_if_absent && target.is_some() {
                    return Ok(Reply::Int(0));
                }
                self.remove(db, &from, &source)?;
                self.store(
                    db,
                    &to,
                    source.value.clone(),
                    source.expires_at,
                    target.as_ref(),
                )?;
                if only_if_absent {
                    Reply::Int(1)
                } else {
                    Reply::Ok
                }
            }
            Command::Copy {
                from,
                to,
                db: target_db,
                replace,
            } => {
                let target_db = target_db.unwrap_or(db);
                if from == to && target_db == db {
                    return Ok(error("ERR source and destination objects are the same"));
                }
                let Some(source) = self.fetch(db, &from)? else {
                    return Ok(Reply::Int(0));
                };
                let target = self.fetch(target_db, &to)?;
                if target.is_some() && !replace {
                    return Ok(Reply::Int(0));
                }
                self.store(
                    target_db,
                    &to,
                    source.value.clone(),
                    source.expires_at,
                    target.as_ref(),
                )?;
                Reply::Int(1)
            }
            Command::FlushDb => {
                self.flush(db)?;
                Reply::Ok
            }
            Command::FlushAll => {
                for db in 0..record::DATABASES {
                    self.flush(db)?;
                }
                Reply::Ok
            }
            Command::Eval(eval) => script::run(self, db, &eval)?,
            read => read_at(&*self.space, db, &read, self.now)?,
        })
    }

    /// Empties `db` at the cost of a few counters, whatever its size: the
    /// flush mark makes every record written before this entry stale (see
    /// `record.rs`), and the leader's sweep removes them later.
    fn flush(&mut self, db: u8) -> Result<(), String> {
        let keys = counter(&*self.space, &record::key_count_key(db))?;
        if keys == 0 {
            return Ok(());
        }
        let mut removed_now = 0;
        let (here, elsewhere): (Vec<_>, Vec<_>) = self
            .written
            .take()
            .unwrap_or_default()
            .into_iter()
            .partition(|(written_db, _)| *written_db == db);
        self.written = Some(elsewhere);
        for (_, key) in here {
            if let Some(record) = stored(&*self.space, db, &key)? {
                if record.modified == self.index {
                    self.space.remove(record::data_key(db, &key));
                    if let Some(at) = record.expires_at {
                        self.space.remove(record::expiry_key(at, db, &key));
                    }
                    removed_now += 1;
                }
            }
        }
        self.add_to_counter(
            &record::stale_count_key(db),
            keys.saturating_sub(removed_now) as i64,
        )?;
        for emptied in [record::key_count_key(db), record::expiring_count_key(db)] {
            self.space
                .put(emptied.to_vec(), 0u64.to_be_bytes().to_vec());
        }
        self.space.set_flush_mark(db, self.index);
        Ok(())
    }
}

/// A script that may write runs its calls in the entry's apply batch.
impl<S: SpaceMut> Host for Writer<'_, S> {
    fn run(&mut self, db: u8, command: Command) -> Result<Reply, String> {
        if command.is_read() {
            read_at(&*self.space, db, &command, self.now)
        } else {
            self.write(db, command)
        }
    }

    fn random_key(&mut self, db: u8, seed: u64) -> Result<Reply, String> {
        random_key(&*self.space, db, self.now, script_seed(self.index, seed))
    }

    fn now(&self) -> u64 {
        self.now
    }

    fn format(&self) -> u32 {
        self.format
    }
}

/// A read-only script runs its calls on a read view.
struct ReadHost<'a, S> {
    space: &'a S,
    now: u64,
}

impl<S: Space> Host for ReadHost<'_, S> {
    fn run(&mut self, db: u8, command: Command) -> Result<Reply, String> {
        if !command.is_read() {
            // `script::calls` refuses writes first; never an internal error here.
            return Ok(Reply::Error(
                "ERR Write commands are not allowed from read-only scripts.".into(),
            ));
        }
        read_at(self.space, db, &command, self.now)
    }

    fn random_key(&mut self, db: u8, seed: u64) -> Result<Reply, String> {
        random_key(self.space, db, self.now, script_seed(self.now, seed))
    }

    fn now(&self) -> u64 {
        self.now
    }

    /// A read is not in the log and one replica answers it: this build's
    /// newest rules, as the front end checked the script's command by.
    fn format(&self) -> u32 {
        PROPOSAL_FORMAT
    }
}

/// Where a script's RANDOMKEY looks: from the entry and the call's number,
/// so every replica picks the same key.
fn script_seed(entry: u64, call: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&[entry.to_be_bytes(), call.to_be_bytes()].concat())
}

fn invalid_expire_time(command: &str) -> Reply {
    Reply::Error(format!("ERR invalid expire time in '{command}' command"))
}

fn too_long() -> Reply {
    error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
}

/// INCRBYFLOAT's result as text: the shortest form that reads back the same,
/// never in exponent notation (as Redis prints it).
fn format_float(value: f64) -> String {
    let text = format!("{value}");
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::testing::Machine;

    fn bulk(text: &str) -> Reply {
        Reply::bulk(text.as_bytes())
    }

    /// Format 6's apply-time changes (`REDIS_ORDER_FORMAT`), each beside
    /// what an entry of format 5 still gets.
    #[test]
    fn format_6_answers_in_redis_order_and_format_5_as_before() {
        let far = "9223372036854775807";
        for (format, getex_missing, expire_missing, psetex) in [
            (
                6,
                Reply::Nil,
                error("ERR invalid expire time in 'pexpire' command"),
                error("ERR invalid expire time in 'psetex' command"),
            ),
            (
                5,
                error("ERR value is not an integer or out of range"),
                Reply::Int(0),
                error("ERR invalid expire time in 'set' command"),
            ),
        ] {
            let mut m = Machine::new();
            m.format = format;
            assert_eq!(m.run(1000, &["getex", "gone", "ex", "soon"]), getex_missing);
            assert_eq!(m.run(1000, &["pexpire", "gone", far]), expire_missing);
            assert_eq!(m.run(1000, &["psetex", "k", far, "v"]), psetex);
            assert_eq!(m.read(1000, &["exists", "k"]), Reply::Int(0));
            // A key that is there meets the time's mistake in both.
            assert_eq!(m.run(1000, &["set", "k", "v"]), Reply::Ok);
            assert_eq!(
                m.run(1000, &["getex", "k", "ex", "soon"]),
                error("ERR value is not an integer or out of range")
            );
            assert_eq!(
                m.run(1000, &["getex", "k", "ex", "0"]),
                error("ERR invalid expire time in 'getex' command")
            );
            assert_eq!(m.read(1000, &["ttl", "k"]), Reply::Int(-1));
        }
    }

    #[test]
    fn set_nx_px_is_a_lock_that_expires_by_the_entry_clock() {
        let mut m = Machine::new();
        assert_eq!(
            m.run(1000, &["set", "lock", "a", "nx", "px", "100"]),
            Reply::Ok
        );
        assert_eq!(
            m.run(1050, &["set", "lock", "b", "nx", "px", "100"]),
            Reply::Nil
        );
        assert_eq!(m.read(1100, &["get", "lock"]), bulk("a"));
        assert_eq!(m.read(1101, &["get", "lock"]), Reply::Nil);
        assert_eq!(
            m.run(1101, &["set", "lock", "b", "nx", "px", "100"]),
            Reply::Ok
        );
        assert_eq!(m.read(1101, &["dbsize"]), Reply::Int(1));
    }

    #[test]
    fn the_clock_never_runs_backwards() {
        let mut m = Machine::new();
        m.run(5000, &["set", "k", "v", "px", "1000"]);
        // A later leader with a slow clock: its entry still applies at 5000 or later.
        assert_eq!(m.run(1000, &["pttl", "k"]), Reply::Int(1000));
        assert_eq!(m.read(0, &["pttl", "k"]), Reply::Int(1000));
    }

    #[test]
    fn the_machine_version_starts_unversioned_and_only_goes_up() {
        let mut m = Machine::new();
        assert_eq!(machine_version(&m.space), Ok(3));
        let mut set = |to: u32, index: u64| {
            apply_entry(
                &mut m.space,
                index,
                1,
                m.format,
                vec![Op::MachineVersion { to }],
            )
            .expect("the map never fails")
            .remove(0)
        };
        assert_eq!(set(4, 1), Reply::Int(4));
        // A late entry of an older version (a former leader's) changes nothing.
        assert_eq!(set(3, 2), Reply::Int(4));
        assert_eq!(machine_version(&m.space), Ok(4));
        assert!(!record::is_data_key(&record::MACHINE_VERSION_KEY));
    }

    #[test]
    fn counters_count_and_refuse_what_is_not_a_number() {
        let mut m = Machine::new();
        assert_eq!(m.run(1, &["incr", "n"]), Reply::Int(1));
        assert_eq!(m.run(1, &["incrby", "n", "41"]), Reply::Int(42));
        assert_eq!(m.run(1, &["decrby", "n", "2"]), Reply::Int(40));
        m.run(1, &["set", "s", "x"]);
        assert_eq!(
            m.run(1, &["incr", "s"]),
            error("ERR value is not an integer or out of range")
        );
        m.run(1, &["set", "max", "9223372036854775807"]);
        assert_eq!(
            m.run(1, &["incr", "max"]),
            error("ERR increment or decrement would overflow")
        );
        assert_eq!(m.run(1, &["incrbyfloat", "f", "10.5"]), bulk("10.5"));
        assert_eq!(m.run(1, &["incrbyfloat", "f", "0.1"]), bulk("10.6"));
        assert_eq!(m.run(1, &["incrbyfloat", "f", "-10.6"]), bulk("0"));
    }

    #[test]
    fn expire_options_follow_redis() {
        let mut m = Machine::new();
        m.run(0, &["set", "k", "v"]);
        assert_eq!(m.run(0, &["expire", "k", "100", "xx"]), Reply::Int(0));
        assert_eq!(m.run(0, &["expire", "k", "100", "gt"]), Reply::Int(0));
        assert_eq!(m.run(0, &["expire", "k", "100", "nx"]), Reply::Int(1));
        assert_eq!(m.run(0, &["expire", "k", "50", "gt"]), Reply::Int(0));
        assert_eq!(m.run(0, &["expire", "k", "50", "lt"]), Reply::Int(1));
        assert_eq!(m.read(0, &["ttl", "k"]), Reply::Int(50));
        assert_eq!(m.run(0, &["persist", "k"]), Reply::Int(1));
        assert_eq!(m.read(0, &["ttl", "k"]), Reply::Int(-1));
        assert_eq!(m.run(0, &["expire", "k", "-1"]), Reply::Int(1));
        assert_eq!(m.read(0, &["ttl", "k"]), Reply::Int(-2));
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(0));
    }

    #[test]
    fn active_expiry_finds_due_keys_and_reaps_only_those_still_due() {
        let mut m = Machine::new();
        m.run(0, &["set", "a", "1", "px", "10"]);
        m.run(0, &["set", "b", "1", "px", "1000"]);
        let due = due_expiries(&m.space, 500, 100).unwrap();
        assert_eq!(due.len(), 1);
        m.index += 1;
        let reaped =
            apply_entry(&mut m.space, m.index, 500, m.format, vec![Op::Reap(due)]).unwrap();
        assert_eq!(reaped, vec![Reply::Int(1)]);
        assert_eq!(m.read(500, &["dbsize"]), Reply::Int(1));
        assert!(due_expiries(&m.space, 500, 100).unwrap().is_empty());
    }

    #[test]
    fn string_commands_edit_in_place() {
        let mut m = Machine::new();
        assert_eq!(m.run(0, &["append", "s", "Hello"]), Reply::Int(5));
        assert_eq!(m.run(0, &["setrange", "s", "7", "World"]), Reply::Int(12));
        assert_eq!(
            m.read(0, &["get", "s"]),
            Reply::bulk(b"Hello\0\0World".to_vec())
        );
        assert_eq!(m.read(0, &["getrange", "s", "-5", "-1"]), bulk("World"));
        assert_eq!(
            m.read(0, &["getrange", "s", "0", "100"]).clone(),
            Reply::bulk(b"Hello\0\0World".to_vec())
        );
        assert_eq!(m.read(0, &["strlen", "s"]), Reply::Int(12));
        assert_eq!(
            m.run(0, &["getset", "s", "x"]),
            Reply::bulk(b"Hello\0\0World".to_vec())
        );
        assert_eq!(m.run(0, &["getdel", "s"]), bulk("x"));
        assert_eq!(m.read(0, &["exists", "s"]), Reply::Int(0));
    }

    #[test]
    fn rename_and_copy_keep_the_expiry() {
        let mut m = Machine::new();
        m.run(0, &["set", "a", "1", "ex", "100"]);
        assert_eq!(m.run(0, &["rename", "a", "b"]), Reply::Ok);
        assert_eq!(m.read(0, &["ttl", "b"]), Reply::Int(100));
        assert_eq!(m.run(0, &["copy", "b", "c"]), Reply::Int(1));
        assert_eq!(m.run(0, &["copy", "b", "c"]), Reply::Int(0));
        assert_eq!(m.read(0, &["ttl", "c"]), Reply::Int(100));
        assert_eq!(
            m.run(0, &["rename", "nothing", "x"]),
            error("ERR no such key")
        );
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(2));
        assert_eq!(m.run(0, &["flushall"]), Reply::Ok);
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(0));
        assert_eq!(m.read(0, &["ttl", "c"]), Reply::Int(-2));
    }

    impl Machine {
        fn apply(&mut self, time: u64, op: Op) -> Reply {
            self.index += 1;
            apply_entry(&mut self.space, self.index, time, self.format, vec![op])
                .unwrap()
                .remove(0)
        }

        fn queued(words: &[&str]) -> Queued {
            let args = words.iter().map(|w| Bytes(w.as_bytes().to_vec())).collect();
            Queued { db: 0, args }
        }

        fn stored_keys(&self) -> usize {
            self.space
                .0
                .keys()
                .filter(|k| record::is_data_key(k))
                .count()
        }
    }

    #[test]
    fn a_flush_empties_at_once_and_the_sweep_reclaims_the_records() {
        let mut m = Machine::new();
        for i in 0..50 {
            m.run(0, &["set", &format!("k{i}"), "v", "ex", "100"]);
            m.run(0, &["set", &format!("p{i}"), "v"]);
        }
        assert_eq!(m.run(0, &["flushdb"]), Reply::Ok);
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(0));
        assert_eq!(m.read(0, &["get", "p1"]), Reply::Nil);
        assert_eq!(m.read(0, &["keys", "*"]), Reply::Array(vec![]));
        assert_eq!(m.read(0, &["randomkey"]), Reply::Nil);
        let Reply::Array(scan) = m.read(0, &["scan", "0", "count", "1000"]) else {
            panic!()
        };
        assert_eq!(scan[1], Reply::Array(vec![]));
        // Still on disk, counted as stale, until swept.
        assert_eq!(m.stored_keys(), 100);
        // Writing a flushed key removes its stale record and starts afresh.
        assert_eq!(m.run(0, &["incr", "p1"]), Reply::Int(1));
        assert_eq!(m.read(0, &["ttl", "p1"]), Reply::Int(-1));
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(1));
        assert_eq!(counter(&m.space, &record::stale_count_key(0)), Ok(99));
        // Two sweeps over halves of the positions reclaim every stale record.
        let middle = u64::MAX / 2;
        let first = m.apply(
            0,
            Op::Sweep {
                db: 0,
                first: 0,
                last: middle,
            },
        );
        let second = m.apply(
            0,
            Op::Sweep {
                db: 0,
                first: middle + 1,
                last: u64::MAX,
            },
        );
        let (Reply::Int(a), Reply::Int(b)) = (first, second) else {
            panic!()
        };
        assert_eq!(a + b, 99);
        assert_eq!(m.stored_keys(), 1);
        assert_eq!(counter(&m.space, &record::stale_count_key(0)), Ok(0));
        assert!(due_expiries(&m.space, u64::MAX, 100).unwrap().is_empty());
        assert_eq!(m.read(0, &["get", "p1"]), bulk("1"));
    }

    #[test]
    fn active_expiry_of_a_flushed_key_removes_only_the_stale_record() {
        let mut m = Machine::new();
        m.run(0, &["set", "k", "v", "px", "10"]);
        m.run(0, &["flushdb"]);
        m.run(0, &["set", "other", "v"]);
        let due = due_expiries(&m.space, 1_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        m.apply(1_000, Op::Reap(due));
        assert_eq!(m.read(1_000, &["dbsize"]), Reply::Int(1));
        assert_eq!(m.stored_keys(), 1);
        assert_eq!(counter(&m.space, &record::stale_count_key(0)), Ok(0));
    }

    #[test]
    fn a_flush_inside_a_transaction_removes_what_came_before_it_only() {
        let mut m = Machine::new();
        m.run(0, &["set", "old", "1"]);
        let exec = Op::Exec {
            watched: vec![],
            commands: vec![
                Machine::queued(&["set", "a", "1", "ex", "10"]),
                Machine::queued(&["flushdb"]),
                Machine::queued(&["set", "b", "2"]),
                Machine::queued(&["get", "a"]),
            ],
        };
        let Reply::Array(replies) = m.apply(0, exec) else {
            panic!()
        };
        assert_eq!(replies, vec![Reply::Ok, Reply::Ok, Reply::Ok, Reply::Nil]);
        assert_eq!(m.read(0, &["keys", "*"]), Reply::Array(vec![bulk("b")]));
        assert_eq!(m.read(0, &["dbsize"]), Reply::Int(1));
        // "a" is gone from disk already, "old" waits for the sweep.
        assert_eq!(m.stored_keys(), 2);
        assert_eq!(counter(&m.space, &record::stale_count_key(0)), Ok(1));
        assert!(due_expiries(&m.space, u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn a_flush_touches_watched_keys_that_existed_and_no_others() {
        let mut m = Machine::new();
        m.run(0, &["set", "x", "30"]);
        let watch = |m: &Machine, key: &str| Watched {
            db: 0,
            key: Bytes(key.as_bytes().to_vec()),
            seen: watch_stamp(&m.space, 0, key.as_bytes(), 0).unwrap(),
            since: m.index,
        };
        let exec = |m: &mut Machine, watched: Watched| {
            let commands = vec![Machine::queued(&["ping"])];
            let op = Op::Exec {
                watched: vec![watched],
                commands,
            };
            m.apply(0, op)
        };
        let present = watch(&m, "x");
        let absent = watch(&m, "y");
        m.run(0, &["flushall"]);
        assert_eq!(exec(&mut m, present), Reply::NilArray);
        assert_ne!(exec(&mut m, absent), Reply::NilArray);
        // Absent when watched, written and flushed since: it came and went.
        let absent = watch(&m, "y");
        m.run(0, &["set", "y", "1"]);
        m.run(0, &["flushdb"]);
        assert_eq!(exec(&mut m, absent), Reply::NilArray);
    }

    #[test]
    fn a_transaction_is_refused_after_its_watched_key_changed() {
        let mut m = Machine::new();
        m.run(0, &["set", "w", "1"]);
        let seen = watch_stamp(&m.space, 0, b"w", 0).unwrap();
        let watch = Watched {
            db: 0,
            key: Bytes(b"w".to_vec()),
            seen,
            since: m.index,
        };
        let set = |v: &str| Queued {
            db: 0,
            args: vec![
                Bytes(b"set".to_vec()),
                Bytes(b"w".to_vec()),
                Bytes(v.as_bytes().to_vec()),
            ],
        };
        let exec = |m: &mut Machine, v: &str| {
            m.index += 1;
            let op = Op::Exec {
                watched: vec![watch.clone()],
                commands: vec![set(v)],
            };
            apply_entry(&mut m.space, m.index, 0, m.format, vec![op])
                .unwrap()
                .remove(0)
        };
        assert_eq!(exec(&mut m, "mine"), Reply::Array(vec![Reply::Ok]));
        // The transaction's own write now counts as a change for that old watch.
        assert_eq!(exec(&mut m, "again"), Reply::NilArray);
        assert_eq!(m.read(0, &["get", "w"]), bulk("mine"));
    }

    #[test]
    fn a_watched_absent_key_aborts_only_if_it_came_and_went() {
        let mut m = Machine::new();
        m.run(0, &["set", "other", "1"]);
        let watch = Watched {
            db: 0,
            key: Bytes(b"w".to_vec()),
            seen: watch_stamp(&m.space, 0, b"w", 0).unwrap(),
            since: m.index,
        };
        let exec = |m: &mut Machine| {
            m.index += 1;
            let op = Op::Exec {
                watched: vec![watch.clone()],
                commands: vec![],
            };
            apply_entry(&mut m.space, m.index, 0, m.format, vec![op])
                .unwrap()
                .remove(0)
        };
        // Another key removed (of another removal bucket): still runs.
        assert_ne!(
            record::removed_at_key(0, b"w"),
            record::removed_at_key(0, b"other")
        );
        m.run(0, &["del", "other"]);
        assert_eq!(exec(&mut m), Reply::Array(vec![]));
        // The watched key created and removed again: refused.
        m.run(0, &["set", "w", "1"]);
        m.run(0, &["del", "w"]);
        assert_eq!(exec(&mut m), Reply::NilArray);
    }

    #[test]
    fn scan_returns_every_key_once_over_many_calls() {
        let mut m = Machine::new();
        for i in 0..100 {
            m.run(0, &["set", &format!("key:{i}"), "v"]);
        }
        let mut cursor = "0".to_string();
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let Reply::Array(parts) = m.read(0, &["scan", &cursor, "count", "7"]) else {
                panic!()
            };
            let [Reply::Bulk(next), Reply::Array(keys)] = &parts[..] else {
                panic!()
            };
            for key in keys {
                let Reply::Bulk(key) = key else { panic!() };
                seen.insert(key.0.clone());
            }
            cursor = String::from_utf8(next.0.clone()).unwrap();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn glob_patterns_match_like_redis() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("*a*b", "xxaxxb", true),
            ("*a*b", "xxaxxc", false),
        ] {
            assert_eq!(
                pattern_matches(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} {text}"
            );
        }
        let many = "*a".repeat(2000) + "b";
        assert!(!pattern_matches(many.as_bytes(), &[b'a'; 3000]));
    }
}
