//! How the key-value state is laid out in the data keyspace.
//!
//! | stored key                              | stored value                      |
//! |-----------------------------------------|-----------------------------------|
//! | `db` (0..16), key hash (u64 BE), key    | a [`Record`]                      |
//! | `0xE0`, expiry (ms, u64 BE), `db`, key  | empty: the expiry index           |
//! | `0xF0`, name                            | the machine's own counters (u64)  |
//!
//! FLUSHDB and FLUSHALL cost the same at any size: they write the flushing
//! entry's index as the database's flush mark, and every record written
//! before its database's mark is gone from then on, to every command, though
//! it still lies on disk. The leader then removes those stale records through
//! the log, a bounded range at a time (`Op::Sweep`), so every replica
//! reclaims them at the same index.
//!
//! Keys of a database sort by the hash of the user key, so `SCAN` walks a
//! database in an order no write can disturb: its cursor is simply the hash to
//! go on from, an integer as clients expect, and it survives leader changes
//! because every replica holds the same order. The expiry index sorts by time,
//! so the leader finds what has expired by reading its front. The counters
//! (keys and expiring keys per database, the machine's clock and version, the
//! last index at which each database lost a key of each removal bucket) live in the same
//! keyspace, so snapshots,
//! installs and checksums carry them with the data they describe.

use xxhash_rust::xxh3::xxh3_64;

/// Databases `SELECT` can choose, as in Redis's default configuration.
pub const DATABASES: u8 = 16;

const EXPIRY_PREFIX: u8 = 0xE0;
const META_PREFIX: u8 = 0xF0;

/// The machine's clock: the largest leader time any applied entry carried.
pub const CLOCK_KEY: [u8; 2] = [META_PREFIX, b'c'];

/// The cluster's machine version, as the last `Op::MachineVersion` applied
/// set it (absent: `command::UNVERSIONED_MACHINE`). It lives with the data,
/// so snapshots, backups and CHECKSUM carry it: two replicas at the same
/// index must agree on it, as they must on every other record.
pub const MACHINE_VERSION_KEY: [u8; 2] = [META_PREFIX, b'v'];

/// The counter of keys stored in `db` (expired ones included until removed).
pub fn key_count_key(db: u8) -> [u8; 3] {
    [META_PREFIX, b'n', db]
}

/// The counter of keys in `db` that carry an expiry.
pub fn expiring_count_key(db: u8) -> [u8; 3] {
    [META_PREFIX, b'x', db]
}

/// The index of the entry that last flushed `db` (0 for never): records of
/// `db` written before it are gone.
pub fn flush_mark_key(db: u8) -> [u8; 3] {
    [META_PREFIX, b'f', db]
}

/// The counter of stale records of `db`: flushed, not yet swept away.
pub fn stale_count_key(db: u8) -> [u8; 3] {
    [META_PREFIX, b's', db]
}

/// Keys are spread over this many removal buckets per database, by hash.
pub const REMOVAL_BUCKETS: u64 = 4096;

/// The last log index at which a key of `db` in `key`'s removal bucket was
/// removed. WATCH reads it for a key that is absent now and was then: if it
/// is older than the WATCH, that key cannot have come and gone meanwhile.
/// (One record per key would be exact, but would have to be cleaned up; one
/// per bucket is bounded, and wrong only the safe way: a needless abort when
/// another key of the same bucket was removed, one chance in 4096 a key.)
pub fn removed_at_key(db: u8, key: &[u8]) -> [u8; 5] {
    let bucket = (scan_position(key) % REMOVAL_BUCKETS) as u16;
    let [high, low] = bucket.to_be_bytes();
    [META_PREFIX, b'd', db, high, low]
}

/// Where a user key of `db` is stored.
pub fn data_key(db: u8, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(9 + key.len());
    stored.push(db);
    stored.extend_from_slice(&scan_position(key).to_be_bytes());
    stored.extend_from_slice(key);
    stored
}

/// The database and user key of a stored key, if it is one.
pub fn split_data_key(stored: &[u8]) -> Option<(u8, &[u8])> {
    let (&db, rest) = stored.split_first()?;
    (db < DATABASES && rest.len() >= 8).then(|| (db, &rest[8..]))
}

/// The SCAN position of a key: its hash, never zero (cursor 0 means "from
/// the start" and "done").
pub fn scan_position(key: &[u8]) -> u64 {
    xxh3_64(key).max(1)
}

/// The stored-key prefix of all of `db`'s keys from SCAN position `from` on.
pub fn scan_start(db: u8, from: u64) -> Vec<u8> {
    let mut start = vec![db];
    start.extend_from_slice(&from.to_be_bytes());
    start
}

