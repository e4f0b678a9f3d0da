//! Command-line flags, with their defaults and the checks that need more than one flag.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::types::NodeId;

/// The members and their Raft addresses when `--peers` is not given.
pub const DEFAULT_PEERS: &str = "1=127.0.0.1:63001,2=127.0.0.1:63002,3=127.0.0.1:63003";

/// A replica of the example-ondisk key-value store.
///
/// Start three of them, `--replica-id 1`, `2` and `3`, in three terminals; they
/// elect a leader by themselves. Type `put KEY VALUE`, `get KEY`, `delete KEY`
/// or `status` at any of their prompts; `help` lists the commands.
#[derive(Debug, Parser)]
#[command(
    name = "example-ondisk",
    version,
    about,
    long_about,
    after_help = "Backup and restore: `example-ondisk backup --help`, `example-ondisk restore --help`."
)]
pub struct Cli {
    /// This replica's id: one of the members named in --peers.
    #[arg(long, value_name = "N")]
    pub replica_id: NodeId,

    /// Folder that holds every replica's files; replica N uses DIR/replica-N.
    #[arg(long, value_name = "DIR", default_value = "example-data")]
    pub data_dir: PathBuf,

    /// The members of the cluster and the address each one serves Raft on.
    #[arg(long, value_name = "ID=HOST:PORT,...", default_value = DEFAULT_PEERS)]
    pub peers: Peers,

    /// Name of the cluster; replicas only talk to, and data folders only open
    /// for, the same name. Default: derived from the member list.
    #[arg(long, value_name = "NAME")]
    pub cluster_id: Option<String>,

    /// How long put, get and delete wait for a leader and a quorum, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Milliseconds between the leader's heartbeats to each follower.
    /// The defaults of this and --election-timeout were chosen by measuring
    /// (scripts/failover.sh; see the README).
    #[arg(long, value_name = "MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub heartbeat_interval: u64,

    /// Milliseconds a follower goes without hearing its leader before it asks
    /// to lead. Each wait is drawn between MS and twice MS, so that two
    /// replicas rarely ask at once. At least three heartbeat intervals.
    #[arg(long, value_name = "MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(30..=60_000))]
    pub election_timeout: u64,

    /// How the leader makes sure it still leads before it answers a
    /// linearizable read. `lease`: a quorum answered it within the last
    /// --election-timeout, while no one may vote another leader in for twice
    /// that; this assumes the replicas' clocks tick at about the same rate
    /// (not that they agree on the time). `round`: a heartbeat round to a
    /// quorum for the reads waiting, with no assumption on clocks.
    #[arg(long, value_name = "CHECK", value_enum, default_value_t = ReadCheck::Lease)]
    pub read_check: ReadCheck,

    /// Take a snapshot after this many applied entries, then purge the log
    /// behind it except a short tail. 0 turns snapshots off.
    #[arg(long, value_name = "ENTRIES", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Also take a snapshot once the entries applied since the last one hold
    /// this many MiB of commands: an entry carries a batch of writes, so a
    /// count of entries alone does not bound the log on disk.
    #[arg(long, value_name = "MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub snapshot_log_mib: u64,

    /// Threads that run this replica's clients, Raft traffic and applies.
    /// Default: this machine's cores shared among the members that run on it
    /// (those at loopback addresses in --peers), at least one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Join an existing cluster through the member whose Raft address is
    /// HOST:PORT, instead of founding one: this replica asks to be added and
    /// never bootstraps. Needs --cluster-id (the `cluster_id` INFO shows).
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,

    /// Where this replica listens for Raft traffic. Default: its own address
    /// in --peers. Set it when peers reach this replica through a proxy or NAT,
    /// so the address they dial differs from the one bound here.
    #[arg(long, value_name = "HOST:PORT")]
    pub raft_listen: Option<String>,

    /// Where this replica serves Redis clients (RESP2). Default: 127.0.0.1
    /// on port 6379 + the replica id (6380 for replica 1).
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<String>,

