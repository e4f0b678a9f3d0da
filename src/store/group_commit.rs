//! Group commit: one fsync for every log append that is waiting for one.
//!
//! openraft 0.10 separates two moments of an append (`RaftLogStorage::append`):
//! the entries must be *readable* when `append` returns, and *durable* when
//! its `IOFlushed` callback is completed. `log.rs` writes the entries into
//! the journal without syncing and returns at once; the callback comes here.
//! One thread, the flusher, takes every callback waiting, syncs the journal
//! once, and completes them all.
//!
//! Why this is faster: the leader sends entries to the followers as soon as
//! `append` returns, so its own fsync runs while they write theirs (the
//! parallel disk write of the Raft thesis, section 10.2.1), instead of before.
//! And appends that arrive during an fsync share the next one.
//!
//! Why it is safe (durability rule 2 in `store/mod.rs`):
//! - A callback reaches the flusher only after its batch is in the journal, and
//!   the flusher syncs only after taking the callback, so the sync covers it.
//!   fjall keeps one journal writer; `Database::persist` flushes its buffer and
//!   fdatasyncs the file. A journal that was rotated away in between was
//!   fsynced when it was sealed (fjall's `Writer::rotate`).
//! - A callback is completed with an error if the sync fails, never with Ok.
//! - A replica that wins an election has fsynced its vote first (rule 1), and
//!   that sync covers every append before it: what openraft counts as this
//!   leader's flushed log is on disk (openraft issue #2118 was about exactly
//!   that moment; alpha.37 also waits for the flush itself).
//! - `tests/group_commit.rs` starts replicas whose flusher sleeps before each
//!   sync and checks that no write is acknowledged before a quorum's sleep
//!   is over: a callback completed early makes it fail.

use std::sync::mpsc;
use std::time::Duration;

use fjall::{Database, PersistMode};
use openraft::storage::IOFlushed;

use crate::metrics::{self, FsyncSite};
use crate::types::TypeConfig;

/// Hands callbacks to the flusher thread. Cheap to clone; the thread ends
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Flusher {
    waiting: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl Flusher {
    pub fn start(db: Database) -> std::io::Result<Flusher> {
        let (waiting, queue) = mpsc::channel();
        let slow_sync = crate::faults::slow_log_sync();
        std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || flush_until_closed(db, queue, slow_sync))?;
        Ok(Flusher { waiting })
    }

    /// Completes `callback` once everything written to the journal before
    /// this call is durable.
    pub fn after_next_sync(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.waiting.send(callback) {
            // Only when the thread has died (it never returns early).
            callback.io_completed(Err(std::io::Error::other("the log flusher has stopped")));
        }
    }
}

fn flush_until_closed(
    db: Database,
    queue: mpsc::Receiver<IOFlushed<TypeConfig>>,
    slow_sync: Option<Duration>,
) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        if let Some(pause) = slow_sync {
            std::thread::sleep(pause);
        }
        let synced =
            metrics::timed_fsync(FsyncSite::LogAppend, || db.persist(PersistMode::SyncData));
        metrics::log_sync_group(group.len());
        match synced {
            Ok(()) => group.into_iter().for_each(|c| c.io_completed(Ok(()))),
            Err(e) => {
                // fjall has poisoned the database: every later write fails too.
                let error = super::fjall_io_error(e);
                tracing::error!("syncing the log failed: {error}");
                for callback in group {
                    let why = format!("syncing the log failed: {error}");
                    callback.io_completed(Err(std::io::Error::new(error.kind(), why)));
                }
            }
        }
    }
}
