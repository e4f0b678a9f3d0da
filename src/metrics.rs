//! What a replica counts and measures, for Prometheus (`/metrics` in `http.rs`).
//!
//! A leaf: any layer records into it (the store its fsyncs, `batching.rs` its
//! batch sizes, the client port its requests), and it imports nothing of
//! theirs. One registry per process, built on first use; the page is
//! OpenMetrics text, encoded by `prometheus-client`.
//!
//! Cost on the request path: counters and gauges are one atomic each; a
//! histogram observation takes `prometheus-client`'s own short lock on that
//! one series. Per-command series are looked up in a table built once
//! ([`CommandTable`]), so a request takes no other lock and allocates nothing.
//!
//! What openraft already knows (role, term, leader, indexes, replication lag)
//! is not pushed here on every change: the HTTP front end hands a
//! [`RaftView`] to [`observe_raft`] just before it encodes the page.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `ondisk_raft_role` | gauge, 1 for the current role | `role` |
//! | `ondisk_raft_term`, `ondisk_raft_leader_id` (0: none known) | gauge | |
//! | `ondisk_raft_commit_index`, `_applied_index`, `_last_log_index` | gauge | |
//! | `ondisk_raft_replication_lag_entries` (at the leader only) | gauge | `follower` |
//! | `ondisk_machine_version` (the cluster's), `_max` (this build's), `ondisk_held_back` (1: applying held back) | gauge | |
//! | `ondisk_snapshots_total`, `ondisk_snapshot_bytes_total` | counter | `event`: built, sent, installed |
//! | `ondisk_fsync_seconds` | histogram | `site` |
//! | `ondisk_write_batch_ops`, `ondisk_write_batch_writers` | histogram | |
//! | `ondisk_log_sync_appends` (appends one log fsync made durable) | histogram | |
//! | `ondisk_client_request_seconds` (its `_count`: requests) | histogram | `command` |
//! | `ondisk_errors_total` | counter | `kind` |
//! | `ondisk_client_connections` | gauge | |

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Where a replica waits for its disk (durability rules in `store/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncSite {
    /// A log append's batch (rule 2): on every write's path.
    LogAppend,
    /// A vote (rule 1).
    Vote,
    /// Conflicting entries removed from the log.
    LogTruncate,
    /// A snapshot file written and synced, with its folder.
    SnapshotFile,
    /// The batch that switches the state to an installed snapshot (rule 5).
    SnapshotInstall,
}

impl FsyncSite {
    fn label(self) -> &'static str {
        match self {
            FsyncSite::LogAppend => "log_append",
            FsyncSite::Vote => "vote",
            FsyncSite::LogTruncate => "log_truncate",
            FsyncSite::SnapshotFile => "snapshot_file",
            FsyncSite::SnapshotInstall => "snapshot_install",
        }
    }

    const ALL: [FsyncSite; 5] = [
        FsyncSite::LogAppend,
        FsyncSite::Vote,
        FsyncSite::LogTruncate,
        FsyncSite::SnapshotFile,
        FsyncSite::SnapshotInstall,
    ];
}

/// What happened to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEvent {
    /// Built from this replica's state.
    Built,
    /// Sent whole to a replica that fell behind (counted by the sender).
    Sent,
    /// Received from a leader and installed.
    Installed,
}

impl SnapshotEvent {
    fn label(self) -> &'static str {
        match self {
            SnapshotEvent::Built => "built",
            SnapshotEvent::Sent => "sent",
            SnapshotEvent::Installed => "installed",
        }
    }

    const ALL: [SnapshotEvent; 3] = [
        SnapshotEvent::Built,
        SnapshotEvent::Sent,
        SnapshotEvent::Installed,
    ];
}

/// Why a request was not served as asked. A fixed set, so no client can
/// make up new label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No leader within the timeout.
    NoLeader,
    /// A write timed out or lost its leader mid-flight: it may or may not be applied.
    OutcomeUnknown,
    /// The leader changed while a write was in flight.
    LeaderChanged,
    /// This replica has stopped (openraft's fatal error).
    Stopped,
    /// Reading the local state failed.
    Storage,
    /// A request too large to forward.
    TooLarge,
    /// A membership change was refused.
    Membership,
    /// The command's own error reply: a syntax error, a wrong type, a script error.
    Command,
    /// A request the port could not read (the connection is then closed).
    Protocol,
    /// A command before authenticating, or a wrong password.
    Auth,
    /// A connection refused at the client limit.
    TooManyClients,
    /// A command that needs a machine version the cluster does not run, or a
    /// read at a replica that holds back applying (a rolling upgrade).
    MachineVersion,
}

impl ErrorKind {
    fn label(self) -> &'static str {
        match self {
            ErrorKind::NoLeader => "no_leader",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::LeaderChanged => "leader_changed",
            ErrorKind::Stopped => "stopped",
            ErrorKind::Storage => "storage",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Membership => "membership",
            ErrorKind::Command => "command",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Auth => "auth",
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::MachineVersion => "machine_version",
        }
    }

    const ALL: [ErrorKind; 12] = [
        ErrorKind::NoLeader,
        ErrorKind::OutcomeUnknown,
        ErrorKind::LeaderChanged,
        ErrorKind::Stopped,
        ErrorKind::Storage,
        ErrorKind::TooLarge,
        ErrorKind::Membership,
        ErrorKind::Command,
        ErrorKind::Protocol,
        ErrorKind::Auth,
        ErrorKind::TooManyClients,
        ErrorKind::MachineVersion,
    ];
}

/// The roles `ondisk_raft_role` has a series for (`status` names the same).
pub const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

/// The label every command that is not in the [`CommandTable`] is counted under.
pub const OTHER_COMMAND: &str = "OTHER";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabel {
    follower: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: &'static str,
}

/// Makes each series of a histogram family with the same buckets.
#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// 100 µs to 1.6 s, doubling: an fsync on this project's disks takes 0.2-5 ms.
fn fsync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 15))
}

/// 100 µs to 6.6 s, doubling: past the default 5 s `--timeout`.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// 1 to 4096, doubling: `batching::MAX_BATCH_OPS` is 4096.
fn batch_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every metric of the process, and the registry that encodes them.
struct Metrics {
    registry: Registry,
    role: Family<RoleLabel, Gauge>,
    term: Gauge,
    leader_id: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    replication_lag: Family<FollowerLabel, Gauge>,
    machine_version: Gauge,
    machine_version_max: Gauge,
    held_back: Gauge,
    snapshots: Family<EventLabel, Counter>,
    snapshot_bytes: Family<EventLabel, Counter>,
    fsync: Family<SiteLabel, Histogram, Buckets>,
    batch_ops: Histogram,
    batch_writers: Histogram,
    log_sync_appends: Histogram,
    requests: Family<CommandLabel, Histogram, Buckets>,
    errors: Family<KindLabel, Counter>,
    client_connections: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let metrics = Metrics {
            registry: Registry::with_prefix("ondisk"),
            role: Family::default(),
            term: Gauge::default(),
            leader_id: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            replication_lag: Family::default(),
            machine_version: Gauge::default(),
            machine_version_max: Gauge::default(),
            held_back: Gauge::default(),
            snapshots: Family::default(),
            snapshot_bytes: Family::default(),
            fsync: Family::new_with_constructor(Buckets(fsync_buckets)),
            batch_ops: batch_buckets(),
            batch_writers: batch_buckets(),
            log_sync_appends: batch_buckets(),
            requests: Family::new_with_constructor(Buckets(request_buckets)),
            errors: Family::default(),
            client_connections: Gauge::default(),
        };
        // Every series of a fixed label set exists from the start at zero, so
        // a rate over it is defined before the first event.
        for site in FsyncSite::ALL {
            let _ = metrics
                .fsync
                .get_or_create(&SiteLabel { site: site.label() });
        }
        for event in SnapshotEvent::ALL {
            let label = EventLabel {
                event: event.label(),
            };
            let _ = metrics.snapshots.get_or_create(&label);
            let _ = metrics.snapshot_bytes.get_or_create(&label);
        }
        for kind in ErrorKind::ALL {
            let _ = metrics
                .errors
                .get_or_create(&KindLabel { kind: kind.label() });
        }
        metrics.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "raft_role",
            "1 for this replica's current Raft role, 0 for the others",
            self.role.clone(),
        );
        r.register("raft_term", "The current Raft term", self.term.clone());
        r.register(
            "raft_leader_id",
            "The replica id of the leader this replica knows of (0: none)",
            self.leader_id.clone(),
        );
        r.register(
            "raft_commit_index",
            "The highest log index this replica knows to be committed",
            self.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "The last log index applied to this replica's state machine",
            self.applied_index.clone(),
        );
        r.register(
            "raft_last_log_index",
            "The last index in this replica's log",
            self.last_log_index.clone(),
        );
        r.register(
            "raft_replication_lag_entries",
            "At the leader: its last log index minus the last index each member is known to hold",
            self.replication_lag.clone(),
        );
        r.register(
            "machine_version",
            "The cluster's machine version, as far as this replica has applied",
            self.machine_version.clone(),
        );
        r.register(
            "machine_version_max",
            "The highest machine version this replica's build applies",
            self.machine_version_max.clone(),
        );
        r.register(
            "held_back",
            "1 while this replica holds back applying (the log needs a newer machine version)",
            self.held_back.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots built here, sent whole to a lagging replica, or received and installed",
            self.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot",
            "Bytes of the snapshots counted by ondisk_snapshots_total",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "fsync",
            "Time of each durable write (a batch committed with fsync, or a file synced), by where",
            Unit::Seconds,
            self.fsync.clone(),
        );
        r.register(
            "write_batch_ops",
            "Operations per log entry proposed by the write batcher",
            self.batch_ops.clone(),
        );
        r.register(
            "write_batch_writers",
            "Queued writers (connections, prompt lines) sharing one log entry",
            self.batch_writers.clone(),
        );
        r.register(
            "log_sync_appends",
            "Log appends made durable by one fsync of the group-commit flusher",
            self.log_sync_appends.clone(),
        );
        r.register_with_unit(
            "client_request",
            "Time from reading a request on the client port to having its reply, by command",
            Unit::Seconds,
            self.requests.clone(),
        );
        r.register(
            "errors",
            "Requests not served as asked, and connections refused, by kind",
            self.errors.clone(),
        );
        r.register(
            "client_connections",
            "Clients connected to the client port now",
            self.client_connections.clone(),
        );
        self
    }
}

/// Records how long a durable write took.
pub fn fsync(site: FsyncSite, took: Duration) {
    METRICS
        .fsync
        .get_or_create(&SiteLabel { site: site.label() })
        .observe(took.as_secs_f64());
}

/// Times `write` as a durable write at `site`.
pub fn timed_fsync<T>(site: FsyncSite, write: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = write();
    fsync(site, started.elapsed());
    result
}

/// Records one log entry proposed by the write batcher.
pub fn write_batch(ops: usize, writers: usize) {
    METRICS.batch_ops.observe(ops as f64);
    METRICS.batch_writers.observe(writers as f64);
}

/// Records one fsync of the log flusher and how many appends it covered.
pub fn log_sync_group(appends: usize) {
    METRICS.log_sync_appends.observe(appends as f64);
}

/// Records a snapshot built, sent or installed, and its size.
pub fn snapshot(event: SnapshotEvent, bytes: u64) {
    let label = EventLabel {
        event: event.label(),
    };
    METRICS.snapshots.get_or_create(&label).inc();
    METRICS.snapshot_bytes.get_or_create(&label).inc_by(bytes);
}

/// Records a request that was not served as asked.
pub fn error(kind: ErrorKind) {
    METRICS
        .errors
        .get_or_create(&KindLabel { kind: kind.label() })
        .inc();
}

/// Counts a client connection for as long as the guard lives.
pub fn client_connected() -> ConnectedClient {
    METRICS.client_connections.inc();
    ConnectedClient(())
}

/// See [`client_connected`].
pub struct ConnectedClient(());

impl Drop for ConnectedClient {
    fn drop(&mut self) {
        METRICS.client_connections.dec();
    }
}

/// Request latency series for a fixed set of command names, built once: a
/// client can send any name, but only these (and [`OTHER_COMMAND`]) ever
/// become label values.
pub struct CommandTable {
    series: HashMap<&'static str, Histogram>,
    other: Histogram,
    longest: usize,
}

impl CommandTable {
    /// A table for `names` (upper case).
    pub fn new(names: &[&'static str]) -> CommandTable {
        let series = names
            .iter()
            .map(|&name| {
                debug_assert_eq!(name, name.to_ascii_uppercase(), "names are upper case");
                let histogram = METRICS
                    .requests
                    .get_or_create(&CommandLabel { command: name })
                    .clone();
                (name, histogram)
            })
            .collect();
        let other = METRICS
            .requests
            .get_or_create(&CommandLabel {
                command: OTHER_COMMAND,
            })
            .clone();
        CommandTable {
            series,
            other,
            longest: names.iter().map(|n| n.len()).max().unwrap_or(0),
        }
    }

    /// Records one request named `name` (any case) that took `took`.
    pub fn observe(&self, name: &[u8], took: Duration) {
        self.series_of(name).observe(took.as_secs_f64());
    }

    fn series_of(&self, name: &[u8]) -> &Histogram {
        let mut upper = [0u8; 32];
        if name.len() > self.longest || name.len() > upper.len() {
            return &self.other;
        }
        let upper = &mut upper[..name.len()];
        upper.copy_from_slice(name);
        upper.make_ascii_uppercase();
        std::str::from_utf8(upper)
            .ok()
            .and_then(|name| self.series.get(name))
            .unwrap_or(&self.other)
    }
}

/// What openraft says of this replica, as the HTTP front end reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    /// One of [`ROLES`].
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// At the leader: each other member's lag behind its last log index, for
    /// the members that have answered. Empty elsewhere.
    pub lag: Vec<(u64, u64)>,
    pub machine_version: u32,
    pub machine_version_max: u32,
    pub held_back: bool,
}

/// Sets the gauges that mirror openraft's view (see the module comment).
pub fn observe_raft(view: &RaftView) {
    let m = &*METRICS;
    for role in ROLES {
        m.role
            .get_or_create(&RoleLabel { role })
            .set(i64::from(role == view.role));
    }
    m.term.set(saturating_i64(view.term));
    m.leader_id.set(view.leader.map_or(0, saturating_i64));
    m.commit_index.set(saturating_i64(view.commit_index));
    m.applied_index.set(saturating_i64(view.applied_index));
    m.last_log_index.set(saturating_i64(view.last_log_index));
    m.machine_version.set(i64::from(view.machine_version));
    m.machine_version_max
        .set(i64::from(view.machine_version_max));
    m.held_back.set(i64::from(view.held_back));
    // Members come and go, and only a leader tracks them: start afresh.
    m.replication_lag.clear();
    for (follower, lag) in &view.lag {
        m.replication_lag
            .get_or_create(&FollowerLabel {
                follower: follower.to_string(),
            })
            .set(saturating_i64(*lag));
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The whole page in OpenMetrics text, ending with `# EOF`.
pub fn encode() -> String {
    let mut page = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut page, &METRICS.registry);
    page
}

