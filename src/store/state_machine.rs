//! The key-value state machine, kept on disk in fjall.
//!
//! Ra's model: `apply(meta, command, state)` is deterministic; the same log
//! gives the same state on every replica. Dragonboat's on-disk contract: the
//! applied index is written in the same atomic batch as the effects it
//! describes (rule 3 in `store/mod.rs`), so a restart resumes from disk and
//! never applies an entry twice.
//!
//! What may run at the same time:
//! - `apply` and `install_snapshot` are called one at a time by openraft's
//!   state-machine task.
//! - openraft 0.10 hands `apply` a stream of entries, each with the responder
//!   of the client waiting for it (on the leader). Every responder taken from
//!   the stream is answered once its entry's effects are committed; a
//!   responder left unanswered would leave its client waiting forever.
//! - Snapshot building runs beside `apply` from a point-in-time view, holding a
//!   read lock on the active data keyspace so an install cannot drop it midway.
//! - Reads (`StateReader`) run beside everything and see whole applied batches
//!   (each `get` is a single key).
//!
//! Holding back (rule 6 in `store/mod.rs`, and `machine_version.rs`): an
//! entry of a machine version above what this build applies is not applied,
//! nor is anything after it, and `apply` still returns `Ok` (an error from it
//! stops openraft, and with it the log and the vote this replica still owes
//! the cluster). openraft then believes those entries applied; the state
//! machine knows better and says so where it matters: its applied id (what a
//! restart resumes from, and what a snapshot covers, so the log behind it is
//! never purged), `status`, and reads, which a held-back replica refuses.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{Keyspace, OwnedWriteBatch, PersistMode, Readable};
use futures::{Stream, TryStreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use tokio::sync::RwLock;

use super::known_heads::KnownHeads;
use super::machine_version::{HeldBack, MachineVersions};
use super::snapshot::Snapshot;
use super::snapshot::{self, SnapshotFile, SnapshotReader, SnapshotWriter};
use super::{describe_fjall_error, keyspace_options, records, Db};
use crate::command::{Proposal, Watched};
use crate::faults::crash_point;
use crate::machine::record::{self, Record};
use crate::machine::ProposalOutcome;
use crate::machine::{self, Command, Entries, Reply, Space, SpaceMut};
use crate::metrics::{self, FsyncSite, SnapshotEvent};
use crate::types::{proposal_bytes, Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};

/// A run of entries applied in one batch stops growing past this many bytes
/// of proposals (see `apply`).
const APPLY_RUN_BYTES: usize = 32 * 1024 * 1024;
const DATA_KEYSPACE_PREFIX: &str = "data-";

/// The data keyspace in use, with each database's flush mark (every command
/// reads one, so they are kept in memory). Both are switched under one lock:
/// an install replaces them together, and an apply that flushes commits its
/// batch and sets the new marks while holding the lock for writing, so a
/// reader's marks always belong to the same moment as its view of the data.
#[derive(Clone)]
struct ActiveData {
    keyspace: Keyspace,
    flush_marks: FlushMarks,
}

type FlushMarks = [u64; record::DATABASES as usize];

impl ActiveData {
    fn open(keyspace: Keyspace) -> Result<ActiveData, String> {
        let mut flush_marks = [0; record::DATABASES as usize];
        for (db, mark) in (0..record::DATABASES).zip(flush_marks.iter_mut()) {
            let stored = keyspace
                .get(record::flush_mark_key(db))
                .map_err(|e| describe_fjall_error(&e))?;
            *mark = record::decode_counter(stored.as_deref());
        }
        Ok(ActiveData {
            keyspace,
            flush_marks,
        })
    }
}

/// Counters that make recovery and snapshots observable in `status`.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// The applied index found on disk when this process started.
    pub recovered_at: AtomicU64,
    /// Entries at or below an index already applied that were handed to
    /// `apply` again. They are skipped; a correct restart keeps this at zero.
    pub replayed: AtomicU64,
    /// Snapshots received from a leader and installed since this process started.
    pub snapshots_installed: AtomicU64,
    /// Size in bytes of the newest snapshot file (built here or received).
    pub snapshot_bytes: AtomicU64,
    /// What the log has grown by since the newest snapshot built here.
    pub log_growth: LogGrowth,
}

/// The proposal bytes applied since the newest snapshot built here, so that a
/// snapshot is also taken by size (`node.rs`): openraft's policy counts
/// entries, and an entry is a batch of one write or of thousands, so a count
/// alone lets the log behind the last snapshot grow without bound on disk.
#[derive(Debug, Default)]
pub struct LogGrowth {
    applied_bytes: AtomicU64,
    /// 0: no limit (snapshots are off).
    limit: AtomicU64,
    /// Woken when the applied bytes pass the limit.
    pub outgrown: tokio::sync::Notify,
}

impl LogGrowth {
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Wakes the trigger after every run while past the limit, not only at
    /// the crossing: a snapshot asked for while another is being built (whose
    /// view came before the crossing) is not built, and would not be asked
    /// for again. The waiting task holds at most one wake-up.
    fn applied(&self, bytes: u64) {
        let now = self.applied_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let limit = self.limit.load(Ordering::Relaxed);
        if limit > 0 && now >= limit {
            self.outgrown.notify_one();
        }
    }

    fn snapshot_taken(&self) {
        self.applied_bytes.store(0, Ordering::Relaxed);
    }
}

/// A digest of the whole state at one applied index, to compare replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChecksum {
    pub applied_index: u64,
    /// User keys, in all databases (expired ones not yet removed included).
    pub keys: u64,
    /// XXH3-128 over every key and value, in key order, each length-prefixed.
    pub digest: u128,
}

/// The digest CHECKSUM reports, fed with the data keyspace's records in key
/// order: by [`StateReader::checksum`] from the database, and by `backup`
/// from the records of a backup file, which are the same records.
pub struct StateDigest {
    hasher: xxhash_rust::xxh3::Xxh3,
    keys: u64,
}

impl StateDigest {
    pub fn new() -> Self {
        StateDigest {
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            keys: 0,
        }
    }

