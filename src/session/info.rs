//! What the front ends have served, and the text of `INFO`: the counters
//! tools read (`redis-cli --stat`, monitoring), kept for the whole replica
//! and shared by every session, the prompt's included.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::frame::Frame;
use crate::kv::{Kv, KvError, Role, Status};
use crate::machine::REDIS_VERSION;
use crate::metrics;

/// What the front ends have served, for INFO and `redis-cli --stat`, and
/// each command's latency for `/metrics`.
pub struct Stats {
    pub connected: AtomicU64,
    pub connections_received: AtomicU64,
    commands_processed: AtomicU64,
    /// The last client id given (the port's connections and the prompt).
    last_client_id: AtomicU64,
    /// Seconds since the epoch of the last SAVE or BGSAVE answered here.
    last_save: AtomicU64,
    /// Calls and microseconds per command name (lower case).
    per_command: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Commands processed, sampled every [`OPS_SAMPLE_EVERY`], newest last.
    samples: Mutex<VecDeque<u64>>,
    /// Request latency by command, for `/metrics`.
    latency: metrics::CommandTable,
}

const OPS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const OPS_SAMPLES: usize = 16;

impl Stats {
    /// Counting from zero; samples the command rate from now on.
    pub fn start() -> Arc<Stats> {
        let stats = Arc::new(Stats::new());
        tokio::spawn(stats.clone().sample_forever());
        stats
    }

    fn new() -> Stats {
        Stats {
            connected: AtomicU64::default(),
            connections_received: AtomicU64::default(),
            commands_processed: AtomicU64::default(),
            last_client_id: AtomicU64::default(),
            last_save: AtomicU64::default(),
            per_command: Mutex::default(),
            samples: Mutex::default(),
            latency: metrics::CommandTable::new(super::commands::COMMAND_NAMES),
        }
    }

    /// A new client's id, as CLIENT ID answers it.
    pub fn next_client_id(&self) -> u64 {
        self.last_client_id.fetch_add(1, Relaxed) + 1
    }

    /// CONFIG RESETSTAT: the counters INFO shows start again from zero, as
    /// Redis's do (clients connected now stay counted, and `/metrics`
    /// counts on: Prometheus counters only go up).
    pub fn reset(&self) {
        self.connections_received.store(0, Relaxed);
        self.commands_processed.store(0, Relaxed);
        self.per_command
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// SAVE or BGSAVE was answered at `seconds` since the epoch.
    pub fn saved_at(&self, seconds: u64) {
        self.last_save.fetch_max(seconds, Relaxed);
    }

    /// The last SAVE or BGSAVE answered here (0: none).
    pub fn last_save(&self) -> u64 {
        self.last_save.load(Relaxed)
    }

    pub fn count_command(&self, name: &[u8], took: Duration) {
        self.count_commands([(name, took)]);
    }

    /// Counts a pipeline's commands under one lock; a name already in the
    /// table is found without allocating.
    pub fn count_commands<'a>(&self, commands: impl IntoIterator<Item = (&'a [u8], Duration)>) {
        let mut table = self.per_command.lock().unwrap_or_else(|e| e.into_inner());
        let mut lower = [0u8; 32];
        for (name, took) in commands {
            self.commands_processed.fetch_add(1, Relaxed);
            self.latency.observe(name, took);
            let short = name.len() <= lower.len();
            let name = if short {
                lower[..name.len()].copy_from_slice(name);
                lower[..name.len()].make_ascii_lowercase();
                String::from_utf8_lossy(&lower[..name.len()])
            } else {
                String::from_utf8_lossy(name).to_ascii_lowercase().into()
            };
            let known = table.contains_key(name.as_ref());
            // A client sending many unknown names must not grow the table without end.
            if !known && table.len() >= 512 {
                continue;
            }
            let entry = match table.get_mut(name.as_ref()) {
                Some(entry) => entry,
                None => table.entry(name.into_owned()).or_default(),
            };
            entry.0 += 1;
            entry.1 += took.as_micros() as u64;
        }
    }

    /// Commands per second over the last samples, as Redis reports it.
    fn ops_per_sec(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (samples.front(), samples.back()) {
            (Some(first), Some(last)) if samples.len() > 1 => {
                let span = OPS_SAMPLE_EVERY.as_secs_f64() * (samples.len() - 1) as f64;
                ((last - first) as f64 / span) as u64
            }
            _ => 0,
        }
    }

    async fn sample_forever(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(OPS_SAMPLE_EVERY);
        loop {
            ticks.tick().await;
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            if samples.len() == OPS_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(self.commands_processed.load(Relaxed));
        }
    }
}

/// `INFO`, in the sections tools read.
pub async fn info(kv: &Kv, stats: &Stats, section: Option<&str>) -> Frame {
    let keyspace = match kv.state().keyspace_counts().await {
        Ok(counts) => counts,
        Err(e) => return Frame::error(format!("ERR {}", KvError::Storage(e))),
    };
    let saved = match kv.state().clock().await {
        Ok(millis) => last_save(millis, stats.last_save()),
        Err(e) => return Frame::error(format!("ERR {}", KvError::Storage(e))),
    };
    let state = State {
        status: kv.status(),
        keyspace,
        last_save: saved,
    };
    Frame::Verbatim(info_text(kv, stats, &state, section))
}

/// What INFO reports that is read from the replica's state.
struct State {
    status: Status,
    keyspace: Vec<(u8, u64, u64)>,
    /// LASTSAVE's answer.
    last_save: i64,
}

