//! The newest log entries, kept in memory as well as in `raft_log`.
//!
//! An entry is read back soon after it is appended, twice on the leader:
//! replication sends it to each follower right after `append` returns, and
//! apply reads it a round later, once it is committed (a follower applies
//! what it appended too). Read from fjall, each of those reads searched the
//! memtable and parsed the entry's JSON again. This window answers them from
//! the entries as they were appended.
//!
//! What keeps it right: the window is always a run of consecutive entries
//! that ends at the log's last entry, and each one is the entry the log holds
//! at its index. Every change to the log's tail changes the window in the same
//! call of the log store: `append` adds to its end (or starts it afresh when
//! the entries do not follow on from it), `truncate_after` cuts its end before
//! the entries leave the disk, `purge` cuts its start. A read that the window
//! cannot answer whole goes to disk, as before. The window is bounded in
//! entries and in bytes; the oldest entries leave it first.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::types::{proposal_bytes, Entry};

/// At most this many entries, and this many bytes of proposals, are kept:
/// enough for a follower a few rounds behind and for the apply that follows
/// replication, small beside a replica's memory budget.
const MAX_ENTRIES: usize = 4096;
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Shared by the log store and every reader cloned from it.
#[derive(Clone, Default)]
pub struct RecentEntries {
    window: Arc<Mutex<Window>>,
}

#[derive(Default)]
struct Window {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Window {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|entry| entry.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= proposal_bytes(&entry);
        }
    }
}