/// The content type of [`encode`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of<'a>(page: &'a str, start: &str) -> Option<&'a str> {
        page.lines().find(|line| line.starts_with(start))
    }

    #[test]
    fn a_command_outside_the_table_counts_as_other() {
        let table = CommandTable::new(&["GET", "SET"]);
        table.observe(b"get", Duration::from_millis(1));
        table.observe(b"Set", Duration::from_millis(1));
        table.observe(b"no-such-command", Duration::from_millis(1));
        table.observe(&[0xff, 0xfe], Duration::from_millis(1));
        table.observe(&[b'x'; 200], Duration::from_millis(1));
        let page = encode();
        assert!(line_of(
            &page,
            "ondisk_client_request_seconds_count{command=\"GET\"}"
        )
        .is_some());
        assert!(line_of(
            &page,
            "ondisk_client_request_seconds_count{command=\"SET\"}"
        )
        .is_some());
        assert!(line_of(
            &page,
            "ondisk_client_request_seconds_count{command=\"OTHER\"}"
        )
        .is_some());
        assert!(!page.contains("no-such-command"), "{page}");
    }

    #[test]
    fn the_page_names_what_the_module_comment_lists() {
        observe_raft(&RaftView {
            role: "leader",
            term: 3,
            leader: Some(1),
            commit_index: 10,
            applied_index: 9,
            last_log_index: 11,
            lag: vec![(2, 0), (3, 4)],
            machine_version: 3,
            machine_version_max: 4,
            held_back: false,
        });
        fsync(FsyncSite::LogAppend, Duration::from_micros(700));
        write_batch(3, 2);
        snapshot(SnapshotEvent::Built, 1000);
        error(ErrorKind::NoLeader);
        let connected = client_connected();
        let page = encode();
        drop(connected);
        for line in [
            "ondisk_raft_role{role=\"leader\"} 1",
            "ondisk_raft_role{role=\"follower\"} 0",
            "ondisk_raft_term 3",
            "ondisk_raft_leader_id 1",
            "ondisk_raft_commit_index 10",
            "ondisk_raft_applied_index 9",
            "ondisk_machine_version 3",
            "ondisk_machine_version_max 4",
            "ondisk_held_back 0",
            "ondisk_raft_last_log_index 11",
            "ondisk_raft_replication_lag_entries{follower=\"3\"} 4",
            "ondisk_snapshots_total{event=\"installed\"} ",
            "ondisk_snapshot_bytes_total{event=\"built\"} ",
            "ondisk_fsync_seconds_count{site=\"log_append\"} ",
            "ondisk_fsync_seconds_count{site=\"vote\"} ",
            "ondisk_write_batch_ops_count ",
            "ondisk_write_batch_writers_count ",
            "ondisk_errors_total{kind=\"no_leader\"} ",
            "ondisk_errors_total{kind=\"protocol\"} ",
            "ondisk_client_connections ",
            "# EOF",
        ] {
            assert!(line_of(&page, line).is_some(), "no {line:?} in\n{page}");
        }
    }
}
