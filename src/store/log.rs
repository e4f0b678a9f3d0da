//! The Raft log and the vote, in the `raft_log` and `raft_meta` keyspaces.
//!
//! Contract with openraft (durability rules 1 and 2 of `store/mod.rs`):
//! - `save_vote` returns only after the vote is fsynced.
//! - `append` writes the entries into the journal in one batch and returns;
//!   the flusher (`group_commit.rs`) completes openraft's `IOFlushed`
//!   callback after the fsync that covers them.
//! - Entries are keyed by index in big-endian, so key order is log order and the
//!   last entry is the last key.
//! - The first index still held is derived from `purged`, a small record, rather
//!   than by walking the keyspace's head (which would step over the tombstones
//!   that purging leaves behind).
//!
//! # Log records
//! An entry is stored as one tag byte, [`BINARY_RECORD`], then the entry in
//! the binary encoding (`binary.rs`). Builds before it stored the entry as
//! JSON, which always starts with `{`; the tag is not a byte any JSON text can
//! start with, so the first byte tells the two apart and both are read: a
//! replica upgraded in place reads the log it wrote before, and the old records
//! leave as the log is purged. A record starting with anything else, or whose
//! body does not decode, is an `InvalidData` error naming the index.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{Keyspace, PersistMode};
use futures::stream::{self, Stream, TryStreamExt};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};

use super::group_commit::Flusher;
use super::recent_entries::RecentEntries;
use super::{fjall_io_error, records, Db};
use crate::metrics::{self, FsyncSite};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// How many entries one purge or truncate batch removes at most, so a large
/// purge never builds one huge batch in memory.
const REMOVE_CHUNK: usize = 4096;

/// The log store handed to openraft; cheap to clone (handles are shared).
#[derive(Clone)]
pub struct LogStore {
    store: Db,
    /// The highest index known committed, for `status` (openraft's metrics lack it).
    committed_index: Arc<AtomicU64>,
    /// Syncs appended entries and completes their callbacks.
    flusher: Flusher,
    /// The newest entries, so replication and apply need not read them back.
    recent: RecentEntries,
}

impl LogStore {
    /// Starts the log's flusher thread too (`group_commit.rs`).
    pub fn new(store: Db) -> io::Result<Self> {
        let flusher = Flusher::start(store.db.clone())?;
        Ok(LogStore {
            store,
            committed_index: Arc::default(),
            flusher,
            recent: RecentEntries::default(),
        })
    }

    /// A live view of the highest index known to be committed.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    fn log(&self) -> &Keyspace {
        &self.store.raft_log
    }

    fn last_purged(&self) -> io::Result<Option<LogId>> {
        records::purged(&self.store)
    }

    /// Removes every entry whose index lies in `range`, in bounded batches.
    /// The first batch also carries `first_batch_extra`, so a purge's new
    /// watermark is written atomically with the first removals.
    fn remove_range(
        &self,
        range: (Bound<u64>, Bound<u64>),
        first_batch_extra: Option<(&str, Vec<u8>)>,
        durability: PersistMode,
    ) -> Result<(), fjall::Error> {
        let (start, end) = range;
        let keys: Vec<_> = self
            .log()
            .range((start.map(u64::to_be_bytes), end.map(u64::to_be_bytes)))
            .map(|guard| guard.key())
            .collect::<Result<_, _>>()?;
        let mut extra = first_batch_extra;
        let mut chunks = keys.chunks(REMOVE_CHUNK).peekable();
        if chunks.peek().is_none() {
            // Nothing to remove, but the extra record must still be written.
            if let Some((key, value)) = extra.take() {
                let mut batch = self.store.db.batch().durability(Some(durability));
                batch.insert(&self.store.raft_meta, key, value);
                batch.commit()?;
            }
            return Ok(());
        }
        for chunk in chunks {
            let mut batch = self.store.db.batch().durability(Some(durability));
            if let Some((key, value)) = extra.take() {
                batch.insert(&self.store.raft_meta, key, value);
            }
            for key in chunk {
                batch.remove(self.log(), key.clone());
            }
            batch.commit()?;
        }
        Ok(())
    }
}