    /// Adds one stored record (user keys and bookkeeping such as flush marks).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.hasher.update(&(key.len() as u64).to_be_bytes());
        self.hasher.update(key);
        self.hasher.update(&(value.len() as u64).to_be_bytes());
        self.hasher.update(value);
        self.keys += record::is_data_key(key) as u64;
    }

    /// Reads a snapshot file (a backup) through from its start, checking it
    /// as an install does, and digests its records: what CHECKSUM says of a
    /// replica that holds that state. Returns the file's header too.
    pub fn of_file(file: std::fs::File) -> io::Result<(SnapshotMeta, StateChecksum)> {
        let (mut reader, meta) = SnapshotReader::open(file)?;
        let mut digest = StateDigest::new();
        while let Some((key, value)) = reader.next_record()? {
            digest.add(&key, &value);
        }
        let applied = meta.last_log_id.map_or(0, |id| id.index);
        Ok((meta, digest.finish(applied)))
    }

    /// The checksum of the records added, for a state at `applied_index`.
    pub fn finish(&self, applied_index: u64) -> StateChecksum {
        StateChecksum {
            applied_index,
            keys: self.keys,
            digest: self.hasher.digest128(),
        }
    }
}

/// Reads the current state, from anywhere in the process.
#[derive(Clone)]
pub struct StateReader {
    db: fjall::Database,
    sm_meta: Keyspace,
    /// Where BACKUP writes its copy before sending it (the snapshot folder).
    snapshot_dir: std::path::PathBuf,
    data: Arc<RwLock<ActiveData>>,
    pub stats: Arc<ApplyStats>,
    /// The machine version, and whether applying is held back.
    pub versions: MachineVersions,
}

impl StateReader {
    /// Digests the whole state from one point-in-time view, so the applied
    /// index and the digest always belong together even while applies go on.
    pub async fn checksum(&self) -> Result<StateChecksum, String> {
        // The read lock keeps an install from switching keyspaces under the view.
        let data = self.data.read().await;
        tokio::task::block_in_place(|| {
            let view = self.db.snapshot();
            let applied = records::applied_in(&view, &self.sm_meta).map_err(|e| e.to_string())?;
            let mut digest = StateDigest::new();
            for pair in view.iter(&data.keyspace) {
                let (key, value) = pair.into_inner().map_err(|e| describe_fjall_error(&e))?;
                digest.add(&key, &value);
            }
            Ok(digest.finish(applied.map_or(0, |id| id.index)))
        })
    }

    /// Writes the whole state, from one point-in-time view taken now, to a
    /// new file in the snapshot format for a client's BACKUP
    /// (`snapshot::backup_path`: never offered to a replica, removed by the
    /// copy is dropped, or at the next start).
    ///
    /// Like a snapshot build, it holds the read lock on the data keyspace while
    /// it writes (an install waits, and so does an apply that flushes a
    /// database), but only for as long as the local disk takes: the file is
    /// sent afterwards, at the client's pace, holding nothing.
    pub async fn write_backup(&self) -> io::Result<snapshot::BackupCopy> {
        let data = self.data.read().await;
        tokio::task::block_in_place(|| {
            let view = self.db.snapshot();
            let meta = state_meta(&view, &self.sm_meta)?;
            let path = snapshot::backup_path(&self.snapshot_dir);
            let writer = SnapshotWriter::create_at(path, &meta).map_err(snapshot_error)?;
            let (path, size) = write_state(&view, &data.keyspace, writer)?;
            Ok(snapshot::BackupCopy { path, meta, size })
        })
    }

    /// Serves a read-only command from one point-in-time view, at
    /// `leader_time` (the leader's clock when the read's round confirmed it).
    pub async fn read(&self, db: u8, command: &Command, leader_time: u64) -> Result<Reply, String> {
        let view = self.read_view().await;
        // KEYS and SCAN read many keys; a point read is served from memory in
        // microseconds, and handing the worker off for it costs more than that.
        // (A read-only script hands it off itself: `machine::script::run`.)
        if matches!(command, Command::Keys(_) | Command::Scan { .. }) {
            tokio::task::block_in_place(|| machine::read(&view, db, command, leader_time))
        } else {
            machine::read(&view, db, command, leader_time)
        }
    }

    /// What WATCH remembers of `keys`: each key's stamp and the applied index
    /// of the view they were read from.
    pub async fn watch(
        &self,
        db: u8,
        keys: &[Vec<u8>],
        leader_time: u64,
    ) -> Result<Vec<Watched>, String> {
        let view = self.read_view().await;
        let since = records::applied_in(&view.view, &self.sm_meta)
            .map_err(|e| e.to_string())?
            .map_or(0, |id| id.index);
        keys.iter()
            .map(|key| {
                Ok(Watched {
                    db,
                    key: key.clone().into(),
                    seen: machine::watch_stamp(&view, db, key, leader_time)?,
                    since,
                })
            })
            .collect()
    }

    /// Up to `limit` keys whose expiry has passed at `now` (for the leader).
    pub async fn due_expiries(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<crate::command::Expired>, String> {
        let view = self.read_view().await;
        machine::due_expiries(&view, now, limit)
    }

    /// Where the leader's sweep of `db` goes next (see `machine::next_sweep`).
    pub async fn next_sweep(
        &self,
        db: u8,
        from: u64,
        limit: usize,
    ) -> Result<Option<machine::SweepRange>, String> {
        let view = self.read_view().await;
        // The sweep asks of every database ten times a second, and nearly
        // always none has anything stale: that answer is one counter read,
        // and handing the worker to another thread for it (each hand-off
        // moves this replica's worker to a new thread) costs far more.
        if !machine::has_stale(&view, db)? {
            return Ok(None);
        }
        tokio::task::block_in_place(|| machine::next_sweep(&view, db, from, limit))
    }

    /// The machine's clock: the largest leader time (milliseconds since the
    /// epoch) of the entries applied here; 0 before the first.
    pub async fn clock(&self) -> Result<u64, String> {
        machine::clock(&self.read_view().await)
    }

    /// Keys and keys with an expiry, per database that has any (for INFO).
    pub async fn keyspace_counts(&self) -> Result<Vec<(u8, u64, u64)>, String> {
        machine::database_sizes(&self.read_view().await)
    }

    /// The data keyspace as it is now, from one point-in-time view.
    async fn read_view(&self) -> ReadView {
        let active = self.data.read().await;
        ReadView {
            view: self.db.snapshot(),
            data: active.keyspace.clone(),
            flush_marks: active.flush_marks,
        }
    }
}

/// A point-in-time view of the data keyspace, as the machine reads it.
struct ReadView {
    view: fjall::Snapshot,
    data: Keyspace,
    flush_marks: FlushMarks,
}

impl Space for ReadView {
    type Value = fjall::Slice;

