//! Snapshot files: the whole key-value state at one applied log id.
//!
//! Following Dragonboat's on-disk example and Ravel, a snapshot is a backup of
//! the state taken from a point-in-time view of the database while applies go
//! on; installing one drops the old state and loads the new (see
//! `StateMachine::install_snapshot`). The file is written and read as a
//! stream, so memory does not grow with the state's size.
//!
//! # File format (version 3: the data keyspace of layout 3, see `machine/record.rs`)
//! ```text
//! "EXODSNAP"  u32 version
//! u32 len, JSON SnapshotMeta          -- applied log id, membership, id
//! repeated: u8 1, u32 klen, key, u32 vlen, value   -- keys strictly increasing
//! u8 0, u64 record count, u32 CRC-32 of the version, the header JSON and
//!   every record (format 2's CRC left the version out)
//! ```
//! All integers big-endian. A reader checks the order, the count and the CRC
//! before anything it read is allowed to replace the current state.
//!
//! The header's JSON is openraft's `SnapshotMeta`. openraft 0.10 dropped its
//! `snapshot_id` but still writes the field (empty) and ignores it on read, so
//! files written under 0.9 and 0.10 read the same. The file name carries our
//! own id: `snapshot-TERM-NODE-INDEX-NANOS.snap`.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::{self, FsyncSite};
use crate::types::{SnapshotMeta, TypeConfig};

/// A snapshot as openraft hands it over: its header and its file.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// A snapshot file as openraft carries it (`RaftStateMachine::SnapshotData`):
/// the open file, and where it lies, so that an install can keep a received
/// file as this replica's own snapshot instead of writing it again.
///
/// A file received from a leader (see [`Inbox`]) is removed when openraft lets
/// go of it without an install keeping it: openraft drops a snapshot that is
/// not newer than what this replica has committed, or one sent under an old
/// vote. This replica's own snapshots are never removed on drop.
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: tokio::fs::File,
    path: PathBuf,
    remove_on_drop: bool,
}

impl SnapshotFile {
    /// A finished snapshot of this replica, opened at `path`.
    pub fn finished(path: PathBuf, file: tokio::fs::File) -> Self {
        SnapshotFile {
            file,
            path,
            remove_on_drop: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this file came from a leader and is not installed yet.
    pub fn is_received(&self) -> bool {
        self.remove_on_drop
    }

    /// The install has taken the received file over (renamed it into place).
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.remove_on_drop {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("could not remove {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// A copy of the whole state made for a client's BACKUP
/// (`StateReader::write_backup`). The file is removed when this is dropped:
/// it only lives while it is sent.
#[derive(Debug)]
pub struct BackupCopy {
    pub path: PathBuf,
    /// The applied log id and membership the copy holds.
    pub meta: SnapshotMeta,
    /// The file's length in bytes.
    pub size: u64,
}

impl Drop for BackupCopy {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Where snapshots sent by a leader are written as they arrive. The network
/// server fills the file; the state machine's install reads it and keeps it.
#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    pub fn new(dir: &Path) -> Self {
        Inbox {
            dir: dir.to_path_buf(),
        }
    }

    /// A new, empty file for a snapshot about to arrive. Opened for reading
    /// and writing: the network writes the chunks, the install reads them back.
    pub fn create(&self) -> io::Result<SnapshotFile> {
        let path = incoming_path(&self.dir);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        crate::faults::crash_point("install:receiving");
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path,
            remove_on_drop: true,
        })
    }
}

const MAGIC: &[u8; 8] = b"EXODSNAP";
const FORMAT_VERSION: u32 = 3;
/// Format 2 holds layout 2's data keyspace, which layout 3 reads as it is.
const OLDEST_FORMAT_READ: u32 = 2;
const RECORD: u8 = 1;
const END: u8 = 0;
/// A header bigger than this is damage, not a membership list.
const MAX_HEADER_LEN: u32 = 16 * 1024 * 1024;
const MAX_KEY_LEN: u32 = 64 * 1024;
const MAX_VALUE_LEN: u32 = 64 * 1024 * 1024;

const FINISHED_SUFFIX: &str = ".snap";
const INCOMING_SUFFIX: &str = ".part";
const WRITING_SUFFIX: &str = ".writing";
/// A copy of the state made for a client's BACKUP, removed once sent.
const BACKUP_SUFFIX: &str = ".backup";
/// A finished snapshot found damaged at start-up, kept for a look.
const DAMAGED_SUFFIX: &str = ".damaged";

/// Writes records to a new snapshot file, then makes it durable under its final name.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    count: u64,
    last_key: Option<Vec<u8>>,
    temp_path: PathBuf,
    final_path: PathBuf,
}

impl SnapshotWriter {
    /// A new snapshot of this replica in `dir`, named after `meta`.
    pub fn create(dir: &Path, meta: &SnapshotMeta) -> io::Result<Self> {
        Self::create_at(finished_path(dir, meta), meta)
    }