    /// Where this replica serves HTTP for monitoring: Prometheus metrics at
    /// /metrics, and /health and /ready for probes. Default: 127.0.0.1 on
    /// port 64000 + the replica id (64001 for replica 1).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, conflicts_with = "no_http")]
    pub http_addr: Option<String>,

    /// Serve no HTTP port (no metrics, no health or readiness probes).
    #[arg(long)]
    pub no_http: bool,

    /// A file whose one line is the password Redis clients must give (AUTH,
    /// HELLO ... AUTH, `redis-cli --pass`). Without it, the password is
    /// taken from EXAMPLE_ONDISK_PASSWORD if that is set; otherwise none is
    /// asked. The prompt never asks.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// A file whose one line is the cluster secret: the Raft port then admits
    /// only peers that prove they hold the same one (HMAC challenge both
    /// ways; the secret itself never crosses the network). Without it, the
    /// secret is taken from EXAMPLE_ONDISK_CLUSTER_SECRET if that is set;
    /// otherwise the Raft port admits anyone who reaches it. At least 16
    /// bytes; make one with `head -c 32 /dev/urandom | base64`.
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Serve Redis clients over TLS only, with this certificate chain (PEM),
    /// as Redis's tls-port does. Needs --tls-key-file.
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Ask every client for a certificate signed by a CA in this file (PEM),
    /// as Redis's tls-auth-clients does. Needs --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Run without a prompt until SIGINT or SIGTERM.
    #[arg(long)]
    pub no_prompt: bool,