    fn get(&self, key: &[u8]) -> Result<Option<fjall::Slice>, String> {
        self.view
            .get(&self.data, key)
            .map_err(|e| describe_fjall_error(&e))
    }

    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, String> {
        let mut found = Vec::new();
        for guard in self.view.range(&self.data, from.to_vec()..) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = guard.into_inner().map_err(|e| describe_fjall_error(&e))?;
            if !key.starts_with(prefix) {
                break;
            }
            found.push((key.to_vec(), value.to_vec()));
        }
        Ok(found)
    }

    fn flush_mark(&self, db: u8) -> Result<u64, String> {
        Ok(self.flush_marks.get(db as usize).copied().unwrap_or(0))
    }
}

/// The data keyspace as one run of entries changes it: reads see the run's
/// own earlier writes, which reach the database only in the batch built from
/// them when the run ends.
struct ApplyView<'a> {
    data: &'a Keyspace,
    /// Each key's newest write in this run (`None`: removed).
    pending: &'a mut BTreeMap<Vec<u8>, Option<fjall::Slice>>,
    /// The marks as this run leaves them so far.
    flush_marks: &'a mut FlushMarks,
    /// As of the last committed batch, like `data`.
    known_heads: &'a KnownHeads,
}

impl Space for ApplyView<'_> {
    type Value = fjall::Slice;

    fn get(&self, key: &[u8]) -> Result<Option<fjall::Slice>, String> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.clone());
        }
        self.data.get(key).map_err(|e| describe_fjall_error(&e))
    }

    /// Merges the committed keys with the run's pending writes, in key order.
    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Entries, String> {
        let mut committed = self.data.range(from.to_vec()..).map(|guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| describe_fjall_error(&e))
        });
        let mut pending = self.pending.range(from.to_vec()..).peekable();
        let mut next_committed = committed.next().transpose()?;
        let mut found = Vec::new();
        while found.len() < limit {
            let take_pending = match (&next_committed, pending.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((key, _)), Some((pending_key, _))) => *pending_key <= key,
            };
            let (key, value) = if take_pending {
                let (key, value) = pending.next().expect("peeked");
                if next_committed.as_ref().is_some_and(|(k, _)| k == key) {
                    next_committed = committed.next().transpose()?;
                }
                (key.clone(), value.as_ref().map(|v| v.to_vec()))
            } else {
                let (key, value) = next_committed.take().expect("matched");
                next_committed = committed.next().transpose()?;
                (key, Some(value))
            };
            if !key.starts_with(prefix) {
                break;
            }
            if let Some(value) = value {
                found.push((key, value));
            }
        }
        Ok(found)
    }

    fn flush_mark(&self, db: u8) -> Result<u64, String> {
        Ok(self.flush_marks.get(db as usize).copied().unwrap_or(0))
    }

    /// What earlier runs wrote, when remembered and this run has not
    /// written the key since; else read as [`Space::get`] finds it.
    fn get_head(&self, key: &[u8]) -> Result<Option<Record>, String> {
        match self.known_heads.get(key) {
            Some(head) if !self.pending.contains_key(key) => {
                debug_assert_eq!(
                    Ok(&head),
                    machine::read_head(self, key).as_ref(),
                    "a known head went stale"
                );
                Ok(head)
            }
            _ => machine::read_head(self, key),
        }
    }
}