/// The first byte of a log record in the binary encoding. Not a byte JSON
/// text can start with (JSON starts with `{` here, or whitespace, a letter, a
/// digit, `-`, `"` or `[` elsewhere), nor valid UTF-8 as a first byte.
const BINARY_RECORD: u8 = 0xB1;
/// The first byte of every log record written before the binary encoding.
const JSON_RECORD: u8 = b'{';

/// The log record that stores `entry`.
fn encode_entry(entry: &Entry) -> Vec<u8> {
    crate::binary::encode_into(entry, vec![BINARY_RECORD])
}

fn decode_entry(index_key: &[u8], bytes: &[u8]) -> io::Result<Entry> {
    let decoded = match bytes.split_first() {
        Some((&BINARY_RECORD, body)) => crate::binary::decode(body).map_err(|e| e.to_string()),
        Some((&JSON_RECORD, _)) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Some((tag, _)) => Err(format!("unknown record tag 0x{tag:02x}")),
        None => Err("the record is empty".to_string()),
    };
    decoded.map_err(|e| {
        let index = index_key
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or_default();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry {index} is unreadable: {e}"),
        )
    })
}

/// The most entry bytes one read hands to replication or apply (at least one
/// entry, however large). openraft asks for up to `max_payload_entries` (256)
/// entries per AppendEntries, and for every committed entry not yet applied
/// at once: with values of up to 32 MiB, a whole range would not fit in one
/// peer frame (`network::MAX_FRAME_LEN`), and a follower catching up on many
/// large values would hold them all in memory.
const READ_BYTES: usize = 8 * 1024 * 1024;

impl LogStore {
    /// The entries from `start` (never below the purge watermark: the
    /// tombstones there cost time) up to `end`, stopping after the entry
    /// that reaches `byte_budget` bytes as stored.
    fn read_entries(
        &self,
        start: u64,
        end: Bound<u64>,
        byte_budget: usize,
    ) -> io::Result<Vec<Entry>> {
        if let Some(entries) = self.recent.read(start, end, byte_budget) {
            return Ok(entries);
        }
        let floor = self.last_purged()?.map_or(0, |id| id.index + 1);
        let start = start.max(floor);
        let end = end.map(|i| i.to_be_bytes());
        let mut entries = Vec::new();
        let mut bytes = 0;
        // Read on the async worker: replication reads the newest entries,
        // which are in memtables; a hand-off per read cost more than the read.
        for guard in self
            .log()
            .range((Bound::Included(start.to_be_bytes()), end))
        {
            let (key, value) = guard.into_inner().map_err(fjall_io_error)?;
            entries.push(decode_entry(&key, &value)?);
            bytes += value.len();
            if bytes >= byte_budget {
                break;
            }
        }
        Ok(entries)
    }
}