/// LASTSAVE, in seconds since the epoch: when everything acknowledged was
/// last known to be on disk. That is true of the newest entry applied here
/// (the leader's time in it: it was fsynced at a majority before it was
/// applied), and of the moment a SAVE or BGSAVE was answered here; the later
/// of the two. So LASTSAVE moves on after a write, and after a BGSAVE, which
/// clients that wait for it to change rely on.
pub fn last_save(machine_clock_millis: u64, last_save_here: u64) -> i64 {
    (machine_clock_millis / 1000).max(last_save_here) as i64
}

fn section_wanted(asked: Option<&str>, name: &str) -> bool {
    match asked {
        None | Some("all") | Some("default") | Some("everything") => true,
        Some(asked) => asked.eq_ignore_ascii_case(name),
    }
}

/// This process's resident memory in bytes (0 where /proc is not there).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The text of `INFO`: sections of `name:value` lines, as Redis writes them.
fn info_text(kv: &Kv, stats: &Stats, state: &State, section: Option<&str>) -> String {
    let State {
        status,
        keyspace,
        last_save,
    } = state;
    let server = [
        (
            "example_ondisk_version",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("redis_version", REDIS_VERSION.to_string()),
        ("redis_mode", "standalone".to_string()),
        ("process_id", std::process::id().to_string()),
        ("replica_id", kv.replica_id().to_string()),
        ("cluster_id", kv.cluster_id().to_string()),
    ];
    let memory = resident_bytes();
    let (scripts, script_bytes) = kv.scripts.size();
    let memory = [
        ("used_memory", memory.to_string()),
        ("used_memory_rss", memory.to_string()),
        ("maxmemory", "0".to_string()),
        // No Lua state lives between scripts: each run has its own.
        ("used_memory_lua", "0".to_string()),
        ("used_memory_scripts", script_bytes.to_string()),
        ("number_of_cached_scripts", scripts.to_string()),
    ];
    let clients = [
        (
            "connected_clients",
            stats.connected.load(Relaxed).to_string(),
        ),
        ("blocked_clients", "0".to_string()),
    ];
    let counters = [
        (
            "total_connections_received",
            stats.connections_received.load(Relaxed).to_string(),
        ),
        (
            "total_commands_processed",
            stats.commands_processed.load(Relaxed).to_string(),
        ),
        ("instantaneous_ops_per_sec", stats.ops_per_sec().to_string()),
    ];
    // The fields of `status`, under the names INFO has always used for the
    // two indexes (scripts read them), with the replication progress given
    // one line per member below instead of in one field.
    let mut raft: Vec<(String, String)> = status
        .fields()
        .into_iter()
        .filter(|(name, _)| *name != "replication")
        .map(|(name, value)| {
            let name = match name {
                "committed" => "commit_index",
                "applied" => "applied_index",
                other => other,
            };
            (name.to_string(), value)
        })
        .collect();
    // One line per member, as Redis lists its replicas (`slave0:ip=...`);
    // at the leader with how far each member's log matches, and its lag.
    for member in &status.members {
        let mut line = format!(
            "role={},addr={}",
            if member.voter { "voter" } else { "learner" },
            member.addr
        );
        if status.role == Role::Leader {
            match member.matched {
                Some(matched) => line.push_str(&format!(
                    ",match_index={matched},lag={}",
                    status.last_log_index.saturating_sub(matched)
                )),
                None => line.push_str(",match_index=none"),
            }
        }
        raft.push((format!("member_{}", member.id), line));
    }
    let keyspace: Vec<(String, String)> = keyspace
        .iter()
        .map(|(db, keys, expires)| {
            (
                format!("db{db}"),
                format!("keys={keys},expires={expires},avg_ttl=0"),
            )
        })
        .collect();
    let commandstats: Vec<(String, String)> = stats
        .per_command
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, (calls, usec))| {
            (
                format!("cmdstat_{name}"),
                format!(
                    "calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls=0",
                    *usec as f64 / (*calls).max(1) as f64
                ),
            )
        })
        .collect();
    // Every write is on disk at a majority when acknowledged: nothing is
    // ever unsaved or being saved (see LASTSAVE).
    let persistence = [
        ("loading", "0".to_string()),
        ("rdb_changes_since_last_save", "0".to_string()),
        ("rdb_bgsave_in_progress", "0".to_string()),
        ("rdb_last_save_time", last_save.to_string()),
        ("rdb_last_bgsave_status", "ok".to_string()),
        ("aof_enabled", "1".to_string()),
        ("aof_rewrite_in_progress", "0".to_string()),
        ("aof_last_write_status", "ok".to_string()),
    ];
    let mut sections = vec![
        ("Server", named(&server)),
        ("Clients", named(&clients)),
        ("Memory", named(&memory)),
        ("Persistence", named(&persistence)),
        ("Stats", named(&counters)),
        ("Raft", raft),
        ("Keyspace", keyspace),
    ];
    // Redis leaves Commandstats out of plain INFO too.
    if matches!(section, Some("commandstats" | "all" | "everything")) {
        sections.push(("Commandstats", commandstats));
    }
    let mut text = String::new();
    for (name, fields) in sections {
        if !section_wanted(section, name) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str(&format!("# {name}\r\n"));
        for (field, value) in &fields {
            text.push_str(&format!("{field}:{value}\r\n"));
        }
    }
    text
}

fn named(fields: &[(&str, String)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(field, value)| (field.to_string(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lastsave_is_the_later_of_the_newest_entry_and_the_last_save_here() {
        assert_eq!(last_save(1_700_000_123_999, 0), 1_700_000_123);
        assert_eq!(last_save(1_700_000_123_999, 1_700_000_200), 1_700_000_200);
        assert_eq!(last_save(0, 0), 0);
    }
}