/// The SCAN position of a stored data key.
pub fn position_of(stored: &[u8]) -> u64 {
    stored
        .get(1..9)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The expiry-index entry of a key that expires at `at` (ms since the epoch).
pub fn expiry_key(at: u64, db: u8, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(10 + key.len());
    stored.push(EXPIRY_PREFIX);
    stored.extend_from_slice(&at.to_be_bytes());
    stored.push(db);
    stored.extend_from_slice(key);
    stored
}

/// Every expiry-index entry starts with this.
pub const EXPIRY_INDEX: [u8; 1] = [EXPIRY_PREFIX];

/// The time, database and user key of an expiry-index entry.
pub fn split_expiry_key(stored: &[u8]) -> Option<(u64, u8, &[u8])> {
    if stored.first() != Some(&EXPIRY_PREFIX) || stored.len() < 10 {
        return None;
    }
    let at = u64::from_be_bytes(stored[1..9].try_into().ok()?);
    Some((at, stored[9], &stored[10..]))
}

/// The error for a record that cannot be decoded.
pub fn damaged(why: String) -> String {
    format!("a stored key is damaged: {why}")
}

/// Whether a stored key is a user key (not an index entry or a counter).
pub fn is_data_key(stored: &[u8]) -> bool {
    stored.first().is_some_and(|&db| db < DATABASES)
}

/// What kind of value a key holds. Only strings exist so far; the tag is
/// stored so other types can be added without a format break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String = 0,
}

/// One key's stored value: its kind, the log index that last wrote it (WATCH
/// compares it), its expiry, and the value itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub modified: u64,
    pub expires_at: Option<u64>,
    pub value: Vec<u8>,
}

const HAS_EXPIRY: u8 = 1;

impl Record {
    pub fn string(value: Vec<u8>, modified: u64, expires_at: Option<u64>) -> Record {
        Record {
            kind: Kind::String,
            modified,
            expires_at,
            value,
        }
    }

    /// `kind`, flags, `modified` (u64 BE), `expires_at` if flagged, the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.value.len());
        out.push(self.kind as u8);
        out.push(if self.expires_at.is_some() {
            HAS_EXPIRY
        } else {
            0
        });
        out.extend_from_slice(&self.modified.to_be_bytes());
        if let Some(at) = self.expires_at {
            out.extend_from_slice(&at.to_be_bytes());
        }
        out.extend_from_slice(&self.value);
        out
    }

    /// Reads a record back; an error names what is wrong with it.
    pub fn decode(stored: &[u8]) -> Result<Record, String> {
        Record::decode_parts(stored, true)
    }

    /// Reads all but the value (left empty): what a write that replaces the
    /// value needs to know of the old one, without copying it.
    pub fn decode_head(stored: &[u8]) -> Result<Record, String> {
        Record::decode_parts(stored, false)
    }

    fn decode_parts(stored: &[u8], with_value: bool) -> Result<Record, String> {
        let (&kind, rest) = stored.split_first().ok_or("an empty record")?;
        let kind = match kind {
            0 => Kind::String,
            other => return Err(format!("a record of unknown kind {other}")),
        };
        let (&flags, rest) = rest.split_first().ok_or("a record without flags")?;
        let number = |bytes: &[u8]| -> Result<u64, String> {
            bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| "a record cut short".to_string())
        };
        let modified = number(rest)?;
        let rest = &rest[8..];
        let (expires_at, value) = if flags & HAS_EXPIRY != 0 {
            (Some(number(rest)?), &rest[8..])
        } else {
            (None, rest)
        };
        Ok(Record {
            kind,
            modified,
            expires_at,
            value: if with_value {
                value.to_vec()
            } else {
                Vec::new()
            },
        })
    }

    /// Whether a flush of its database at `flush_mark` removed this record.
    pub fn flushed_by(&self, flush_mark: u64) -> bool {
        self.modified < flush_mark
    }

    /// Whether the key exists: neither flushed nor expired.
    pub fn is_present(&self, flush_mark: u64, now: u64) -> bool {
        !self.flushed_by(flush_mark) && !self.expired_at(now)
    }

    /// Whether the key has expired at `now`. As in Redis, a key is still there
    /// at the very millisecond of its expiry.
    pub fn expired_at(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }
}

/// A counter's stored form.
pub fn decode_counter(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_and_without_expiry() {
        for record in [
            Record::string(b"v".to_vec(), 7, None),
            Record::string(Vec::new(), 0, Some(1_700_000_000_000)),
            Record::string(vec![0xff; 300], u64::MAX, Some(0)),
        ] {
            assert_eq!(Record::decode(&record.encode()), Ok(record));
        }
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[9, 0],
            &[0],
            &[0, 0, 1, 2],
            &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert!(Record::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_keys_split_back_into_their_parts() {
        let stored = data_key(3, b"hello");
        assert_eq!(split_data_key(&stored), Some((3, &b"hello"[..])));
        assert_eq!(position_of(&stored), scan_position(b"hello"));
        assert!(is_data_key(&stored));
        let index = expiry_key(42, 5, b"k");
        assert_eq!(split_expiry_key(&index), Some((42, 5, &b"k"[..])));
        assert!(!is_data_key(&index));
        assert!(!is_data_key(&CLOCK_KEY));
        assert!(expiry_key(1, 0, b"z") < expiry_key(2, 0, b"a"));
    }
}
