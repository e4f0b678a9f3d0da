//! Everything a replica keeps on disk: one fjall database per replica.
//!
//! # Layout
//! | keyspace      | key                     | value                                     |
//! |---------------|-------------------------|-------------------------------------------|
//! | `raft_log`    | log index, u64 big-end. | the log entry, binary (`log.rs`)          |
//! | `raft_meta`   | `identity`, `vote`, `purged` (and `committed`, from earlier builds) | JSON |
//! | `sm_meta`     | `applied`, `membership`, `data_keyspace` | JSON                     |
//! | `data-<gen>`  | user key                | user value (raw bytes)                    |
//!
//! The state machine's own bookkeeping lives in `sm_meta`, never among user
//! keys, so no user key can collide with it (a lesson from Dragonboat's example,
//! whose applied index shared the user keyspace).
//!
//! # The durability rules, and where each is kept
//! 1. **Vote**: fsynced before `save_vote` returns (`log.rs`). A replica must
//!    never vote twice in a term, even across a power cut.
//! 2. **Log entries**: fsynced before openraft is told they are flushed
//!    (`log.rs`, `append`, and `group_commit.rs`). The leader counts this
//!    replica towards a quorum only after that, so an acknowledged write is on
//!    the disks of a majority. openraft 0.10 separates the two moments: entries
//!    must be readable when `append` returns, and durable when its `IOFlushed`
//!    callback is completed. Ours writes them to the journal unsynced and
//!    returns; one flusher thread fsyncs for every append waiting and only then
//!    completes their callbacks. So the rule rests on the callback alone, and
//!    `tests/group_commit.rs` fails if one is completed before its fsync.
//! 3. **Applying**: the data changes of a whole run of entries, the last applied
//!    log id and the last membership go into ONE fjall batch
//!    (`state_machine.rs`, `apply`). After any crash the state machine therefore
//!    reports exactly the entries whose effects it holds: restart resumes at
//!    that id and re-applies nothing at or below it.
//! 4. The log and the state machine share this one database and so one
//!    journal, which fjall replays as a prefix of the batches committed. The
//!    apply batch is not fsynced on its own: the next log fsync covers it. If
//!    power is lost first, the state machine falls back to an earlier applied
//!    id with the matching data, and the entries after it are still in the
//!    (fsynced) log to be applied again. Purging the log is a later journal
//!    record than the applies it depends on, so it can never survive a crash
//!    that the state it relied on did not. Entries at or below the purge
//!    watermark count as purged even while still on disk (`log.rs`,
//!    `get_log_state`).
//! 5. **Snapshot install** (`snapshot.rs`): the new state is loaded into a fresh
//!    `data-<gen>` keyspace; one fsynced batch then switches `data_keyspace`,
//!    the applied id and the membership together. A crash before that batch
//!    leaves the old state; after it, the new one. Leftover keyspaces are
//!    dropped at the next start. openraft 0.10 also takes this path at start-up
//!    when this replica's own snapshot holds more than its state machine (a
//!    power cut lost unsynced apply batches, rule 4, after a snapshot of them
//!    was fsynced): the state is loaded back from the file.
//! 6. **Holding back** (`state_machine.rs`, `machine_version.rs`): an entry of a
//!    machine version this build cannot apply is not applied, nor is anything
//!    after it, yet `apply` returns `Ok` (openraft would stop otherwise). The
//!    applied id of rule 3 stays at the last entry applied, so a restart resumes
//!    there, a snapshot covers only what was applied, and the log purge, which
//!    follows the snapshot, never removes an entry not applied: a restart with a
//!    build that applies it finds every entry it needs in the log.

#[cfg(test)]
mod conformance;
mod group_commit;
mod known_heads;
pub mod log;
pub mod machine_version;
mod recent_entries;
mod records;
pub mod snapshot;
pub mod state_machine;

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

pub use self::log::LogStore;
pub use self::machine_version::MachineVersions;
pub use self::state_machine::{ApplyStats, StateChecksum, StateDigest, StateMachine, StateReader};

/// The version of the on-disk layout described above. A folder written with
/// another layout is refused rather than misread, except layout 2: it is
/// layout 3 without flush marks (it never flushed that way), so it is opened
/// and recorded as 3, after which older builds refuse it.
pub const LAYOUT_VERSION: u32 = 3;
const UPGRADABLE_LAYOUT: u32 = 2;