fn start_of(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        self.read_entries(start_of(&range), range.end_bound().cloned(), usize::MAX)
    }

    /// What replication sends in one AppendEntries: at most [`READ_BYTES`].
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        self.read_entries(start, Bound::Excluded(end), READ_BYTES)
    }

    /// What apply reads: the range in pages of [`READ_BYTES`], each read
    /// when the one before has been taken.
    async fn entries_stream<RB>(
        &mut self,
        range: RB,
    ) -> impl Stream<Item = io::Result<Entry>> + Send
    where
        RB: RangeBounds<u64> + Clone + Debug + Send,
    {
        let store = self.clone();
        let end = range.end_bound().cloned();
        let pages = stream::try_unfold(start_of(&range), move |next| {
            let store = store.clone();
            async move {
                let page = store.read_entries(next, end, READ_BYTES)?;
                Ok::<_, io::Error>(
                    page.last()
                        .map(|last| last.log_id.index + 1)
                        .map(|after| (stream::iter(page.into_iter().map(Ok)), after)),
                )
            }
        });
        pages.try_flatten()
    }

    /// openraft 0.10 reads the vote through the reader too: replication
    /// checks it around each read of entries, so that a leader that has lost
    /// its term stops sending.
    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        records::read_latest(&self.store.raft_meta, records::VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.log().last_key_value() {
            None => None,
            Some(guard) => {
                let (key, value) = guard.into_inner().map_err(fjall_io_error)?;
                Some(decode_entry(&key, &value)?.log_id)
            }
        };
        // Entries at or below the purge watermark count as purged even while
        // they are still on disk: a snapshot install moves the watermark past
        // the whole old log in its switch batch (`state_machine.rs`), and a
        // crash can come before they are removed. openraft 0.10 refuses to
        // start on a last log id below the purged one ("inverted log order").
        let live = last.filter(|last| {
            last_purged_log_id
                .as_ref()
                .is_none_or(|purged| last.index > purged.index)
        });
        Ok(LogState {
            last_log_id: live.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let json = records::encode(vote);
        tokio::task::block_in_place(|| {
            // Rule 1: the vote is on disk before anyone hears of it.
            let mut batch = self
                .store
                .db
                .batch()
                .durability(Some(PersistMode::SyncData));
            batch.insert(&self.store.raft_meta, records::VOTE, json);
            metrics::timed_fsync(FsyncSite::Vote, || batch.commit())
        })
        .map_err(fjall_io_error)
    }

    /// openraft offers to keep the commit index on disk, so that a restarted
    /// replica can apply what it knew committed before hearing from a leader.
    /// This store keeps it in memory only (for `status`), and writes nothing:
    ///
    /// - The state machine already keeps its applied id on disk with the data
    ///   (rule 3), and openraft starts at that id when no commit index is
    ///   read back. What a restart skips is only the few entries committed
    ///   but not yet applied at the crash; they are still in the log (rule 2)
    ///   and are applied once a leader says they are committed.
    /// - A kept hint would promise no more than that: it would be written
    ///   unsynced, like the applies (rule 4), and lost with them in a power
    ///   cut. So linearizable reads never rested on it (`read_index.rs` waits
    ///   for the leader's last log index instead).
    /// - Writing it cost a journal record at every replica on every commit
    ///   (what that came to is in notes/findings.md).
    ///
    /// Earlier builds wrote the hint under `committed` in `raft_meta`; it is
    /// no longer read, and a folder moved back to such a build finds an old
    /// value there, which that build caps at what its log and state hold.
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if let Some(id) = committed {
            self.committed_index.fetch_max(id.index, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Nothing is read back (see `save_committed`): openraft then takes the
    /// state machine's applied id as the commit index to start from.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(None)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Rule 2, in two steps (see `group_commit.rs`): the entries go into
        // the journal in one batch, unsynced, so they are readable when this
        // returns; the flusher completes `callback` after the fsync that
        // covers them. openraft merges the appends queued meanwhile into the
        // next call, and the flusher merges the calls made during one fsync.
        let entries: Vec<Entry> = entries.into_iter().collect();
        let bytes = entries.iter().map(crate::types::proposal_bytes).sum();
        let committed = crate::heavy::run(bytes, || {
            let mut batch = self.store.db.batch();
            for entry in &entries {
                let record = encode_entry(entry);
                batch.insert(self.log(), entry.log_id.index.to_be_bytes(), record);
            }
            batch.commit()
        });
        match committed {
            Ok(()) => {
                self.recent.appended(entries);
                self.flusher.after_next_sync(callback);
                Ok(())
            }
            Err(e) => {
                let error = fjall_io_error(e);
                callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
                Err(error)
            }
        }
    }

    /// Removes the entries after `last_kept` (all of them for `None`): they
    /// conflict with the leader's log. Fsynced, like an append (rule 2): a
    /// removed entry must not come back after a crash.
    async fn truncate_after(&mut self, last_kept: Option<LogId>) -> io::Result<()> {
        let first_removed = last_kept.map_or(0, |id| id.index + 1);
        self.recent.truncated_from(first_removed);
        tokio::task::block_in_place(|| {
            metrics::timed_fsync(FsyncSite::LogTruncate, || {
                self.remove_range(
                    (Bound::Included(first_removed), Bound::Unbounded),
                    None,
                    PersistMode::SyncData,
                )
            })
        })
        .map_err(fjall_io_error)
    }

    /// Removes the entries up to and including `log_id`, which openraft never
    /// asks past what the state machine holds (`records::note_purge_past_applied`).
    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        records::note_purge_past_applied(&self.store, log_id)?;
        self.recent.purged_through(log_id.index);
        let upto = log_id;
        let watermark = records::encode(&upto);
        let floor = self.last_purged()?.map_or(0, |id| id.index + 1);
        if upto.index < floor {
            return Ok(());
        }
        tokio::task::block_in_place(|| {
            self.remove_range(
                (Bound::Included(floor), Bound::Included(upto.index)),
                Some((records::PURGED, watermark)),
                PersistMode::Buffer,
            )
        })
        .map_err(fjall_io_error)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{EntryPayload, Membership};

    use super::*;
    use crate::command::{Op, Proposal, Queued};
    use crate::types::CommittedLeaderId;

    fn entries() -> Vec<Entry> {
        let log_id = |index| {
            LogId::new(
                CommittedLeaderId {
                    term: 7,
                    node_id: 2,
                },
                index,
            )
        };
        let set = Op::Run(Queued {
            db: 0,
            args: vec!["SET".into(), "k".into(), vec![0xff, 0].into()],
        });
        let members: std::collections::BTreeMap<_, _> =
            [(1, openraft::BasicNode::new("127.0.0.1:7001"))].into();
        vec![
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2),
                payload: EntryPayload::Normal(Proposal::new(&[set], 5)),
            },
            Entry {
                log_id: log_id(3),
                payload: EntryPayload::Membership(
                    Membership::new(vec![[1].into()], members).unwrap(),
                ),
            },
        ]
    }

    fn key(entry: &Entry) -> [u8; 8] {
        entry.log_id.index.to_be_bytes()
    }

    #[test]
    fn binary_records_round_trip() {
        for entry in entries() {
            let record = encode_entry(&entry);
            assert_eq!(record[0], BINARY_RECORD);
            let back = decode_entry(&key(&entry), &record).unwrap();
            assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        }
    }

    #[test]
    fn json_records_of_older_builds_are_still_read() {
        for entry in entries() {
            let record = serde_json::to_vec(&entry).unwrap();
            assert_eq!(record[0], JSON_RECORD);
            let back = decode_entry(&key(&entry), &record).unwrap();
            assert_eq!(format!("{back:?}"), format!("{entry:?}"));
        }
    }

    #[test]
    fn damaged_records_are_invalid_data_naming_the_index() {
        let entry = &entries()[1];
        let good = encode_entry(entry);
        let mut flipped = good.clone();
        flipped[1] ^= 0xff;
        let damaged: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("unknown tag", [&[0x07][..], &good[1..]].concat()),
            ("cut short", good[..good.len() - 3].to_vec()),
            ("trailing bytes", [&good[..], &[0][..]].concat()),
            ("a damaged body", flipped),
            ("damaged JSON", b"{\"log_id\":".to_vec()),
        ];
        for (what, record) in damaged {
            let Err(e) = decode_entry(&key(entry), &record) else {
                // A flipped byte may still decode to some entry; that is
                // what the journal's checksums are for, not this decoder.
                assert_eq!(what, "a damaged body");
                continue;
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(
                e.to_string().starts_with("log entry 2 is unreadable"),
                "{what}: {e}"
            );
        }
    }
}