impl SpaceMut for ApplyView<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(fjall::Slice::from(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    fn set_flush_mark(&mut self, db: u8, mark: u64) {
        if let Some(slot) = self.flush_marks.get_mut(db as usize) {
            *slot = mark;
            self.put(
                record::flush_mark_key(db).to_vec(),
                mark.to_be_bytes().to_vec(),
            );
        }
    }
}

/// The state machine handed to openraft.
pub struct StateMachine {
    store: Db,
    data: Arc<RwLock<ActiveData>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    stats: Arc<ApplyStats>,
    current_snapshot: Option<(std::path::PathBuf, SnapshotMeta)>,
    /// The snapshot file last known whole (shared with the builder and the
    /// network client).
    known_whole: snapshot::KnownWhole,
    versions: MachineVersions,
    /// What apply last wrote under recently written keys.
    known_heads: KnownHeads,
}

// openraft 0.10's storage traits take `io::Error`; it records itself what was
// being done (reading the state machine, installing a snapshot, ...), so these
// only carry the cause, in words.
fn read_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn write_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn snapshot_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The data keyspace the pointer names (the first one, on a first start),
/// after dropping any other that an interrupted install left behind.
fn open_data_keyspace(store: &Db) -> io::Result<Keyspace> {
    let active: String = records::read_latest(&store.sm_meta, records::DATA_KEYSPACE)?
        .unwrap_or_else(|| format!("{DATA_KEYSPACE_PREFIX}1"));
    let data = store
        .db
        .keyspace(&active, keyspace_options)
        .map_err(|e| read_error(describe_fjall_error(&e)))?;
    for name in store.db.list_keyspace_names() {
        let name: &str = &name;
        if name.starts_with(DATA_KEYSPACE_PREFIX) && name != active {
            tracing::info!("dropping keyspace {name} left by an interrupted snapshot install");
            let stale = store
                .db
                .keyspace(name, keyspace_options)
                .map_err(|e| write_error(describe_fjall_error(&e)))?;
            store
                .db
                .delete_keyspace(stale)
                .map_err(|e| write_error(describe_fjall_error(&e)))?;
        }
    }
    // Remember the data keyspace by name so a restart finds it (first start).
    store
        .sm_meta
        .insert(records::DATA_KEYSPACE, records::encode(&active))
        .map_err(|e| write_error(describe_fjall_error(&e)))?;
    Ok(data)
}

/// The newest whole snapshot file that can still catch a replica up, after
/// clearing the snapshot folder of unfinished and damaged files.
fn usable_snapshot(store: &Db) -> io::Result<Option<(std::path::PathBuf, SnapshotMeta)>> {
    snapshot::remove_unfinished(&store.snapshot_dir).map_err(write_error)?;
    for damage in snapshot::set_aside_damaged(&store.snapshot_dir).map_err(write_error)? {
        crate::logging::note(&damage);
    }
    let Some((path, meta)) = snapshot::latest(&store.snapshot_dir).map_err(read_error)? else {
        return Ok(None);
    };
    // An older snapshot left beside a damaged newer one may end before the
    // purged log: it could not catch anyone up, the entries after it are
    // gone. Without it, openraft builds a new one as it starts.
    let purged = records::purged(store).unwrap_or(None);
    if meta.last_log_id < purged {
        tracing::warn!(
            "snapshot {} ends at {:?}, before the purged log ({purged:?}); not offered",
            path.display(),
            meta.last_log_id
        );
        std::fs::remove_file(&path).map_err(write_error)?;
        return Ok(None);
    }
    Ok(Some((path, meta)))
}

impl StateMachine {
    /// The record of which snapshot file is known whole, for the network
    /// client: a replica that receives a damaged file says so, and the next
    /// send must read the file through instead of trusting the record.
    pub fn known_whole_snapshot(&self) -> snapshot::KnownWhole {
        self.known_whole.clone()
    }

    /// Where the network server writes a snapshot sent by the leader, before
    /// openraft hands it to `install_snapshot`.
    pub fn snapshot_inbox(&self) -> snapshot::Inbox {
        snapshot::Inbox::new(&self.store.snapshot_dir)
    }

    /// Opens the state machine at what is on disk, and drops any data keyspace
    /// left behind by an install that crashed (rule 5 in `store/mod.rs`).
    pub fn open(store: Db) -> io::Result<(StateMachine, StateReader)> {
        Self::open_applying_up_to(store, crate::command::applicable_machine_version())
    }

    /// [`StateMachine::open`] for a build that applies machine versions up
    /// to `can_apply`.
    fn open_applying_up_to(store: Db, can_apply: u32) -> io::Result<(StateMachine, StateReader)> {
        let view = store.db.snapshot();
        let last_applied = records::applied_in(&view, &store.sm_meta)?;
        let membership: StoredMembership =
            records::read(&view, &store.sm_meta, records::MEMBERSHIP)?.unwrap_or_default();
        drop(view);
        let data = open_data_keyspace(&store)?;
        let current_snapshot = usable_snapshot(&store)?;

        let stats = Arc::new(ApplyStats::default());
        let recovered_at = last_applied.map_or(0, |id| id.index);
        stats.recovered_at.store(recovered_at, Ordering::Relaxed);
        tracing::info!(
            "state machine recovered at applied index {recovered_at} (log id {last_applied:?})"
        );
        let known_whole = snapshot::KnownWhole::default();
        if let Some((path, _)) = &current_snapshot {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            stats.snapshot_bytes.store(bytes, Ordering::Relaxed);
            // Read through by `set_aside_damaged` in `usable_snapshot`.
            known_whole.mark(path);
        }

        let active = ActiveData::open(data).map_err(read_error)?;
        let version = stored_machine_version(&store, &active).map_err(read_error)?;
        let versions = MachineVersions::new(can_apply, version, recovered_at);
        hold_back_if_state_too_new(&versions, recovered_at);
        let data = Arc::new(RwLock::new(active));
        let reader = StateReader {
            db: store.db.clone(),
            sm_meta: store.sm_meta.clone(),
            snapshot_dir: store.snapshot_dir.clone(),
            data: data.clone(),
            stats: stats.clone(),
            versions: versions.clone(),
        };
        let machine = StateMachine {
            store,
            data,
            last_applied,
            membership,
            stats,
            current_snapshot,
            known_whole,
            versions,
            known_heads: KnownHeads::default(),
        };
        Ok((machine, reader))
    }

    /// Keeps a received file as this replica's current snapshot, so it can
    /// serve it in turn without building one first. (Its own snapshot,
    /// restored at start-up, is already in place.) A finished file from
    /// another folder (openraft's storage suite hands one state machine's
    /// snapshot to another) is copied in the same way.
    fn keep_as_current_snapshot(
        &mut self,
        snapshot: &mut SnapshotFile,
        meta: &SnapshotMeta,
    ) -> io::Result<()> {
        let from_elsewhere = !snapshot.is_received()
            && snapshot.path().parent() != Some(self.store.snapshot_dir.as_path());
        if snapshot.is_received() || from_elsewhere {
            let kept = snapshot::finished_path(&self.store.snapshot_dir, meta);
            if from_elsewhere {
                std::fs::copy(snapshot.path(), &kept)
                    .and_then(|_| std::fs::File::open(&kept)?.sync_all())
                    .map_err(snapshot_error)?;
            } else {
                std::fs::rename(snapshot.path(), &kept).map_err(snapshot_error)?;
                snapshot.keep();
            }
            snapshot::sync_dir(&self.store.snapshot_dir)
                .and_then(|()| snapshot::remove_others(&self.store.snapshot_dir, &kept))
                .map_err(snapshot_error)?;
            let bytes = std::fs::metadata(&kept).map(|m| m.len()).unwrap_or(0);
            self.stats.snapshot_bytes.store(bytes, Ordering::Relaxed);
            metrics::snapshot(SnapshotEvent::Installed, bytes);
            // `load_snapshot` read it through.
            self.known_whole.mark(&kept);
            self.current_snapshot = Some((kept, meta.clone()));
        }
        Ok(())
    }

    fn sm_meta(&self) -> &Keyspace {
        &self.store.sm_meta
    }

    /// One run of [`RaftStateMachine::apply`]: applied, committed, answered.
    /// `bytes`: the run's proposal bytes, as `apply` counted them.
    async fn apply_and_answer(
        &mut self,
        run: Vec<EntryResponder<TypeConfig>>,
        bytes: usize,
    ) -> io::Result<()> {
        let active = self.data.read().await.clone();
        let (entries, responders): (Vec<Entry>, Vec<Option<ApplyResponder<TypeConfig>>>) =
            run.into_iter().unzip();
        // Run right here on the async worker. The batch is not fsynced (rule 4),
        // so the commit is memtable inserts and one write to the page cache (a
        // DEL's lookup may read a cached block); handing the worker off with
        // `block_in_place` cost more than that. Together with the log append on
        // the blocking pool (`log.rs`), 50-client SETs went from 9,700/s to
        // 10,800/s on average over seven interleaved A/B runs.
        // A script hands the worker off itself (`machine::script::run`).
        let run = crate::heavy::run(bytes, || self.apply_run(&active, entries))?;
        let commit = |batch: OwnedWriteBatch| {
            batch
                .commit()
                .map_err(|e| write_error(describe_fjall_error(&e)))
        };
        if run.flush_marks == active.flush_marks {
            commit(run.batch)?;
        } else {
            // A flush: readers must not see the new marks without the data, or
            // the data without the new marks (see `ActiveData`).
            let mut guard = self.data.write().await;
            commit(run.batch)?;
            guard.flush_marks = run.flush_marks;
        }
        self.known_heads.absorb(run.written);
        let applied = self.last_applied.map_or(0, |id| id.index);
        self.versions.set_applied(applied);
        if let Some(version) = run.machine_version {
            self.versions.set_current(version);
            tracing::info!("the cluster's machine version is {version} from log index {applied}");
            hold_back_if_state_too_new(&self.versions, applied);
        }
        if let Some(held) = run.held_back {
            hold_back(&self.versions, held);
        }
        // Outcomes come for the entries applied, in order. A responder whose
        // entry was not applied (the run stopped at an entry this build cannot
        // apply) is dropped: its waiting client is told the write failed,
        // rather than told a write happened that did not.
        for (responder, outcome) in responders.into_iter().zip(run.outcomes) {
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        match run.failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The body of `apply` (see there for the contract): everything but the
    /// commit of the batch. The run holds one outcome per entry applied, in
    /// order: all of them, or, when an entry cannot be applied, those before
    /// it and the error that stopped it.
    fn apply_run(
        &mut self,
        active: &ActiveData,
        entries: impl IntoIterator<Item = Entry>,
    ) -> io::Result<AppliedRun> {
        let mut writes = RunWrites {
            pending: BTreeMap::new(),
            flush_marks: active.flush_marks,
        };
        let mut outcomes = Vec::new();
        let mut failure = None;
        let mut held_back = None;
        let mut version_changed = false;
        let mut membership_changed = false;

        for entry in entries {
            if self
                .last_applied
                .is_some_and(|applied| entry.log_id.index <= applied.index)
            {
                self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                outcomes.push(ProposalOutcome::default());
                continue;
            }
            let mut outcome = ProposalOutcome::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    membership_changed = true;
                }
                EntryPayload::Normal(proposal) => {
                    let mut view = writes.view(&active.keyspace, &self.known_heads);
                    match self.apply_proposal(&mut view, entry.log_id.index, &proposal)? {
                        ProposalStep::Applied {
                            replies,
                            moves_version,
                        } => {
                            outcome.replies = replies;
                            version_changed |= moves_version;
                        }
                        ProposalStep::HoldBack(at) => {
                            held_back = Some(at);
                            break;
                        }
                        ProposalStep::Refused(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
            }
            self.last_applied = Some(entry.log_id);
            outcomes.push(outcome);
        }

        let mut batch = self.store.db.batch().durability(Some(PersistMode::Buffer));
        // Only each key's last write goes into the batch: the run's reads saw
        // the others in `pending`, and nothing else will. A key counter that
        // every new key moves is then written once a run, not once a key.
        for (key, value) in &writes.pending {
            match value {
                Some(value) => batch.insert(&active.keyspace, key.clone(), value.clone()),
                None => batch.remove(&active.keyspace, key.clone()),
            }
        }
        self.record_run_end(&mut batch, membership_changed);
        let machine_version = if version_changed {
            Some(
                machine::machine_version(&writes.view(&active.keyspace, &self.known_heads))
                    .map_err(read_error)?,
            )
        } else {
            None
        };
        let RunWrites {
            pending,
            flush_marks,
        } = writes;
        Ok(AppliedRun {
            batch,
            written: pending,
            outcomes,
            failure,
            held_back,
            machine_version,
            flush_marks,
        })
    }

    /// One entry's proposal, applied to the run's batch: unless it needs a
    /// machine version this replica cannot apply (it holds back there, rule
    /// 6 in `store/mod.rs`) or a format it does not know (refused). An
    /// error means the batch holds part of this entry: none of it is
    /// committed (nothing is applied, nothing answered).
    fn apply_proposal(
        &self,
        view: &mut ApplyView<'_>,
        index: u64,
        proposal: &Proposal,
    ) -> io::Result<ProposalStep> {
        if proposal.format > self.versions.can_apply() {
            return Ok(ProposalStep::HoldBack(HeldBack {
                at: index,
                needs: proposal.format,
                can_apply: self.versions.can_apply(),
            }));
        }
        let ops = match proposal.decode() {
            Ok(ops) => ops,
            Err(e) => {
                return Ok(ProposalStep::Refused(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e,
                )))
            }
        };
        let moves_version = ops
            .iter()
            .any(|op| matches!(op, crate::command::Op::MachineVersion { .. }));
        let replies = machine::apply_entry(view, index, proposal.time_ms, proposal.format, ops)
            .map_err(io::Error::other)?;
        Ok(ProposalStep::Applied {
            replies,
            moves_version,
        })
    }

    /// The records that go into every run's batch with its data (rule 3):
    /// the last applied id, and the membership if an entry changed it (it is
    /// the largest record here, and rewriting it on every apply filled
    /// memtables).
    fn record_run_end(&self, batch: &mut OwnedWriteBatch, membership_changed: bool) {
        batch.insert(
            self.sm_meta(),
            records::APPLIED,
            records::encode(&self.last_applied),
        );
        if membership_changed {
            batch.insert(
                self.sm_meta(),
                records::MEMBERSHIP,
                records::encode(&self.membership),
            );
        }
    }
}

/// Step 1 of an install (see `install_snapshot`): the snapshot's state loaded
/// into a fresh keyspace that nothing points at yet, so a crash leaves the
/// old state and the next start drops the new keyspace.
async fn load_aside(
    store: &Db,
    snapshot: &mut SnapshotFile,
    meta: &SnapshotMeta,
) -> io::Result<ActiveData> {
    // The network server wrote the chunks through tokio's file, which
    // buffers: flush and sync before reading it back as a plain file.
    tokio::io::AsyncWriteExt::flush(&mut snapshot.file)
        .await
        .map_err(snapshot_error)?;
    snapshot.file.sync_all().await.map_err(snapshot_error)?;
    let received = snapshot.file.try_clone().await?.into_std().await;
    let new_name = format!("{DATA_KEYSPACE_PREFIX}{}", unique_suffix());
    let new_data = tokio::task::block_in_place(|| load_snapshot(store, received, meta, &new_name))?;
    match ActiveData::open(new_data.clone()) {
        Ok(active) => Ok(active),
        Err(e) => {
            let _ = store.db.delete_keyspace(new_data);
            Err(read_error(e))
        }
    }
}

/// Step 2 of an install: the moment the loaded state takes over, in one
/// fsynced batch (rule 5 in `store/mod.rs`).
fn switch_to_loaded(store: &Db, new_name: &str, meta: &SnapshotMeta) -> Result<(), fjall::Error> {
    let mut batch = store.db.batch().durability(Some(PersistMode::SyncAll));
    let applied = records::encode(&meta.last_log_id);
    batch.insert(
        &store.sm_meta,
        records::DATA_KEYSPACE,
        records::encode(&new_name),
    );
    batch.insert(&store.sm_meta, records::APPLIED, applied.clone());
    batch.insert(
        &store.sm_meta,
        records::MEMBERSHIP,
        records::encode(&meta.last_membership),
    );
    // The log before the snapshot is gone for good from here on: record
    // that with the switch, or a restart would look for entries this
    // replica never had (openraft's purge after the install may not
    // have run before a crash).
    batch.insert(&store.raft_meta, records::PURGED, applied);
    metrics::timed_fsync(FsyncSite::SnapshotInstall, || batch.commit())
}

/// What a run of entries has written so far, by key, so that later entries
/// of the run see it (the database does not until the run's batch commits),
/// and the flush marks as the run leaves them.
struct RunWrites {
    pending: BTreeMap<Vec<u8>, Option<fjall::Slice>>,
    flush_marks: FlushMarks,
}

impl RunWrites {
    fn view<'a>(&'a mut self, data: &'a Keyspace, known_heads: &'a KnownHeads) -> ApplyView<'a> {
        ApplyView {
            data,
            pending: &mut self.pending,
            flush_marks: &mut self.flush_marks,
            known_heads,
        }
    }
}

/// What one entry's proposal came to in a run (`apply_proposal`).
enum ProposalStep {
    Applied {
        replies: Vec<Reply>,
        /// It set the cluster's machine version.
        moves_version: bool,
    },
    /// It needs a machine version this replica cannot apply: the run ends
    /// before it.
    HoldBack(HeldBack),
    /// Its format is unknown to this build: the run ends before it.
    Refused(io::Error),
}

/// A run of entries applied to a batch that is not committed yet.
struct AppliedRun {
    batch: OwnedWriteBatch,
    /// What the batch writes, by key (for `KnownHeads::absorb`).
    written: BTreeMap<Vec<u8>, Option<fjall::Slice>>,
    outcomes: Vec<ProposalOutcome>,
    /// An entry this build cannot read: the run stopped before it.
    failure: Option<io::Error>,
    /// An entry of a machine version this replica cannot apply: the run
    /// stopped before it, and applying holds back from there.
    held_back: Option<HeldBack>,
    /// The machine version after the run, if an entry of it set one.
    machine_version: Option<u32>,
    flush_marks: FlushMarks,
}

/// The machine version `active` records (as of the newest committed batch).
fn stored_machine_version(store: &Db, active: &ActiveData) -> Result<u32, String> {
    let view = ReadView {
        view: store.db.snapshot(),
        data: active.keyspace.clone(),
        flush_marks: active.flush_marks,
    };
    machine::machine_version(&view)
}

/// Applying holds back from the entry after `applied` if the state's version
/// is above what this build applies: every later entry is to be applied by a
/// machine of that version (a replica restarted with an older build after
/// the cluster moved on, or given such a snapshot).
fn hold_back_if_state_too_new(versions: &MachineVersions, applied: u64) {
    if versions.current() > versions.can_apply() {
        hold_back(
            versions,
            HeldBack {
                at: applied + 1,
                needs: versions.current(),
                can_apply: versions.can_apply(),
            },
        );
    }
}

fn hold_back(versions: &MachineVersions, held: HeldBack) {
    if versions.held_back().is_none() {
        crate::logging::note(&held.to_string());
        versions.hold_back(held);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    /// Applies committed entries in runs, each in one atomic batch together
    /// with the last applied log id and membership (rule 3), then answers the
    /// clients waiting for that run. The batch is not fsynced on its own; rule
    /// 4 in `store/mod.rs` says why that is safe.
    ///
    /// openraft 0.10 hands the entries as a stream of `(entry, responder)`
    /// (0.9 handed a list). A run is read from it up to [`APPLY_RUN_BYTES`]:
    /// a follower catching up may be handed every entry it missed at once,
    /// and with large values they need not fit in memory together. Each
    /// responder is answered after its run's commit, so a client that reads
    /// right after its write was acknowledged sees it.
    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        loop {
            if self.versions.held_back().is_some() {
                // Taken and let go, unapplied (see the module's comment).
                while entries.try_next().await?.is_some() {}
                return Ok(());
            }
            let mut run = Vec::new();
            let mut bytes = 0;
            while bytes < APPLY_RUN_BYTES {
                let Some(item) = entries.try_next().await? else {
                    break;
                };
                bytes += proposal_bytes(&item.0);
                run.push(item);
            }
            if run.is_empty() {
                return Ok(());
            }
            self.apply_and_answer(run, bytes).await?;
            self.stats.log_growth.applied(bytes as u64);
        }
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            data: self.data.clone(),
            stats: self.stats.clone(),
            known_whole: self.known_whole.clone(),
        }
    }

    /// Replaces the whole state with a snapshot, crash-safely (rule 5 in
    /// `store/mod.rs`):
    /// 1. load the snapshot into a fresh, unreferenced keyspace and let fjall
    ///    make it durable (a crash here leaves the old state; the next start
    ///    drops the unreferenced keyspace);
    /// 2. in one fsynced batch, point `data_keyspace` at it and set the applied
    ///    id and membership (the moment the new state takes over);
    /// 3. drop the old keyspace (a crash before this is tidied at the next start).
    ///
    /// Reads keep being served from the old state until step 2.
    ///
    /// The snapshot is one received from the leader (the network server wrote
    /// it into the inbox), or, at start-up, this replica's own current
    /// snapshot when it holds more than the state machine does: openraft 0.10
    /// restores from it then. That happens after a power cut that lost the
    /// last unsynced apply batches (rule 4) while a snapshot of them had been
    /// written (snapshot files are fsynced).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: SnapshotFile,
    ) -> io::Result<()> {
        let store = self.store.clone();
        let new_data = load_aside(&store, &mut snapshot, meta).await?;
        crash_point("install:loaded");

        let mut data = self.data.write().await;
        let new_name = new_data.keyspace.name().to_string();
        let switched = tokio::task::block_in_place(|| switch_to_loaded(&store, &new_name, meta));
        if let Err(e) = switched {
            drop(data);
            let _ = store.db.delete_keyspace(new_data.keyspace);
            return Err(snapshot_error(describe_fjall_error(&e)));
        }
        let old_data = std::mem::replace(&mut *data, new_data).keyspace;
        self.known_heads.forget_all();
        // Counted while readers are still held off, so that whoever sees the
        // new state (CHECKSUM, say) also sees the install in `status`; dropping
        // the old keyspace below can take a while.
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let applied = meta.last_log_id.map_or(0, |id| id.index);
        let version = stored_machine_version(&self.store, &data).map_err(read_error)?;
        self.versions.set_current(version);
        self.versions.set_applied(applied);
        self.versions.clear_hold();
        hold_back_if_state_too_new(&self.versions, applied);
        if snapshot.is_received() {
            self.stats
                .snapshots_installed
                .fetch_add(1, Ordering::Relaxed);
        }
        drop(data);
        crash_point("install:switched");

        let old_name = old_data.name().to_string();
        if let Err(e) = self.store.db.delete_keyspace(old_data) {
            // Harmless: the next start drops any keyspace the pointer does not name.
            tracing::warn!(
                "could not drop the replaced keyspace {old_name} yet: {}",
                describe_fjall_error(&e)
            );
        }
        tracing::info!(
            "installed snapshot {} at {:?}",
            snapshot.path().display(),
            meta.last_log_id
        );

        self.keep_as_current_snapshot(&mut snapshot, meta)
    }

    /// openraft asks for the snapshot to send it to a replica that fell behind.
    /// It is read through first: that replica would refuse a damaged file
    /// (`peer_service.rs` checks before its install, which openraft would
    /// make fatal), and it would be sent the same file again and again. A
    /// damaged file is set aside and a new snapshot built from this replica's
    /// state. The read is skipped for a file unchanged since it was last known
    /// whole (written here, received and checked, or read through at start): at
    /// a million keys it took about a second, during which nothing is applied.
    /// Decay that the skip misses is caught by the receiver, whose refusal
    /// makes the network client forget the file was whole.
    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        // A snapshot being built beside this one may replace the file picked
        // here, and remove it, before it is opened: then look again.
        for _ in 0..3 {
            if let Ok(Some(latest)) = snapshot::latest(&self.store.snapshot_dir) {
                self.current_snapshot = Some(latest);
            }
            let Some((path, meta)) = self.current_snapshot.clone() else {
                return Ok(None);
            };
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.current_snapshot = None;
                    continue;
                }
                Err(e) => return Err(snapshot_error(e)),
            };
            // Checked through the handle that is sent, so what is checked is
            // what is sent, even if the file is replaced meanwhile; and only
            // if it changed since it was last known whole.
            let stamp = snapshot::CheckedFile::of(&path, &file).map_err(snapshot_error)?;
            let known_whole = self.known_whole.is(&stamp);
            let checked = if known_whole {
                Ok(())
            } else {
                tokio::task::block_in_place(|| {
                    snapshot::verify_file(&file)?;
                    std::io::Seek::rewind(&mut file)
                })
            };
            match checked {
                Ok(()) => {
                    self.known_whole.set(stamp);
                    let file = tokio::fs::File::from_std(file);
                    return Ok(Some(Snapshot {
                        meta,
                        snapshot: SnapshotFile::finished(path, file),
                    }));
                }
                Err(damage) => {
                    match snapshot::set_aside_as_damaged(&path, &damage) {
                        Ok(note) => crate::logging::note(&note),
                        // Replaced by a newer snapshot meanwhile: nothing to set aside.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(snapshot_error(e)),
                    }
                    self.current_snapshot = None;
                    break;
                }
            }
        }
        let mut builder = self.get_snapshot_builder().await;
        builder.build_snapshot().await.map(Some)
    }
}

