//! `example-ondisk restore`: founds one replica of a NEW cluster from a
//! backup file (made by `example-ondisk backup`, `backup.rs`).
//!
//! How the restored state enters Raft: the way a snapshot from a leader does.
//! The backup's records are written as this replica's own snapshot file, with
//! a new header, then installed through the one loader there is
//! (`StateMachine::install_snapshot`, rule 5 in `store/mod.rs`): it loads
//! them into a fresh keyspace and switches the data, the applied log id, the
//! membership and the purge watermark in one fsynced batch. openraft then
//! starts from a replica that has applied, snapshotted and purged up to the
//! backup's index, with an empty log after it: the state of any replica just
//! after a snapshot install.
//!
//! The new header keeps the backup's index (so CHECKSUM reads `applied=N`
//! as the source's did at the backup) under leader id term 0, node 0, the
//! id openraft's own `initialize` gives a new cluster's first entry, so the
//! new cluster's first election (term 1) is above it. Its membership is
//! `--peers`. Every restore of one file with one `--peers` writes the same
//! log id and membership, so the replicas of the new cluster agree at once.
//!
//! A fresh cluster id (the folder's identity and every Raft frame carry it)
//! keeps the new cluster and the old one from ever talking to each other.
//!
//! Nothing is half-made: the file is read through and checked before anything
//! is created; the folder is built under a temporary name and renamed to
//! `replica-N` only once its state reads back with the backup's CHECKSUM.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use fjall::PersistMode;
use openraft::storage::RaftStateMachine;

use crate::cli::{fnv1a, Peers, RestoreArgs};
use crate::session::format_checksum;
use crate::store::snapshot::{self, SnapshotFile, SnapshotReader, SnapshotWriter};
use crate::store::{self, Identity, StateChecksum, StateDigest, StateMachine, LAYOUT_VERSION};
use crate::types::{CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership};

/// Why nothing was restored. Each is one line.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "{0} already exists; restore only makes a new replica folder: give another \
         --data-dir, or move the folder away"
    )]
    Exists(PathBuf),
    #[error("cannot read the backup {path}: {why}")]
    Unreadable { path: PathBuf, why: String },
    #[error("{path} is not a whole backup ({why}); nothing was restored")]
    Damaged { path: PathBuf, why: String },
    #[error("{0} holds the state of a cluster that never applied anything; nothing was restored")]
    Empty(PathBuf),
    #[error("restoring into {path} failed: {why}; nothing was restored")]
    Failed { path: PathBuf, why: String },
}

/// Makes the replica folder `args` asks for; returns the lines to print.
pub fn run(args: &RestoreArgs) -> Result<String, RestoreError> {
    let target = args.replica_dir();
    if target.exists() {
        return Err(RestoreError::Exists(target));
    }
    let (old_meta, backup_sum) = read_backup(&args.from)?;
    let Some(at) = old_meta.last_log_id else {
        return Err(RestoreError::Empty(args.from.clone()));
    };
    let cluster_id = match &args.cluster_id {
        Some(name) => name.clone(),
        None => derived_cluster_id(&backup_sum, &args.peers),
    };
    let meta = new_cluster_meta(at.index, &args.peers);

    let data_dir_was_there = args.data_dir.exists();
    let staging = staging_dir(args);
    let made = build(args, &staging, &cluster_id, &meta).and_then(|restored| {
        if (restored.keys, restored.digest) != (backup_sum.keys, backup_sum.digest) {
            return Err(format!(
                "the restored state reads back as {}, the backup holds {}",
                format_checksum(&restored),
                format_checksum(&backup_sum)
            ));
        }
        fs::rename(&staging, &target)
            .and_then(|()| snapshot::sync_dir(&args.data_dir))
            .map_err(|e| format!("cannot rename {}: {e}", staging.display()))?;
        Ok(restored)
    });
    let restored = match made {
        Ok(restored) => restored,
        Err(why) => {
            let _ = fs::remove_dir_all(&staging);
            if !data_dir_was_there {
                let _ = fs::remove_dir(&args.data_dir);
            }
            return Err(RestoreError::Failed { path: target, why });
        }
    };
    Ok(format!(
        "restored replica {} of the new cluster '{cluster_id}' into {}, at {}\n\
         start it with: example-ondisk --replica-id {} --data-dir {} --peers {} --cluster-id {cluster_id}",
        args.replica_id,
        target.display(),
        format_checksum(&restored),
        args.replica_id,
        args.data_dir.display(),
        args.peers,
    ))
}

