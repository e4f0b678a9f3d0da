//! Logs go to `replica.log` in the replica's folder, never over the prompt.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::cli::LogLevel;

/// Starts logging to `replica_dir/replica.log`. Keep the guard alive: dropping
/// it flushes what is buffered.
pub fn init(replica_dir: &Path, level: LogLevel) -> Result<WorkerGuard, String> {
    std::fs::create_dir_all(replica_dir)
        .map_err(|e| format!("cannot create {}: {e}", replica_dir.display()))?;
    let path = replica_dir.join("replica.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(EnvFilter::new(level.as_filter()))
        .init();

    // A panic is a bug; report it in one line and keep the details in the log.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!("panic: {info}");
        eprintln!("error: internal failure (a bug; details in replica.log): {info}");
    }));
    Ok(guard)
}

/// Tells the person running the replica about something it did on its own
/// that they should know of (a file set aside, a snapshot refused): one
/// `note:` line on stderr, and the same in the log.
pub fn note(text: &str) {
    tracing::warn!("{text}");
    eprintln!("note: {text}");
}