    /// A snapshot file that appears at `final_path` only once it is whole
    /// (written to `NAME.writing` meanwhile, renamed by [`SnapshotWriter::finish`]).
    pub fn create_at(final_path: PathBuf, meta: &SnapshotMeta) -> io::Result<Self> {
        let temp_path = final_path.with_extension(&WRITING_SUFFIX[1..]);
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(&temp_path)?);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_be_bytes())?;
        let header = serde_json::to_vec(meta).expect("snapshot meta serialises");
        out.write_all(&(header.len() as u32).to_be_bytes())?;
        out.write_all(&header)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&FORMAT_VERSION.to_be_bytes());
        crc.update(&header);
        Ok(SnapshotWriter {
            out,
            crc,
            count: 0,
            last_key: None,
            temp_path,
            final_path,
        })
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(io::Error::other(
                "snapshot keys must be written in increasing order",
            ));
        }
        let mut record = Vec::with_capacity(9 + key.len() + value.len());
        record.push(RECORD);
        record.extend_from_slice(&(key.len() as u32).to_be_bytes());
        record.extend_from_slice(key);
        record.extend_from_slice(&(value.len() as u32).to_be_bytes());
        record.extend_from_slice(value);
        self.crc.update(&record);
        self.out.write_all(&record)?;
        self.count += 1;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    /// Gives up on the file: removes what was written so far.
    pub fn abandon(self) {
        drop(self.out);
        if let Err(e) = fs::remove_file(&self.temp_path) {
            tracing::warn!("could not remove {}: {e}", self.temp_path.display());
        }
    }

    /// Writes the trailer, fsyncs, and renames into place. Returns the path and size.
    pub fn finish(mut self) -> io::Result<(PathBuf, u64)> {
        self.out.write_all(&[END])?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out
            .write_all(&self.crc.clone().finalize().to_be_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        let size = metrics::timed_fsync(FsyncSite::SnapshotFile, || -> io::Result<u64> {
            file.sync_all()?;
            let size = file.metadata()?.len();
            fs::rename(&self.temp_path, &self.final_path)?;
            sync_dir(self.final_path.parent().unwrap_or(Path::new(".")))?;
            Ok(size)
        })?;
        Ok((self.final_path, size))
    }
}

/// Reads a snapshot file record by record, checking it as it goes.
pub struct SnapshotReader<R: Read> {
    input: BufReader<R>,
    crc: crc32fast::Hasher,
    count: u64,
    last_key: Option<Vec<u8>>,
    done: bool,
}

