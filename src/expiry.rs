//! Active expiry: the leader removes expired keys through the log.
//!
//! A key past its expiry is already absent to every command (apply and reads
//! judge it by the leader's time, see `machine/mod.rs`). It still takes disk
//! space and counts in DBSIZE until something removes it, and that removal
//! must happen at the same log index on every replica, or their snapshots and
//! checksums would differ. So only the leader looks for expired keys (in the
//! expiry index, oldest first) and proposes their removal as an ordinary entry;
//! apply removes each key only if its expiry, judged by that entry's time, has
//! passed and is still the one the leader saw.

use std::time::Duration;

use crate::command::wall_clock_ms;
use crate::command::Op;
use crate::kv::Kv;

/// How often the leader looks, and how many keys one entry removes at most:
/// a bounded batch keeps each entry small and the write path free for clients.
const LOOK_EVERY: Duration = Duration::from_millis(100);
const KEYS_PER_ENTRY: usize = 200;

/// Runs for the life of the process; does work only while this replica leads.
pub async fn remove_expired_keys(kv: Kv) {
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !kv.leads() {
            continue;
        }
        let due = match kv
            .state()
            .due_expiries(wall_clock_ms(), KEYS_PER_ENTRY)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!("active expiry could not read the expiry index: {e}");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        let count = due.len();
        match kv.write(vec![Op::Reap(due)]).await {
            Ok(_) => tracing::debug!("active expiry: proposed the removal of {count} keys"),
            Err(e) => tracing::debug!("active expiry: {e}"),
        }
    }
}