    /// How much goes into DIR/replica-N/replica.log.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// What the binary was asked to do: run a replica (the flags above, as
/// always), or one of the tools named by a first word.
#[derive(Debug)]
pub enum Invocation {
    Replica(Cli),
    Tool(Tool),
}

/// The tools, each named by the first word (`example-ondisk backup ...`).
/// A separate parser, so the replica's flags stay at the top level unchanged.
#[derive(Debug, Parser)]
#[command(name = "example-ondisk", version)]
struct Tools {
    #[command(subcommand)]
    tool: Tool,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Copy the whole state of a running cluster to a file, through one
    /// replica's client port.
    ///
    /// The copy is the state at a linearizable read point (it holds every
    /// write acknowledged before the backup began), in the snapshot file
    /// format (versioned, checksummed). It is written to FILE.part and renamed
    /// to FILE only once it arrived whole and read back correctly. At the end
    /// it prints the applied index the copy is at and its CHECKSUM. The
    /// cluster keeps serving meanwhile; the replica writes the copy to its own
    /// disk first (as much space again as a snapshot), then sends it.
    Backup(BackupArgs),
    /// Found one replica of a NEW cluster from a backup file.
    ///
    /// Run it once per replica of the new cluster (on each host), with the
    /// same file, --peers and --cluster-id: each makes DIR/replica-N holding
    /// the backed-up state and membership --peers, under a new cluster id, so
    /// the new cluster never talks to the old one. A damaged, cut or foreign
    /// file is refused and nothing is written. Then start each replica with
    /// the --cluster-id it prints.
    Restore(RestoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The client (Redis) port of any replica of the cluster.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub from: String,

    /// Where the backup goes. An existing file is replaced only once the new
    /// copy is whole.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// A file whose one line is the client port's password. Without it, the
    /// password is taken from EXAMPLE_ONDISK_PASSWORD if that is set.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Connect with TLS, trusting the replica's certificate if this CA (PEM)
    /// signed it (as `redis-cli --tls --cacert FILE`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// With --tls-ca-file: show this certificate (PEM) to a port that asks
    /// clients for one. Needs --tls-key-file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_ca_file",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// How long to wait to connect, and at most between two pieces of the
    /// answer (the replica first writes the copy to its disk), in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (made by `example-ondisk backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,

    /// Folder that holds every replica's files; the restored replica N gets
    /// DIR/replica-N, which must not exist yet.
    #[arg(long, value_name = "DIR", default_value = "example-data")]
    pub data_dir: PathBuf,

    /// The replica of the new cluster to make: one of the members in --peers.
    #[arg(long, value_name = "N")]
    pub replica_id: NodeId,

    /// The members of the new cluster and the address each serves Raft on.
    #[arg(long, value_name = "ID=HOST:PORT,...", default_value = DEFAULT_PEERS)]
    pub peers: Peers,

    /// Name of the new cluster. Default: derived from the backup's contents
    /// and --peers, so restores of the same file on each host agree.
    #[arg(long, value_name = "NAME")]
    pub cluster_id: Option<String>,
}

impl RestoreArgs {
    /// The folder the restored replica gets.
    pub fn replica_dir(&self) -> PathBuf {
        replica_dir(&self.data_dir, self.replica_id)
    }
}

/// Parses the process arguments: a tool if the first word names one, else a
/// replica's flags. On bad flags prints one `error:` line and exits with code 2.
pub fn parse_invocation() -> Invocation {
    let first = std::env::args_os().nth(1);
    let names_a_tool = first.is_some_and(|word| word == "backup" || word == "restore");
    if !names_a_tool {
        return Invocation::Replica(Cli::parse_and_check());
    }
    let tool = match Tools::try_parse() {
        Ok(tools) => tools.tool,
        Err(e) if !e.use_stderr() => e.exit(), // --help and --version
        Err(e) => usage_error(&e.render().to_string()),
    };
    if let Tool::Restore(restore) = &tool {
        check_member(restore.replica_id, &restore.peers);
    }
    Invocation::Tool(tool)
}

/// Refuses (exit code 2) a replica id that is not one of the members.
fn check_member(id: NodeId, peers: &Peers) {
    if !peers.0.contains_key(&id) {
        usage_error(&format!(
            "error: --replica-id {id} is not a member; the members are {}",
            peers.ids_text()
        ));
    }
}

/// The folder of replica `id` under `data_dir`.
pub fn replica_dir(data_dir: &std::path::Path, id: NodeId) -> PathBuf {
    data_dir.join(format!("replica-{id}"))
}

impl Cli {
    /// Parses the process arguments. On bad flags, including a replica id that is
    /// not one of the members, prints one `error:` line and exits with code 2.
    pub fn parse_and_check() -> Cli {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => e.exit(), // --help and --version
            Err(e) => usage_error(&e.render().to_string()),
        };
        check_member(cli.replica_id, &cli.peers);
        if cli.election_timeout < 3 * cli.heartbeat_interval {
            usage_error(&format!(
                "error: --election-timeout {} is under three heartbeat intervals ({} ms); a follower would ask to lead while its leader is well",
                cli.election_timeout,
                3 * cli.heartbeat_interval
            ));
        }
        if cli.join.is_some() && cli.cluster_id.is_none() {
            usage_error(
                "error: --join needs --cluster-id NAME, the cluster_id that INFO shows at any member",
            );
        }
        if cli.client_addr.is_none() && cli.default_client_port().is_none() {
            usage_error(&format!(
                "error: replica id {} has no default client port (6379 + id is over 65535); give --client-addr",
                cli.replica_id
            ));
        }
        if !cli.no_http && cli.http_addr.is_none() && cli.default_http_port().is_none() {
            usage_error(&format!(
                "error: replica id {} has no default HTTP port (64000 + id is over 65535); give --http-addr or --no-http",
                cli.replica_id
            ));
        }
        cli
    }

    /// The HTTP port's default: above Linux's ephemeral range (32768-60999),
    /// like the Raft ports (63000 + id), so no outgoing connection holds it,
    /// and clear of 9100-9999, which Prometheus's exporters have taken.
    fn default_http_port(&self) -> Option<u16> {
        u16::try_from(64000 + u128::from(self.replica_id)).ok()
    }