fn damaged(why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged snapshot: {}", why.into()),
    )
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header; returns the reader and the snapshot's meta.
    pub fn open(input: R) -> io::Result<(Self, SnapshotMeta)> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| damaged("too short for a header"))?;
        if &magic != MAGIC {
            return Err(damaged("not an example-ondisk snapshot file"));
        }
        let version = read_u32(&mut input)?;
        if !(OLDEST_FORMAT_READ..=FORMAT_VERSION).contains(&version) {
            return Err(damaged(format!(
                "format {version}, this build reads formats {OLDEST_FORMAT_READ} to {FORMAT_VERSION}"
            )));
        }
        let header_len = read_u32(&mut input)?;
        if header_len > MAX_HEADER_LEN {
            return Err(damaged(format!(
                "header length {header_len} is implausible"
            )));
        }
        let header = read_bytes(&mut input, header_len)?;
        let meta: SnapshotMeta = serde_json::from_slice(&header)
            .map_err(|e| damaged(format!("header unreadable: {e}")))?;
        let mut crc = crc32fast::Hasher::new();
        if version >= 3 {
            crc.update(&version.to_be_bytes());
        }
        crc.update(&header);
        let reader = SnapshotReader {
            input,
            crc,
            count: 0,
            last_key: None,
            done: false,
        };
        Ok((reader, meta))
    }

    /// The next key-value pair, or `None` after the trailer checked out.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.input
            .read_exact(&mut tag)
            .map_err(|_| damaged("ends without its trailer"))?;
        match tag[0] {
            RECORD => {
                let key_len = read_u32(&mut self.input)?;
                if key_len == 0 || key_len > MAX_KEY_LEN {
                    return Err(damaged(format!("key length {key_len} is out of range")));
                }
                let key = read_bytes(&mut self.input, key_len)?;
                let value_len = read_u32(&mut self.input)?;
                if value_len > MAX_VALUE_LEN {
                    return Err(damaged(format!("value length {value_len} is out of range")));
                }
                let value = read_bytes(&mut self.input, value_len)?;
                if self.last_key.as_ref().is_some_and(|last| *last >= key) {
                    return Err(damaged("keys are out of order"));
                }
                self.crc.update(&[RECORD]);
                self.crc.update(&key_len.to_be_bytes());
                self.crc.update(&key);
                self.crc.update(&value_len.to_be_bytes());
                self.crc.update(&value);
                self.count += 1;
                self.last_key = Some(key.clone());
                Ok(Some((key, value)))
            }
            END => {
                let mut count = [0u8; 8];
                self.input
                    .read_exact(&mut count)
                    .map_err(|_| damaged("trailer is cut short"))?;
                let crc = read_u32(&mut self.input)?;
                if u64::from_be_bytes(count) != self.count {
                    return Err(damaged("record count does not match"));
                }
                if crc != self.crc.clone().finalize() {
                    return Err(damaged("checksum does not match"));
                }
                let mut rest = [0u8; 1];
                if self.input.read(&mut rest)? != 0 {
                    return Err(damaged("bytes after the trailer"));
                }
                self.done = true;
                Ok(None)
            }
            other => Err(damaged(format!("unknown record tag {other}"))),
        }
    }
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input
        .read_exact(&mut bytes)
        .map_err(|_| damaged("cut short"))?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_bytes(input: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut bytes)?;
    if bytes.len() != len as usize {
        return Err(damaged("cut short"));
    }
    Ok(bytes)
}