/// Checks a received snapshot file and loads it into a new keyspace `name`,
/// made durable by fjall's ingestion. Nothing refers to that keyspace yet.
fn load_snapshot(
    store: &Db,
    received: std::fs::File,
    meta: &SnapshotMeta,
    name: &str,
) -> io::Result<Keyspace> {
    received.sync_all().map_err(snapshot_error)?;
    let mut file = received;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(snapshot_error)?;
    let (mut reader, file_meta) = SnapshotReader::open(file).map_err(snapshot_error)?;
    if file_meta.last_log_id != meta.last_log_id {
        return Err(snapshot_error(format!(
            "received snapshot holds state at {:?}, but was announced at {:?}",
            file_meta.last_log_id, meta.last_log_id
        )));
    }
    let fresh = store
        .db
        .keyspace(name, keyspace_options)
        .map_err(|e| snapshot_error(describe_fjall_error(&e)))?;
    let loaded = (|| -> io::Result<()> {
        let fjall_error = |e: fjall::Error| snapshot_error(describe_fjall_error(&e));
        let mut ingestion = fresh.start_ingestion().map_err(fjall_error)?;
        // The reader has checked that keys increase, as ingestion requires
        // (it would panic otherwise), and checks the CRC before the last record
        // is returned, so a damaged file never reaches the switch.
        while let Some((key, value)) = reader.next_record().map_err(snapshot_error)? {
            ingestion.write(key, value).map_err(fjall_error)?;
        }
        ingestion.finish().map_err(fjall_error)
    })();
    match loaded {
        Ok(()) => Ok(fresh),
        Err(e) => {
            let _ = store.db.delete_keyspace(fresh);
            Err(e)
        }
    }
}

