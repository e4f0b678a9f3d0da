//! Reclaiming flushed keys: the leader sweeps them away through the log.
//!
//! FLUSHDB and FLUSHALL only move a database's flush mark (`machine/record.rs`):
//! the records stay on disk, gone to every command. Removing them must happen
//! at the same log index on every replica, or their snapshots and checksums
//! would differ, so, as with active expiry (`expiry.rs`), only the leader
//! looks for them and proposes their removal: one bounded range of SCAN
//! positions per entry, which apply clears of whatever is stale in it then.

use std::time::Duration;

use crate::command::Op;
use crate::kv::Kv;
use crate::machine::DATABASES;

/// How often the leader looks, and how many stored records one entry's range
/// covers at most: each range costs every replica one apply, so the sweep
/// stays a background task beside client writes.
const LOOK_EVERY: Duration = Duration::from_millis(100);
const RECORDS_PER_ENTRY: usize = 2000;

/// Runs for the life of the process; does work only while this replica leads.
pub async fn sweep_flushed_keys(kv: Kv) {
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Where each database's sweep goes on from. Only a hint: a new leader
    // starts from the beginning, and apply checks every record it removes.
    let mut resume_at = [0u64; DATABASES as usize];
    loop {
        ticks.tick().await;
        if !kv.leads() {
            continue;
        }
        for (db, from) in (0..DATABASES).zip(resume_at.iter_mut()) {
            let range = match kv.state().next_sweep(db, *from, RECORDS_PER_ENTRY).await {
                Ok(Some(range)) => range,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("the sweep could not read database {db}: {e}");
                    continue;
                }
            };
            *from = range.last.checked_add(1).unwrap_or(0);
            if range.stale == 0 {
                continue;
            }
            let sweep = Op::Sweep {
                db,
                first: range.first,
                last: range.last,
            };
            match kv.write(vec![sweep]).await {
                Ok(_) => {
                    tracing::debug!("sweep: proposed {} stale records of db {db}", range.stale)
                }
                Err(e) => tracing::debug!("sweep: {e}"),
            }
        }
    }
}