/// Removes what a crash left half-done in `dir`: snapshots being written or
/// received, and copies made for a BACKUP that was being sent. Only at
/// start-up: at any other time such a file may be in use.
pub fn remove_unfinished(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = file_name(&path);
        if name.ends_with(INCOMING_SUFFIX)
            || name.ends_with(WRITING_SUFFIX)
            || name.ends_with(BACKUP_SUFFIX)
        {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// How a snapshot file looked when it was last read through whole (or written,
/// or received and checked): a file that still looks the same is not read again
/// before it is sent. Damage done by writing to the file changes its length or
/// time; decay that does neither is caught by the receiver, which refuses the
/// file and tells the sender to forget it was whole (see [`KnownWhole`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl CheckedFile {
    /// The file at `path` as it is now, through its open handle `file`.
    pub fn of(path: &Path, file: &File) -> io::Result<CheckedFile> {
        let metadata = file.metadata()?;
        Ok(CheckedFile {
            path: path.to_path_buf(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    /// [`CheckedFile::of`] for a file not open yet.
    pub fn at(path: &Path) -> io::Result<CheckedFile> {
        CheckedFile::of(path, &File::open(path)?)
    }
}

/// The snapshot file this replica last knew to be whole, if any. Shared by the
/// state machine (which checks against it before sending a snapshot), the
/// snapshot builder (which marks what it writes) and the network client (which
/// forgets it when a receiver found the file damaged). Cheap to clone.
#[derive(Clone, Default)]
pub struct KnownWhole(Arc<Mutex<Option<CheckedFile>>>);

impl KnownWhole {
    /// Whether `file` looks exactly as it did when it was last known whole.
    pub fn is(&self, file: &CheckedFile) -> bool {
        self.lock().as_ref() == Some(file)
    }

    /// Records that `file`, as it looks now, is whole.
    pub fn set(&self, file: CheckedFile) {
        *self.lock() = Some(file);
    }

    /// Records that the snapshot at `path` is whole as it is now.
    pub fn mark(&self, path: &Path) {
        *self.lock() = CheckedFile::at(path).ok();
    }

    /// Nothing is known whole any more: the next send reads the file through.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The record is a plain value, which a panic elsewhere cannot leave
    /// half-written, so a poisoned lock is still good.
    fn lock(&self) -> MutexGuard<'_, Option<CheckedFile>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The last part of `path`, for messages and suffix checks.
fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// The finished snapshot files in `dir` (not those being written or received,
/// nor those set aside).
fn finished_snapshots(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut finished = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if file_name(&path).ends_with(FINISHED_SUFFIX) {
            finished.push(path);
        }
    }
    Ok(finished)
}

/// Reads the snapshot at `path` to its end, checking what an install checks:
/// the header, the order of the keys, the record count and the CRC.
pub fn verify(path: &Path) -> io::Result<SnapshotMeta> {
    verify_file(&File::open(path)?)
}

/// [`verify`] through an open file, from its current position to its end.
pub fn verify_file(file: &File) -> io::Result<SnapshotMeta> {
    let (mut reader, meta) = SnapshotReader::open(file)?;
    while reader.next_record()?.is_some() {}
    Ok(meta)
}

/// Reads a snapshot received from another replica through, from its start,
/// and checks that it holds the state it was announced with. Leaves the file
/// at its start for the install to read.
pub fn check_received(mut file: File, announced: &SnapshotMeta) -> io::Result<()> {
    file.rewind()?;
    let found = verify_file(&file)?;
    if found.last_log_id != announced.last_log_id {
        return Err(damaged(format!(
            "it holds the state at {:?}, but was announced at {:?}",
            found.last_log_id, announced.last_log_id
        )));
    }
    file.rewind()
}

/// Renames every finished snapshot in `dir` that does not read back whole to
/// `NAME.damaged`, and returns one line for each: which file, and what is wrong.
///
/// At start-up (`get_current_snapshot` checks again before each send). Such a
/// file would otherwise be offered to a lagging replica, whose install would
/// find the damage and stop it; and a restart of that replica would be sent
/// the same file again. A snapshot is only a copy of this replica's state, so
/// nothing is lost: with no snapshot and a purged log, openraft builds a new
/// one from the state machine as it starts.
pub fn set_aside_damaged(dir: &Path) -> io::Result<Vec<String>> {
    let mut set_aside = Vec::new();
    for path in finished_snapshots(dir)? {
        if let Err(e) = verify(&path) {
            set_aside.push(set_aside_as_damaged(&path, &e)?);
        }
    }
    Ok(set_aside)
}

/// Renames the snapshot at `path`, found damaged with `error`, to
/// `NAME.damaged` (kept for a look; nothing reads it again) and returns the
/// line that says so.
pub fn set_aside_as_damaged(path: &Path, error: &io::Error) -> io::Result<String> {
    let name = file_name(path);
    fs::rename(path, path.with_file_name(format!("{name}{DAMAGED_SUFFIX}")))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(format!(
        "the snapshot file {name} is unreadable ({error}); it was renamed to \
         {name}{DAMAGED_SUFFIX}, and a new snapshot is built from this replica's state"
    ))
}

/// The newest finished snapshot in `dir`, with its meta; older finished ones
/// are removed (they are never needed again).
pub fn latest(dir: &Path) -> io::Result<Option<(PathBuf, SnapshotMeta)>> {
    let mut newest: Option<(PathBuf, SnapshotMeta)> = None;
    for path in finished_snapshots(dir)? {
        let meta = match File::open(&path).and_then(SnapshotReader::open) {
            Ok((_, meta)) => meta,
            Err(e) => {
                tracing::warn!("ignoring unreadable snapshot {}: {e}", path.display());
                continue;
            }
        };
        let is_newer = newest
            .as_ref()
            .is_none_or(|(_, best)| meta.last_log_id > best.last_log_id);
        if is_newer {
            if let Some((older, _)) = newest.replace((path, meta)) {
                let _ = fs::remove_file(older);
            }
        } else {
            let _ = fs::remove_file(path);
        }
    }
    Ok(newest)
}

/// Removes every finished snapshot in `dir` except `keep`.
pub fn remove_others(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let finished = path.extension().is_some_and(|ext| ext == "snap");
        if finished && path != keep {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A fresh path for the copy of the state a BACKUP sends. Not a `.snap`: it
/// is never offered to a replica, and it is removed once sent or at the next
/// start ([`remove_unfinished`]).
pub fn backup_path(dir: &Path) -> PathBuf {
    dir.join(format!("backup-{}{BACKUP_SUFFIX}", now_nanos()))
}

/// A fresh path for receiving a snapshot from the leader.
fn incoming_path(dir: &Path) -> PathBuf {
    dir.join(format!("incoming-{}{INCOMING_SUFFIX}", now_nanos()))
}

/// A fresh name for a finished snapshot of the state at `meta`'s log id
/// (built here, or received and kept once installed). The name is only for
/// people and for telling files apart: readers take the meta from the header.
pub fn finished_path(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    let at = match &meta.last_log_id {
        Some(id) => format!(
            "{}-{}-{}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => "0-0-0".to_string(),
    };
    dir.join(format!("snapshot-{at}-{}{FINISHED_SUFFIX}", now_nanos()))
}

/// Makes a rename inside `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CommittedLeaderId, LogId};

    fn meta_at(index: u64) -> SnapshotMeta {
        let leader_id = CommittedLeaderId {
            term: 1,
            node_id: 1,
        };
        SnapshotMeta {
            last_log_id: Some(LogId::new(leader_id, index)),
            last_membership: Default::default(),
        }
    }

    fn write(dir: &Path, index: u64, pairs: &[(&[u8], &[u8])]) -> PathBuf {
        let mut writer = SnapshotWriter::create(dir, &meta_at(index)).unwrap();
        for (k, v) in pairs {
            writer.add(k, v).unwrap();
        }
        writer.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (mut reader, _) = SnapshotReader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(pair) = reader.next_record()? {
            out.push(pair);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_keeps_meta_and_records() {
        let dir = tempfile::tempdir().unwrap();
        // 130 and 300 have bytes >= 0x80 in binary: Dragonboat once lost those.
        for index in [130, 300] {
            let path = write(
                dir.path(),
                index,
                &[(b"a", b"1"), (b"b", b""), (&[0xff], &[0x80; 3])],
            );
            let bytes = fs::read(&path).unwrap();
            let (_, meta) = SnapshotReader::open(&bytes[..]).unwrap();
            assert_eq!(meta, meta_at(index));
            let pairs = read_all(&bytes).unwrap();
            assert_eq!(pairs.len(), 3);
            assert_eq!(pairs[2], (vec![0xff], vec![0x80; 3]));
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 7, &[(b"k1", b"v1"), (b"k2", b"v2")]);
        let bytes = fs::read(path).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                read_all(&bytes[..cut]).is_err(),
                "cut at {cut} was accepted"
            );
        }
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            assert!(read_all(&bad).is_err(), "flip at {at} was accepted");
        }
    }

    #[test]
    fn latest_picks_the_newest_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 5, &[]);
        let newest = write(dir.path(), 9, &[]);
        fs::write(dir.path().join("incoming-1.part"), b"half").unwrap();
        remove_unfinished(dir.path()).unwrap();
        let (path, meta) = latest(dir.path()).unwrap().unwrap();
        assert_eq!(path, newest);
        assert_eq!(meta.last_log_id.unwrap().index, 9);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_snapshots_are_set_aside_and_whole_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let whole = write(dir.path(), 5, &[(b"a", b"1"), (b"b", b"2")]);
        let cut = write(dir.path(), 7, &[(b"a", b"1"), (b"b", b"2")]);
        let bytes = fs::read(&cut).unwrap();
        fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        let flipped = write(dir.path(), 9, &[(b"a", b"1"), (b"b", b"2")]);
        let mut bytes = fs::read(&flipped).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&flipped, &bytes).unwrap();

        let notes = set_aside_damaged(dir.path()).unwrap();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.iter().all(|n| n.contains("damaged snapshot")),
            "{notes:?}"
        );
        assert!(whole.exists() && !cut.exists() && !flipped.exists());
        for path in [&cut, &flipped] {
            let aside = format!("{}{DAMAGED_SUFFIX}", path.display());
            assert!(Path::new(&aside).exists(), "{aside}");
        }
        // What is left is the whole one, even though it is the oldest.
        let (path, meta) = latest(dir.path()).unwrap().unwrap();
        assert_eq!(path, whole);
        assert_eq!(meta.last_log_id.unwrap().index, 5);
        assert!(set_aside_damaged(dir.path()).unwrap().is_empty());
    }
}