    /// The address the HTTP port listens on; `None` with --no-http.
    pub fn http_addr(&self) -> Option<String> {
        if self.no_http {
            return None;
        }
        Some(match &self.http_addr {
            Some(addr) => addr.clone(),
            None => format!("127.0.0.1:{}", self.default_http_port().unwrap_or(0)),
        })
    }

    fn default_client_port(&self) -> Option<u16> {
        u16::try_from(6379 + u128::from(self.replica_id)).ok()
    }

    /// The address the client port listens on.
    pub fn client_addr(&self) -> String {
        match &self.client_addr {
            Some(addr) => addr.clone(),
            None => format!("127.0.0.1:{}", self.default_client_port().unwrap_or(0)),
        }
    }

    /// The folder that holds this replica's database, log file and prompt history.
    pub fn replica_dir(&self) -> PathBuf {
        replica_dir(&self.data_dir, self.replica_id)
    }

    /// How many threads the replica's async runtime runs: `--threads`, or
    /// this machine's cores divided among the members at loopback addresses.
    /// Three replicas on one machine (the default --peers) each running a
    /// thread per core only take turns on the cores: every hand-off between
    /// threads then costs a wake-up and a switch (notes/findings.md).
    pub fn threads(&self) -> usize {
        if let Some(threads) = self.threads {
            return usize::from(threads);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let here = self
            .peers
            .0
            .values()
            .filter(|addr| is_loopback(addr))
            .count()
            .max(1);
        (cores / here).max(1)
    }

    /// The cluster's name: the flag, or a digest of the member list, so that two
    /// clusters configured differently never mistake each other's traffic or folders.
    pub fn cluster_id(&self) -> String {
        match &self.cluster_id {
            Some(name) => name.clone(),
            None => format!("members-{:016x}", fnv1a(self.peers.to_string().as_bytes())),
        }
    }
}

/// Prints a usage error as one line (clap adds a usage block; one line is what
/// a person or a script needs) and exits with clap's usage code.
fn usage_error(rendered: &str) -> ! {
    let first_paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    eprintln!("{} (see --help)", first_paragraph.join(" "));
    std::process::exit(2);
}

/// How a leader makes sure, before it answers reads, that no other leader
/// can have been elected: a stale leader would answer without the newest
/// acknowledged writes. Chosen with `--read-check`;
/// `read_index.rs` carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadCheck {
    /// A quorum acknowledged this leader recently enough (the Raft thesis's
    /// leader lease, section 6.4.1). No message is sent for the read while
    /// writes or heartbeats keep the acknowledgements fresh.
    Lease,
    /// A heartbeat round to a quorum, started after the read arrived (the
    /// thesis's read index, section 6.4). Shared by all reads waiting.
    Round,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The member list: replica id to `HOST:PORT`, kept sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<NodeId, String>);

impl Peers {
    pub fn address_of(&self, id: NodeId) -> Option<&str> {
        self.0.get(&id).map(String::as_str)
    }

    fn ids_text(&self) -> String {
        let ids: Vec<String> = self.0.keys().map(|id| id.to_string()).collect();
        ids.join(", ")
    }
}

impl fmt::Display for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

impl FromStr for Peers {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut members = BTreeMap::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err("expected ID=HOST:PORT items separated by commas".to_string());
            }
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not ID=HOST:PORT"))?;
            let id: NodeId = id
                .trim()
                .parse()
                .map_err(|_| format!("'{id}' in '{part}' is not a replica id (a whole number)"))?;
            if id == 0 {
                return Err("replica ids start at 1".to_string());
            }
            let addr = addr.trim();
            check_host_port(addr).map_err(|why| format!("'{part}': {why}"))?;
            if members.values().any(|a: &String| a == addr) {
                return Err(format!("address {addr} is given to two replicas"));
            }
            if members.insert(id, addr.to_string()).is_some() {
                return Err(format!("replica {id} is listed twice"));
            }
        }
        Ok(Peers(members))
    }
}

fn check_host_port(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{addr}' has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("'{port}' is not a port number (1-65535)")),
    }
}