/// Reads the backup through, checking everything an install checks, before
/// anything is created.
fn read_backup(path: &Path) -> Result<(SnapshotMeta, StateChecksum), RestoreError> {
    let file = File::open(path).map_err(|e| RestoreError::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    StateDigest::of_file(file).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => RestoreError::Damaged {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
        _ => RestoreError::Unreadable {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    })
}

/// The header of the new cluster's first snapshot: the backup's index, at
/// the leader id of a new cluster's first entry, with `peers` as members.
fn new_cluster_meta(index: u64, peers: &Peers) -> SnapshotMeta {
    let log_id = LogId::new(
        CommittedLeaderId {
            term: 0,
            node_id: 0,
        },
        index,
    );
    let nodes: std::collections::BTreeMap<_, _> = peers
        .0
        .iter()
        .map(|(id, addr)| (*id, openraft::BasicNode { addr: addr.clone() }))
        .collect();
    let voters = peers.0.keys().copied().collect();
    SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(
            Some(log_id),
            Membership::new(vec![voters], nodes)
                .expect("the voters are the keys of the nodes, so each has an address"),
        ),
    }
}

/// `restored-` and a digest of the backup's state and the new members: the
/// same on every host that restores the same file for the same `--peers`,
/// and never one of the `members-...` ids a cluster gets by default.
fn derived_cluster_id(backup: &StateChecksum, peers: &Peers) -> String {
    let mut seed = backup.digest.to_be_bytes().to_vec();
    seed.extend_from_slice(&backup.applied_index.to_be_bytes());
    seed.extend_from_slice(peers.to_string().as_bytes());
    format!("restored-{:016x}", fnv1a(&seed))
}

/// Where the folder is built before it is renamed to `replica-N`.
fn staging_dir(args: &RestoreArgs) -> PathBuf {
    args.data_dir
        .join(format!(".replica-{}.restoring", args.replica_id))
}

/// Builds the replica folder in `staging` and returns the CHECKSUM its
/// state reads back with.
fn build(
    args: &RestoreArgs,
    staging: &Path,
    cluster_id: &str,
    meta: &SnapshotMeta,
) -> Result<StateChecksum, String> {
    if staging.exists() {
        // Left by a restore that was interrupted: it never became a replica.
        fs::remove_dir_all(staging)
            .map_err(|e| format!("cannot remove {}: {e}", staging.display()))?;
    }
    fs::create_dir_all(staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let identity = Identity {
        layout: LAYOUT_VERSION,
        replica_id: args.replica_id,
        cluster_id: cluster_id.to_string(),
    };
    let db = store::open(staging, &identity).map_err(|e| e.to_string())?;
    let snapshot_path = copy_as_snapshot(&args.from, &db.snapshot_dir, meta)
        .map_err(|e| format!("copying the backup: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let restored = runtime.block_on(async {
        let (mut machine, reader) = StateMachine::open(db.clone()).map_err(|e| e.to_string())?;
        let file = tokio::fs::File::open(&snapshot_path)
            .await
            .map_err(|e| e.to_string())?;
        machine
            .install_snapshot(meta, SnapshotFile::finished(snapshot_path, file))
            .await
            .map_err(|e| format!("installing the backup: {e}"))?;
        reader.checksum().await
    })?;
    db.db
        .persist(PersistMode::SyncAll)
        .map_err(|e| store::describe_fjall_error(&e))?;
    // Every handle on the database goes before the folder is renamed: the
    // last one closes it, and fjall's threads stop.
    drop(runtime);
    drop(db);
    Ok(restored)
}

/// Writes the backup's records under `meta` as a snapshot file in `dir`
/// (re-checking them as they are read), and returns its path.
fn copy_as_snapshot(from: &Path, dir: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
    let (mut reader, _) = SnapshotReader::open(File::open(from)?)?;
    let mut writer = SnapshotWriter::create(dir, meta)?;
    let copied = (|| -> io::Result<()> {
        while let Some((key, value)) = reader.next_record()? {
            writer.add(&key, &value)?;
        }
        Ok(())
    })();
    match copied {
        Ok(()) => writer.finish().map(|(path, _)| path),
        Err(e) => {
            writer.abandon();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_cluster_starts_at_the_backups_index_under_a_first_leader_id() {
        let peers: Peers = "1=h:1,2=h:2,3=h:3".parse().unwrap();
        let meta = new_cluster_meta(4242, &peers);
        let id = meta.last_log_id.unwrap();
        assert_eq!(id.index, 4242);
        assert_eq!(id.leader_id.term, 0);
        assert_eq!(meta.last_membership.log_id(), &Some(id));
        let voters: Vec<u64> = meta.last_membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2, 3]);
    }

    #[test]
    fn the_derived_cluster_id_follows_the_backup_and_the_members() {
        let sum = |digest| StateChecksum {
            applied_index: 7,
            keys: 1,
            digest,
        };
        let peers: Peers = "1=h:1,2=h:2,3=h:3".parse().unwrap();
        let other: Peers = "1=h:1,2=h:2,3=h:4".parse().unwrap();
        let id = derived_cluster_id(&sum(1), &peers);
        assert!(id.starts_with("restored-"), "{id}");
        assert_eq!(id, derived_cluster_id(&sum(1), &peers));
        assert_ne!(id, derived_cluster_id(&sum(2), &peers));
        assert_ne!(id, derived_cluster_id(&sum(1), &other));
    }
}