pub(crate) const RAFT_LOG: &str = "raft_log";
pub(crate) const RAFT_META: &str = "raft_meta";
pub(crate) const SM_META: &str = "sm_meta";

const IDENTITY_KEY: &str = "identity";

/// Memory budget. fjall's default memtable is 64 MiB per keyspace; with the
/// log and the data keyspace filling at once under load (and a memtable being
/// flushed while the next fills), that alone could pass the 200 MiB a replica
/// may use. fjall 3.1's total write-buffer cap is unfinished (hidden,
/// deprecated), so the cap is set per keyspace.
///
/// The block cache was 32 MiB, and the loaded leader of a million-key
/// catch-up peaked at 176-207 MiB; at 16 MiB it peaked at 155-159 MiB, and
/// 50-client GETs of 100,000 keys stayed at about 41,000/s (six A/B pairs).
const BLOCK_CACHE_BYTES: u64 = 16 * 1024 * 1024;
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// The log's newest entries are read from `recent_entries.rs`, not from its
/// memtable, which only has to hold them until they are flushed: half the
/// data keyspace's, to leave room for apply's known heads (`known_heads.rs`).
const LOG_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// The small bookkeeping keyspaces are rewritten on every commit and apply;
/// a smaller memtable flushes their old versions sooner.
const META_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// Options for the data keyspace (used at creation only, as are the others).
pub(crate) fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
}

fn log_keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(LOG_MEMTABLE_BYTES)
}

fn meta_keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(META_MEMTABLE_BYTES)
}

/// Who a data folder belongs to. Written once, when the folder is created, and
/// checked at every start so that one replica's folder is never opened by
/// another replica or another cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub layout: u32,
    pub replica_id: NodeId,
    pub cluster_id: String,
}

/// Why a replica's data folder cannot be used. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{path} is in use by another process (is replica {replica_id} already running with this --data-dir?)"
    )]
    Locked { path: PathBuf, replica_id: NodeId },
    #[error(
        "{path} holds the data of replica {found}, not replica {expected}; start it with \
         --replica-id {found}, or give another --data-dir"
    )]
    WrongReplica {
        path: PathBuf,
        found: NodeId,
        expected: NodeId,
    },
    #[error(
        "{path} belongs to cluster '{found}', not to this cluster '{expected}' (the cluster id \
         follows --peers unless --cluster-id is given); start with the --peers it was created \
         with, or delete the folder to start over"
    )]
    WrongCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} uses on-disk layout {found}; this build reads layout {LAYOUT_VERSION}")]
    WrongLayout { path: PathBuf, found: u32 },
    #[error("{path} is not an example-ondisk data folder ({why}); move it away or give another --data-dir")]
    Foreign { path: PathBuf, why: String },
    #[error("cannot open the database in {path}: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// The opened database and its fixed keyspaces, shared by the log store and
/// the state machine.
#[derive(Clone)]
pub struct Db {
    pub db: Database,
    pub raft_log: Keyspace,
    pub raft_meta: Keyspace,
    pub sm_meta: Keyspace,
    /// Where finished and incoming snapshots are kept (next to `db/`).
    pub snapshot_dir: PathBuf,
}

/// Opens (or creates) the replica's database under `replica_dir/db` and checks
/// that it belongs to `identity`.
pub fn open(replica_dir: &Path, identity: &Identity) -> Result<Db, OpenError> {
    let path = replica_dir.join("db");
    let damaged = |why: String| OpenError::Damaged {
        path: path.clone(),
        why,
    };

    if path.exists() && !path.is_dir() {
        return Err(OpenError::Foreign {
            path,
            why: "it is a file, not a folder".into(),
        });
    }
    let is_new = !path.exists() || is_empty_dir(&path);
    if !is_new && !path.join("version").exists() {
        return Err(OpenError::Foreign {
            path,
            why: "it has no fjall version marker".into(),
        });
    }
    std::fs::create_dir_all(replica_dir).map_err(|e| damaged(e.to_string()))?;

    // fjall reports most damage as an error, but a badly mangled file can make
    // it panic; either way the person gets one line, not a backtrace.
    let opened = std::panic::catch_unwind(|| {
        Database::builder(&path)
            .cache_size(BLOCK_CACHE_BYTES)
            .open()
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(fjall::Error::Locked)) => {
            return Err(OpenError::Locked {
                path,
                replica_id: identity.replica_id,
            })
        }
        Ok(Err(e)) => return Err(damaged(describe_fjall_error(&e))),
        Err(_) => {
            return Err(damaged(
                "fjall could not read its files (it panicked; see replica.log)".into(),
            ))
        }
    };

    let keyspace = |name: &str, options: fn() -> KeyspaceCreateOptions| {
        db.keyspace(name, options)
            .map_err(|e| damaged(describe_fjall_error(&e)))
    };
    let raft_meta = keyspace(RAFT_META, meta_keyspace_options)?;
    check_identity(&db, &raft_meta, &path, identity, is_new)?;

    let store = Db {
        raft_log: keyspace(RAFT_LOG, log_keyspace_options)?,
        sm_meta: keyspace(SM_META, meta_keyspace_options)?,
        raft_meta,
        snapshot_dir: replica_dir.join("snapshots"),
        db,
    };
    std::fs::create_dir_all(&store.snapshot_dir).map_err(|e| damaged(e.to_string()))?;
    Ok(store)
}