fn parse_host_port(text: &str) -> Result<String, String> {
    check_host_port(text)?;
    Ok(text.to_string())
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err("the timeout must be more than 0 and at most 3600 seconds".to_string());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// 64-bit FNV-1a: a stable digest for naming, not for security.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether HOST:PORT names this machine's loopback interface.
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_peers_parse() {
        let peers: Peers = DEFAULT_PEERS.parse().unwrap();
        assert_eq!(peers.address_of(2), Some("127.0.0.1:63002"));
        assert_eq!(peers.to_string(), DEFAULT_PEERS);
    }

    #[test]
    fn replicas_on_one_machine_share_its_cores() {
        for (addr, local) in [
            ("127.0.0.1:63001", true),
            ("127.5.0.9:1", true),
            ("localhost:6000", true),
            ("[::1]:6000", true),
            ("10.0.0.2:63001", false),
            ("db-2.example:63001", false),
        ] {
            assert_eq!(is_loopback(addr), local, "{addr}");
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cli = |extra: &[&str]| {
            let mut args = vec!["example-ondisk", "--replica-id", "1"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).unwrap()
        };
        assert_eq!(cli(&[]).threads(), (cores / 3).max(1));
        let spread = ["--peers", "1=10.0.0.1:1,2=10.0.0.2:1,3=10.0.0.3:1"];
        assert_eq!(cli(&spread).threads(), cores);
        assert_eq!(cli(&["--threads", "7"]).threads(), 7);
        assert!(
            Cli::try_parse_from(["example-ondisk", "--replica-id", "1", "--threads", "0"]).is_err()
        );
    }

    #[test]
    fn bad_peers_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "ID=HOST:PORT"),
            ("1=nope", "not HOST:PORT"),
            ("x=127.0.0.1:1", "not a replica id"),
            ("0=127.0.0.1:1", "start at 1"),
            ("1=127.0.0.1:1,1=127.0.0.1:2", "listed twice"),
            ("1=127.0.0.1:1,2=127.0.0.1:1", "two replicas"),
            ("1=:80", "no host"),
            ("1=h:99999", "not a port"),
            ("1=h:1,,2=h:2", "separated by commas"),
        ] {
            let err = text.parse::<Peers>().unwrap_err();
            assert!(err.contains(reason), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("0.5").unwrap(), Duration::from_millis(500));
        for bad in ["0", "-1", "abc", "NaN", "inf", "100000"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_http_port_follows_the_replica_id_unless_given_or_off() {
        let default = Cli::try_parse_from(["x", "--replica-id", "2"]).unwrap();
        assert_eq!(default.http_addr().as_deref(), Some("127.0.0.1:64002"));
        let given =
            Cli::try_parse_from(["x", "--replica-id", "2", "--http-addr", "0.0.0.0:9000"]).unwrap();
        assert_eq!(given.http_addr().as_deref(), Some("0.0.0.0:9000"));
        let off = Cli::try_parse_from(["x", "--replica-id", "2", "--no-http"]).unwrap();
        assert_eq!(off.http_addr(), None);
        for bad in ["nope", ":80", "h:0", "h:70000"] {
            assert!(
                Cli::try_parse_from(["x", "--replica-id", "2", "--http-addr", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cli::try_parse_from(["x", "--replica-id", "2", "--no-http", "--http-addr", "h:1"])
                .is_err()
        );
    }

    #[test]
    fn cluster_id_follows_the_member_list() {
        let a = Cli::try_parse_from(["x", "--replica-id", "1"]).unwrap();
        let b = Cli::try_parse_from(["x", "--replica-id", "1", "--peers", "1=h:1,2=h:2,3=h:3"])
            .unwrap();
        assert_ne!(a.cluster_id(), b.cluster_id());
        let c = Cli::try_parse_from(["x", "--replica-id", "1", "--cluster-id", "prod"]).unwrap();
        assert_eq!(c.cluster_id(), "prod");
    }
}
