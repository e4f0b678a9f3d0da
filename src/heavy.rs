//! Work too long for an async worker: encoding, decoding or applying
//! megabytes at once, or running a script.
//!
//! tokio runs every task of a replica on a few worker threads (one each when
//! three replicas share a two-core machine: `Cli::threads`). A task that
//! parses a frame carrying a 32 MiB value holds its worker for a second or
//! more in a debug build on a loaded machine, and the heartbeats, votes and
//! election timer on that worker wait meanwhile: a follower stalled that way
//! took its leader for dead and started an election, and the large write
//! that stalled it was answered "the leader changed". Such work runs under
//! `block_in_place` instead, which hands the worker's other tasks to another
//! thread while it runs.

/// Work on at least this many bytes leaves its worker; below it, the
/// hand-off costs more than it saves.
const LARGE: usize = 1024 * 1024;

/// Runs `work`, which handles about `bytes` bytes, so that it does not hold
/// up the other tasks of this worker if it is large.
pub fn run<R>(bytes: usize, work: impl FnOnce() -> R) -> R {
    if bytes >= LARGE {
        long(work)
    } else {
        work()
    }
}

/// Runs `work`, which may take long whatever its size (a script, up to its
/// instruction budget), with this worker's other tasks handed to another
/// thread meanwhile. Outside a multi-threaded runtime (a unit test), or
/// already handed off, it just runs.
pub fn long<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let may_hand_off = Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
    if may_hand_off {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