fn check_identity(
    db: &Database,
    raft_meta: &Keyspace,
    path: &Path,
    expected: &Identity,
    is_new: bool,
) -> Result<(), OpenError> {
    let stored = raft_meta
        .get(IDENTITY_KEY)
        .map_err(|e| OpenError::Damaged {
            path: path.into(),
            why: describe_fjall_error(&e),
        })?;
    let Some(bytes) = stored else {
        if !is_new {
            return Err(OpenError::Foreign {
                path: path.into(),
                why: "it holds no example-ondisk identity record; if it was one, its journal is damaged"
                    .into(),
            });
        }
        return write_identity(db, raft_meta, path, expected);
    };
    let found: Identity = serde_json::from_slice(&bytes).map_err(|e| OpenError::Foreign {
        path: path.into(),
        why: format!("its identity record is unreadable: {e}"),
    })?;
    if found.layout != LAYOUT_VERSION && found.layout != UPGRADABLE_LAYOUT {
        return Err(OpenError::WrongLayout {
            path: path.into(),
            found: found.layout,
        });
    }
    if found.replica_id != expected.replica_id {
        return Err(OpenError::WrongReplica {
            path: path.into(),
            found: found.replica_id,
            expected: expected.replica_id,
        });
    }
    if found.cluster_id != expected.cluster_id {
        return Err(OpenError::WrongCluster {
            path: path.into(),
            found: found.cluster_id,
            expected: expected.cluster_id.clone(),
        });
    }
    if found.layout == UPGRADABLE_LAYOUT {
        // Replica and cluster matched above: the upgraded record is the expected one.
        write_identity(db, raft_meta, path, expected)?;
        tracing::info!(
            "{} upgraded from layout {UPGRADABLE_LAYOUT} to {LAYOUT_VERSION}",
            path.display()
        );
    }
    Ok(())
}

/// Records who the folder belongs to, durably, before anything else is written.
fn write_identity(
    db: &Database,
    raft_meta: &Keyspace,
    path: &Path,
    identity: &Identity,
) -> Result<(), OpenError> {
    let json = serde_json::to_vec(identity).expect("identity serialises");
    raft_meta
        .insert(IDENTITY_KEY, json)
        .and_then(|()| db.persist(PersistMode::SyncAll))
        .map_err(|e| OpenError::Damaged {
            path: path.into(),
            why: describe_fjall_error(&e),
        })
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}

/// A fjall error as openraft 0.10's storage traits take it: an `io::Error`
/// of the same kind, whose message says in words what went wrong.
pub(crate) fn fjall_io_error(error: fjall::Error) -> std::io::Error {
    let kind = match &error {
        fjall::Error::Io(e) => e.kind(),
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, describe_fjall_error(&error))
}

/// fjall's own `Display` is its `Debug`; say the common cases in words.
pub fn describe_fjall_error(error: &fjall::Error) -> String {
    match error {
        fjall::Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            format!("the disk is full ({e})")
        }
        fjall::Error::Io(e) => format!("I/O error: {e}"),
        fjall::Error::Poisoned => {
            "an earlier write to disk failed (disk full or failing?); restart the replica".into()
        }
        fjall::Error::Locked => "the database is in use by another process".into(),
        fjall::Error::InvalidVersion(_) => "its format version marker is missing or damaged".into(),
        fjall::Error::JournalRecovery(e) => format!("its journal cannot be recovered: {e:?}"),
        fjall::Error::Unrecoverable => {
            "fjall found it unrecoverable (details in replica.log)".into()
        }
        other => format!("{other:?}"),
    }
}
