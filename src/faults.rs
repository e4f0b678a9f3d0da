//! Fault injection for tests: crash the process at a named point.
//!
//! The crash-safety claims of snapshot install ("old state or new, never a mix")
//! are only worth something if a kill at each step is tested. A test sets
//! `EXAMPLE_ONDISK_CRASH_AT=<point>` when it starts a replica; that replica then
//! aborts (like a SIGKILL: no destructors, no flush) when it reaches the point.
//! Unset, this costs one string comparison per install step.

use std::sync::OnceLock;

/// The environment variable that names the crash point.
pub const CRASH_AT_VAR: &str = "EXAMPLE_ONDISK_CRASH_AT";

/// Aborts the process if the test asked to crash at `point`.
pub fn crash_point(point: &str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(CRASH_AT_VAR).ok());
    if chosen.as_deref() == Some(point) {
        tracing::warn!("crashing at {point} as {CRASH_AT_VAR} asks");
        eprintln!("crashing at {point} as {CRASH_AT_VAR} asks");
        std::process::abort();
    }
}