/// A suffix that makes a new keyspace name unique within this database.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Builds a snapshot from a point-in-time view while applies go on.
pub struct SnapshotBuilder {
    store: Db,
    data: Arc<RwLock<ActiveData>>,
    stats: Arc<ApplyStats>,
    known_whole: snapshot::KnownWhole,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        // Holding the read lock keeps an install from dropping the keyspace we read.
        let data = self.data.read().await;
        let store = self.store.clone();
        let (path, meta) = tokio::task::block_in_place(|| -> io::Result<_> {
            let view = store.db.snapshot();
            // Counted from the view: what is applied after it belongs to the
            // next snapshot.
            self.stats.log_growth.snapshot_taken();
            let meta = state_meta(&view, &store.sm_meta)?;
            let writer =
                SnapshotWriter::create(&store.snapshot_dir, &meta).map_err(snapshot_error)?;
            let (path, size) = write_state(&view, &data.keyspace, writer)?;
            self.known_whole.mark(&path);
            snapshot::remove_others(&store.snapshot_dir, &path).map_err(snapshot_error)?;
            self.stats.snapshot_bytes.store(size, Ordering::Relaxed);
            metrics::snapshot(SnapshotEvent::Built, size);
            tracing::info!(
                "built snapshot {} at {:?}: {size} bytes",
                path.display(),
                meta.last_log_id
            );
            Ok((path, meta))
        })?;
        drop(data);
        let file = tokio::fs::File::open(&path).await.map_err(snapshot_error)?;
        Ok(Snapshot {
            meta,
            snapshot: SnapshotFile::finished(path, file),
        })
    }
}

