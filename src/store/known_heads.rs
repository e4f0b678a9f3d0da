//! The heads of recently written records, kept in memory for apply.
//!
//! Every write looks up the record it replaces, for the key counters and the
//! expiry index (`machine/execute.rs`), even a plain SET that discards the old
//! value. In fjall that lookup searches the memtables' skiplists and then the
//! tables' filters and blocks, and it was the largest single cost of a write
//! at every replica. Keys are mostly written again soon after, so apply keeps
//! what it last wrote under each of the keys it wrote recently: the record
//! without its value, or that the key is absent.
//!
//! What keeps it right: it is filled only with what a committed apply batch
//! wrote (`absorb`, called after the commit), apply is the only writer of
//! the data keyspace, and installing a snapshot, which replaces that
//! keyspace, empties it. So a head found here is the head fjall would give.
//! Debug builds (every test run) check each one against fjall. Nothing here
//! is state: a restart starts empty and answers the same, only slower.

use std::collections::{BTreeMap, HashMap};

use crate::machine::record::{self, Kind, Record};

/// At most this many keys are kept, each in about 50 bytes of table and its
/// key: 7/8 of 2^17, the most a table of 2^17 slots holds before it doubles.
/// When full it starts over: simpler than an eviction order, and a key
/// written often comes back at its next write.
const MAX_KEYS: usize = 7 * (1 << 17) / 8;

#[derive(Default)]
pub struct KnownHeads {
    /// A stored data key to its record's head, or `None` when the key has
    /// no record.
    heads: HashMap<Box<[u8]>, Option<Head>>,
}

/// A [`Record`] without its value: half the size of one with an empty value.
#[derive(Debug, Clone, Copy)]
struct Head {
    kind: Kind,
    modified: u64,
    expires_at: Option<u64>,
}

impl Head {
    fn of(record: &Record) -> Head {
        Head {
            kind: record.kind,
            modified: record.modified,
            expires_at: record.expires_at,
        }
    }

    fn record(self) -> Record {
        Record {
            kind: self.kind,
            modified: self.modified,
            expires_at: self.expires_at,
            value: Vec::new(),
        }
    }
}

impl KnownHeads {
    /// The head of the record under a stored data key: `None` if not known
    /// here, `Some(None)` if known to be absent.
    pub fn get(&self, key: &[u8]) -> Option<Option<Record>> {
        self.heads.get(key).map(|head| head.map(Head::record))
    }

    /// What an apply batch wrote, once it is committed: its writes by key
    /// (`None` for a removal). Keys other than data keys are passed over.
    pub fn absorb(&mut self, written: BTreeMap<Vec<u8>, Option<fjall::Slice>>) {
        for (key, value) in written {
            if !record::is_data_key(&key) {
                continue;
            }
            let head = match value {
                None => None,
                Some(stored) => match Record::decode_head(&stored) {
                    Ok(record) => Some(Head::of(&record)),
                    // Not expected from our own writes; fjall will answer.
                    Err(_) => {
                        self.heads.remove(key.as_slice());
                        continue;
                    }
                },
            };
            if self.heads.len() >= MAX_KEYS && !self.heads.contains_key(key.as_slice()) {
                self.heads.clear();
            }
            self.heads.insert(key.into_boxed_slice(), head);
        }
    }

    /// The data keyspace was replaced (a snapshot was installed).
    pub fn forget_all(&mut self) {
        self.heads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(record: &Record) -> Option<fjall::Slice> {
        Some(fjall::Slice::from(record.encode()))
    }

    #[test]
    fn keeps_heads_and_absences_of_data_keys_only() {
        let mut heads = KnownHeads::default();
        let kept = record::data_key(0, b"kept");
        let removed = record::data_key(0, b"removed");
        let counter = record::key_count_key(0).to_vec();
        let written = Record::string(b"value".to_vec(), 7, Some(99));
        heads.absorb(BTreeMap::from([
            (kept.clone(), stored(&written)),
            (removed.clone(), None),
            (
                counter.clone(),
                Some(fjall::Slice::from(1u64.to_be_bytes().to_vec())),
            ),
        ]));
        let head = heads.get(&kept).flatten().expect("a head");
        assert_eq!((head.modified, head.expires_at), (7, Some(99)));
        assert!(head.value.is_empty(), "only the head is kept");
        assert_eq!(heads.get(&removed), Some(None));
        assert_eq!(heads.get(&counter), None);
        assert_eq!(heads.get(&record::data_key(0, b"never")), None);
        heads.forget_all();
        assert_eq!(heads.get(&kept), None);
    }

    #[test]
    fn starts_over_when_full() {
        let mut heads = KnownHeads::default();
        let write = |i: usize| (record::data_key(0, i.to_string().as_bytes()), None);
        heads.absorb((0..MAX_KEYS).map(write).collect());
        assert_eq!(heads.heads.len(), MAX_KEYS);
        heads.absorb((MAX_KEYS..MAX_KEYS + 1).map(write).collect());
        assert_eq!(heads.heads.len(), 1);
    }
}
