//! The machine version as this replica knows it: the cluster's (the version
//! its applied state records), the highest this build can apply, and whether
//! applying is held back because the log or the state needs a newer one.
//!
//! Ra's versioned machines, kept here: a replica that meets an entry it
//! cannot apply must neither guess nor stop the cluster. It keeps taking the
//! log and voting (openraft goes on as usual) but applies nothing past that
//! entry, so its state stays a true prefix of the log; restarted with a build
//! that can apply the version, it applies everything outstanding.
//!
//! The state machine sets these; the key-value service, the leader's upgrade
//! task, the peer service and the metrics read them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Where and why applying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBack {
    /// The first log index not applied.
    pub at: u64,
    /// The machine version that entry (or the state before it) needs.
    pub needs: u32,
    /// The highest this build applies.
    pub can_apply: u32,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this replica holds back applying at log index {}: it needs machine version {}, \
             and this build applies versions up to {}; upgrade it (meanwhile it keeps the log \
             and votes), or read from another replica",
            self.at, self.needs, self.can_apply
        )
    }
}

/// Shared between the state machine and its readers. Cheap to clone.
#[derive(Clone)]
pub struct MachineVersions(Arc<Inner>);

struct Inner {
    can_apply: u32,
    current: AtomicU32,
    /// The applied index as the state machine holds it: while held back,
    /// openraft believes more was applied than was (see `state_machine.rs`).
    applied: AtomicU64,
    held_back: watch::Sender<Option<HeldBack>>,
}

impl MachineVersions {
    pub fn new(can_apply: u32, current: u32, applied: u64) -> Self {
        MachineVersions(Arc::new(Inner {
            can_apply,
            current: AtomicU32::new(current),
            applied: AtomicU64::new(applied),
            held_back: watch::Sender::new(None),
        }))
    }

    /// The highest machine version this replica can apply.
    pub fn can_apply(&self) -> u32 {
        self.0.can_apply
    }

    /// The cluster's machine version as far as this replica has applied.
    /// Versions only go up, so once this says `v`, the move to `v` is
    /// committed.
    pub fn current(&self) -> u32 {
        self.0.current.load(Ordering::Acquire)
    }

    /// The last index whose effects this replica's state holds.
    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::Acquire)
    }

    /// Why applying is held back, if it is.
    pub fn held_back(&self) -> Option<HeldBack> {
        *self.0.held_back.borrow()
    }

    /// Resolves when applying is held back (at once if it is already).
    pub async fn wait_held_back(&self) -> HeldBack {
        let mut changes = self.0.held_back.subscribe();
        loop {
            if let Some(held) = *changes.borrow_and_update() {
                return held;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub(super) fn set_current(&self, version: u32) {
        self.0.current.store(version, Ordering::Release);
    }

    pub(super) fn set_applied(&self, index: u64) {
        self.0.applied.store(index, Ordering::Release);
    }

    pub(super) fn hold_back(&self, held: HeldBack) {
        self.0.held_back.send_replace(Some(held));
    }

    /// After a snapshot install: the new state decides afresh.
    pub(super) fn clear_hold(&self) {
        self.0.held_back.send_replace(None);
    }
}
