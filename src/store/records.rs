//! The store's bookkeeping records, in one place: the vote and the purge
//! watermark (`raft_meta`), and the applied log id, the
//! membership and the name of the data keyspace (`sm_meta`). Each is a small
//! JSON value under a fixed key.
//!
//! The log (`log.rs`) and the state machine (`state_machine.rs`) both read
//! records the other writes; they meet here rather than in each other. The
//! rule that ties them is watched here too: **the log is never purged past
//! what the state machine holds** ([`note_purge_past_applied`]), so that after
//! any crash the entries after the applied id are still in the log
//! (durability rule 4 in `store/mod.rs`); openraft keeps it.

use std::io;

use fjall::{Keyspace, Readable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{describe_fjall_error, Db};
use crate::types::LogId;

/// `raft_meta`: the vote (durability rule 1).
pub(super) const VOTE: &str = "vote";
// `raft_meta` may also hold `committed`, the commit hint that earlier builds
// wrote and still read (`log.rs`, `save_committed`): not to be reused for
// anything else.
/// `raft_meta`: the last log id purged; entries at or below it count as gone.
pub(super) const PURGED: &str = "purged";
/// `sm_meta`: the last log id whose effects the data keyspace holds.
pub(super) const APPLIED: &str = "applied";
/// `sm_meta`: the membership as of the applied id.
pub(super) const MEMBERSHIP: &str = "membership";
/// `sm_meta`: which `data-<gen>` keyspace holds the user data now.
pub(super) const DATA_KEYSPACE: &str = "data_keyspace";

/// A record's value as stored.
pub(super) fn encode(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("bookkeeping records are plain data")
}

/// The record `key` of `keyspace` as `view` (a snapshot of the database)
/// sees it; `None` if it was never written.
pub(super) fn read<T: DeserializeOwned>(
    view: &impl Readable,
    keyspace: &Keyspace,
    key: &str,
) -> io::Result<Option<T>> {
    let stored = view
        .get(keyspace, key)
        .map_err(|e| io::Error::other(describe_fjall_error(&e)))?;
    decode(key, stored.as_deref())
}

/// The record `key` of `keyspace` as the database holds it now.
pub(super) fn read_latest<T: DeserializeOwned>(
    keyspace: &Keyspace,
    key: &str,
) -> io::Result<Option<T>> {
    let stored = keyspace
        .get(key)
        .map_err(|e| io::Error::other(describe_fjall_error(&e)))?;
    decode(key, stored.as_deref())
}

fn decode<T: DeserializeOwned>(key: &str, stored: Option<&[u8]>) -> io::Result<Option<T>> {
    match stored {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bookkeeping record '{key}' is unreadable: {e}"),
            )
        }),
    }
}

/// The applied log id recorded in `view`.
pub(super) fn applied_in(view: &impl Readable, sm_meta: &Keyspace) -> io::Result<Option<LogId>> {
    Ok(read::<Option<LogId>>(view, sm_meta, APPLIED)?.flatten())
}

/// The applied log id as the database holds it now (not necessarily fsynced,
/// but ahead of any later record in the shared journal).
pub(super) fn applied(store: &Db) -> io::Result<Option<LogId>> {
    applied_in(&store.db.snapshot(), &store.sm_meta)
}

/// The purge watermark as the database holds it now.
pub(super) fn purged(store: &Db) -> io::Result<Option<LogId>> {
    Ok(read_latest::<Option<LogId>>(&store.raft_meta, PURGED)?.flatten())
}

/// Says so in the log if openraft asks to purge up to `wanted`, past the
/// state machine's applied id. Were such a purge to reach the journal and a
/// snapshot install then crash, the restarted replica would have neither the
/// entries nor the state they led to. openraft 0.9 did ask for one while an
/// install still ran, and a cap here held it back; 0.10 runs a purge only
/// once the snapshot it follows is in place (`Command::PurgeLog` waits on
/// `Condition::Snapshot`), and with the cap made to abort instead, the
/// snapshot, chaos, cluster and membership tests never reached it. So the log
/// is purged as asked, which is also openraft's contract (its storage suite,
/// `conformance.rs`, purges logs nothing was applied from).
pub(super) fn note_purge_past_applied(store: &Db, wanted: LogId) -> io::Result<()> {
    let applied = applied(store)?;
    if applied.is_none_or(|applied| applied.index < wanted.index) {
        tracing::warn!("openraft purges the log up to {wanted:?}, past the applied {applied:?}");
    }
    Ok(())
}