impl RecentEntries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries the log has just written (after their batch was committed to
    /// fjall, so the disk never holds less than the window). They are moved
    /// in, not copied: the log store has no further use for them.
    pub fn appended(&self, entries: Vec<Entry>) {
        let mut window = self.lock();
        for entry in entries {
            let follows_on = window
                .last_index()
                .is_none_or(|last| last + 1 == entry.log_id.index);
            if !follows_on {
                window.clear();
            }
            let bytes = proposal_bytes(&entry);
            if bytes > MAX_BYTES {
                // Too large to keep: the window must still end at the log's
                // last entry, so it starts again after this one.
                window.clear();
                continue;
            }
            window.entries.push_back(entry);
            window.bytes += bytes;
            while window.entries.len() > MAX_ENTRIES || window.bytes > MAX_BYTES {
                window.pop_front();
            }
        }
    }

    /// The log loses every entry from `first_removed` on.
    pub fn truncated_from(&self, first_removed: u64) {
        let mut window = self.lock();
        while window
            .last_index()
            .is_some_and(|last| last >= first_removed)
        {
            if let Some(entry) = window.entries.pop_back() {
                window.bytes -= proposal_bytes(&entry);
            }
        }
    }

    /// The log loses every entry up to and including `last_removed`.
    pub fn purged_through(&self, last_removed: u64) {
        let mut window = self.lock();
        while window
            .first_index()
            .is_some_and(|first| first <= last_removed)
        {
            window.pop_front();
        }
    }

    /// The entries from `start` up to `end`, stopping after the one that
    /// reaches `byte_budget` (as `LogStore::read_entries` does), if the
    /// window holds all of them; `None` sends the read to disk.
    pub fn read(&self, start: u64, end: Bound<u64>, byte_budget: usize) -> Option<Vec<Entry>> {
        let end_excluded = match end {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end_excluded {
            return Some(Vec::new());
        }
        let window = self.lock();
        let (first, last) = (window.first_index()?, window.last_index()?);
        // Only ranges inside the window are answered here; an open end
        // relies on the window ending at the log's last entry.
        let inside = start >= first
            && start <= last
            && (end == Bound::Unbounded || end_excluded <= last + 1);
        if !inside {
            return None;
        }
        let skip = (start - first) as usize;
        let mut entries = Vec::new();
        let mut bytes = 0;
        for entry in window.entries.iter().skip(skip) {
            if entry.log_id.index >= end_excluded {
                break;
            }
            entries.push(entry.clone());
            bytes += proposal_bytes(entry);
            if bytes >= byte_budget {
                break;
            }
        }
        Some(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Op, Proposal, Queued};
    use crate::types::{CommittedLeaderId, LogId};

    fn entry(index: u64, value_len: usize) -> Entry {
        let op = Op::Run(Queued {
            db: 0,
            args: vec![
                b"SET".to_vec().into(),
                b"k".to_vec().into(),
                vec![b'v'; value_len].into(),
            ],
        });
        Entry {
            log_id: LogId::new(
                CommittedLeaderId {
                    term: 1,
                    node_id: 1,
                },
                index,
            ),
            payload: openraft::EntryPayload::Normal(Proposal::new(
                &[op],
                crate::command::UNVERSIONED_MACHINE,
            )),
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn reads_what_it_holds_and_sends_the_rest_to_disk() {
        let recent = RecentEntries::default();
        recent.appended((5..=9).map(|i| entry(i, 10)).collect::<Vec<_>>());
        assert_eq!(
            indexes(recent.read(6, Bound::Excluded(8), usize::MAX)),
            Some(vec![6, 7])
        );
        assert_eq!(
            indexes(recent.read(7, Bound::Unbounded, usize::MAX)),
            Some(vec![7, 8, 9])
        );
        assert_eq!(
            indexes(recent.read(9, Bound::Included(9), usize::MAX)),
            Some(vec![9])
        );
        assert_eq!(
            indexes(recent.read(9, Bound::Excluded(9), usize::MAX)),
            Some(vec![])
        );
        // Ranges reaching outside the window are read from disk.
        assert_eq!(
            indexes(recent.read(9, Bound::Included(20), usize::MAX)),
            None
        );
        assert_eq!(indexes(recent.read(10, Bound::Unbounded, usize::MAX)), None);
        assert_eq!(indexes(recent.read(4, Bound::Unbounded, usize::MAX)), None);
        // The byte budget stops after the entry that reaches it.
        assert_eq!(indexes(recent.read(5, Bound::Unbounded, 1)), Some(vec![5]));
    }

    #[test]
    fn truncation_and_purge_cut_the_window() {
        let recent = RecentEntries::default();
        recent.appended((1..=6).map(|i| entry(i, 10)).collect::<Vec<_>>());
        recent.truncated_from(5);
        assert_eq!(
            indexes(recent.read(1, Bound::Unbounded, usize::MAX)),
            Some(vec![1, 2, 3, 4])
        );
        // A new leader's entries at the truncated indexes replace them.
        recent.appended(vec![entry(5, 20)]);
        recent.purged_through(2);
        assert_eq!(
            indexes(recent.read(3, Bound::Unbounded, usize::MAX)),
            Some(vec![3, 4, 5])
        );
        assert_eq!(indexes(recent.read(2, Bound::Unbounded, usize::MAX)), None);
        recent.purged_through(9);
        assert_eq!(indexes(recent.read(6, Bound::Unbounded, usize::MAX)), None);
    }

    #[test]
    fn entries_that_do_not_follow_on_start_the_window_again() {
        let recent = RecentEntries::default();
        recent.appended((1..=3).map(|i| entry(i, 10)).collect::<Vec<_>>());
        // After a snapshot install, the log goes on from far ahead.
        recent.appended(vec![entry(100, 10)]);
        assert_eq!(indexes(recent.read(3, Bound::Unbounded, usize::MAX)), None);
        assert_eq!(
            indexes(recent.read(100, Bound::Unbounded, usize::MAX)),
            Some(vec![100])
        );
    }

    #[test]
    fn stays_within_its_bounds() {
        let recent = RecentEntries::default();
        let many: Vec<Entry> = (1..=(MAX_ENTRIES as u64 + 10))
            .map(|i| entry(i, 1))
            .collect();
        recent.appended(many);
        assert_eq!(indexes(recent.read(10, Bound::Unbounded, usize::MAX)), None);
        assert_eq!(
            recent
                .read(11, Bound::Unbounded, usize::MAX)
                .map(|e| e.len()),
            Some(MAX_ENTRIES)
        );
        // An entry larger than the window empties it: reads of it go to disk.
        let large = MAX_ENTRIES as u64 + 11;
        recent.appended(vec![entry(large, MAX_BYTES + 1)]);
        assert_eq!(
            indexes(recent.read(large, Bound::Unbounded, usize::MAX)),
            None
        );
        recent.appended(vec![entry(large + 1, 1)]);
        assert_eq!(
            indexes(recent.read(large, Bound::Unbounded, usize::MAX)),
            None
        );
        assert_eq!(
            indexes(recent.read(large + 1, Bound::Unbounded, usize::MAX)),
            Some(vec![large + 1])
        );
    }
}