/// The applied log id and membership recorded in `view`: a snapshot's header.
fn state_meta(view: &fjall::Snapshot, sm_meta: &Keyspace) -> io::Result<SnapshotMeta> {
    Ok(SnapshotMeta {
        last_log_id: records::applied_in(view, sm_meta)?,
        last_membership: records::read(view, sm_meta, records::MEMBERSHIP)?.unwrap_or_default(),
    })
}

/// Writes every record of the data keyspace `data` as `view` sees it, then
/// finishes the file (a snapshot, or a BACKUP's copy). Returns its path and
/// size; on an error, what was written is removed.
fn write_state(
    view: &fjall::Snapshot,
    data: &Keyspace,
    mut writer: SnapshotWriter,
) -> io::Result<(std::path::PathBuf, u64)> {
    let mut add_all = || -> io::Result<()> {
        for pair in view.iter(data) {
            let (key, value) = pair
                .into_inner()
                .map_err(|e| snapshot_error(describe_fjall_error(&e)))?;
            writer.add(&key, &value).map_err(snapshot_error)?;
        }
        Ok(())
    };
    match add_all() {
        Ok(()) => writer.finish().map_err(snapshot_error),
        Err(e) => {
            writer.abandon();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;
    use crate::command::{Op, Proposal, Queued};
    use crate::store::{open, Identity, LAYOUT_VERSION};
    use crate::types::CommittedLeaderId;

    fn entry(index: u64, ops: &[Op]) -> Entry {
        let leader = CommittedLeaderId {
            term: 1,
            node_id: 1,
        };
        Entry {
            log_id: LogId::new(leader, index),
            payload: EntryPayload::Normal(Proposal::new(ops, crate::command::UNVERSIONED_MACHINE)),
        }
    }

    fn set(key: &str) -> Op {
        Op::Run(Queued {
            db: 0,
            args: vec!["SET".into(), key.into(), "v".into()],
        })
    }

    /// The log: two writes, the move to version 4, a script, one more write.
    fn log() -> Vec<Entry> {
        let script = Op::Run(Queued {
            db: 0,
            args: vec![
                "EVAL".into(),
                "return redis.call('SET', KEYS[1], 's')".into(),
                "1".into(),
                "c".into(),
            ],
        });
        vec![
            entry(1, &[set("a")]),
            entry(2, &[set("b")]),
            entry(3, &[Op::MachineVersion { to: 4 }]),
            entry(4, &[script]),
            entry(5, &[set("d")]),
        ]
    }

    async fn apply(machine: &mut StateMachine, entries: &[Entry]) {
        let items: Vec<io::Result<EntryResponder<TypeConfig>>> =
            entries.iter().map(|e| Ok((e.clone(), None))).collect();
        machine
            .apply(stream::iter(items))
            .await
            .expect("holding back is not an error");
    }

    fn db(dir: &std::path::Path) -> Db {
        let identity = Identity {
            layout: LAYOUT_VERSION,
            replica_id: 1,
            cluster_id: "hold-back".into(),
        };
        open(dir, &identity).expect("a fresh database")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_holds_back_at_a_version_it_cannot_apply_and_applies_it_once_upgraded() {
        // One log for both: each entry carries the time it was made.
        let log = log();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let upgraded = {
            let other = tempfile::tempdir().expect("a temporary folder");
            let (mut machine, reader) = StateMachine::open(db(other.path())).expect("open");
            apply(&mut machine, &log).await;
            assert_eq!(reader.versions.current(), 4);
            reader.checksum().await.expect("a checksum")
        };

        let (mut machine, reader) =
            StateMachine::open_applying_up_to(db(dir.path()), 3).expect("open");
        apply(&mut machine, &log[..2]).await;
        assert_eq!(reader.versions.held_back(), None);
        apply(&mut machine, &log[2..]).await;
        let held = reader.versions.held_back().expect("held back");
        assert_eq!((held.at, held.needs, held.can_apply), (3, 4, 3));
        assert_eq!(reader.versions.applied(), 2);
        assert_eq!(reader.versions.current(), 3);
        assert_eq!(
            machine
                .applied_state()
                .await
                .expect("state")
                .0
                .map(|id| id.index),
            Some(2)
        );
        assert_eq!(
            reader.checksum().await.expect("a checksum").applied_index,
            2
        );
        drop((machine, reader));

        // The upgraded build starts where the state stopped and applies the
        // rest as openraft hands it again: the same state as a replica that
        // never held back.
        let (mut machine, reader) = StateMachine::open(db(dir.path())).expect("open");
        assert_eq!(reader.versions.held_back(), None);
        apply(&mut machine, &log[2..]).await;
        assert_eq!(reader.versions.current(), 4);
        assert_eq!(reader.checksum().await.expect("a checksum"), upgraded);

        // Opened again by a build limited to 3, a state of version 4 holds
        // back from its next entry at once.
        drop((machine, reader));
        let (_machine, reader) =
            StateMachine::open_applying_up_to(db(dir.path()), 3).expect("open");
        let held = reader.versions.held_back().expect("held back");
        assert_eq!((held.at, held.needs), (6, 4));
    }
}
