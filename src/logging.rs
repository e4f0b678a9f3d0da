//! Logs go to `replica.log` in the replica's folder, never over the prompt.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// [`note`] for something that repeats while its cause lasts (a peer refused
/// at every retry): said at once, then at most once per `every` for the same
/// text, with how many times it happened meanwhile. Each repeat in between
/// still goes to the log, at debug level.
pub fn note_now_and_then(text: &str, every: Duration) {
    let mut said = SAID.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    if said.len() > REMEMBERED {
        // Forged hellos can name any replica id: keep the table small.
        said.retain(|_, (at, _)| now.duration_since(*at) < every);
    }
    match said.get_mut(text) {
        Some((at, repeats)) if now.duration_since(*at) < every => {
            *repeats += 1;
            tracing::debug!("{text}");
        }
        Some((at, repeats)) => {
            let again = match std::mem::take(repeats) {
                0 => String::new(),
                n => format!(
                    " (and {n} times more in the {} s before)",
                    now.duration_since(*at).as_secs()
                ),
            };
            *at = now;
            note(&format!("{text}{again}"));
        }
        None => {
            said.insert(text.to_string(), (now, 0));
            note(text);
        }
    }
}

/// The notes said lately: when last, and how often since.
static SAID: Mutex<BTreeMap<String, (Instant, u64)>> = Mutex::new(BTreeMap::new());
const REMEMBERED: usize = 256;
