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

/// The environment variable that makes this replica propose commands in
/// another format, as a newer release would during a rolling upgrade.
pub const PROPOSE_FORMAT_VAR: &str = "EXAMPLE_ONDISK_PROPOSE_FORMAT";

/// The proposal format a test asked this replica to write, if any.
pub fn proposal_format_override() -> Option<u32> {
    static CHOSEN: OnceLock<Option<u32>> = OnceLock::new();
    *CHOSEN.get_or_init(|| std::env::var(PROPOSE_FORMAT_VAR).ok()?.parse().ok())
}

/// The environment variable that makes this replica's log flusher sleep this
/// many milliseconds before each fsync, as a slow disk would: a test can then
/// tell a write acknowledged after the fsyncs from one acknowledged before.
pub const SLOW_LOG_SYNC_VAR: &str = "EXAMPLE_ONDISK_SLOW_LOG_SYNC_MS";

/// The pause a test asked for before each log fsync, if any.
pub fn slow_log_sync() -> Option<std::time::Duration> {
    let ms = std::env::var(SLOW_LOG_SYNC_VAR).ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// The environment variable that makes this replica able to apply machine
/// versions (proposal formats) only up to the number given, as a replica of
/// an older release would: it reports that version to the leader, and holds
/// back at the first entry above it. For testing rolling upgrades.
pub const MACHINE_VERSION_LIMIT_VAR: &str = "EXAMPLE_ONDISK_MACHINE_VERSION_LIMIT";

/// The machine version a test limited this replica to, if any.
pub fn machine_version_limit() -> Option<u32> {
    static CHOSEN: OnceLock<Option<u32>> = OnceLock::new();
    *CHOSEN.get_or_init(|| std::env::var(MACHINE_VERSION_LIMIT_VAR).ok()?.parse().ok())
}

/// The environment variable that makes this replica speak JSON frames only
/// on the Raft port, as a replica of the release before binary frames did:
/// it offers no other encoding and takes up none a caller offers.
pub const JSON_FRAMES_ONLY_VAR: &str = "EXAMPLE_ONDISK_JSON_FRAMES_ONLY";

/// Whether a test asked this replica to speak JSON frames only.
pub fn json_frames_only() -> bool {
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    *CHOSEN.get_or_init(|| std::env::var_os(JSON_FRAMES_ONLY_VAR).is_some())
}
