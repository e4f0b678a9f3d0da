//! Starting a replica: open its disk, start openraft, serve peers, bootstrap the cluster.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::cli::{Cli, Peers};
use crate::network::{server, ClusterSecret, Network, PeerRequest, PeerResponse};
use crate::peer_service::RaftPeerService;
use crate::raft::Raft;
use crate::read_index::LeaderReads;
use crate::removal::Removal;
use crate::store::{
    self, ApplyStats, Identity, LogStore, OpenError, StateMachine, StateReader, LAYOUT_VERSION,
};
use crate::types::NodeId;

/// Why a replica could not start. Each is printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the state machine on disk cannot be read: {0}")]
    StateMachine(String),
    #[error("cannot serve Raft on {addr}: {why} (is another replica using this address?)")]
    Listen { addr: String, why: String },
    #[error("openraft refused to start: {0}")]
    Raft(String),
    #[error("cannot start the log's flusher thread: {0}")]
    Flusher(String),
}

/// A running replica's Raft node: openraft, its network and its store's
/// reader. The key-value service (`kv.rs`) is built on it.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    cluster_id: String,
    raft: Raft,
    peers: Peers,
    network: Network,
    reader: StateReader,
    committed_index: Arc<AtomicU64>,
    timeout: Duration,
    reads: LeaderReads,
    removal: Removal,
}

impl Node {
    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// openraft's handle, for the leader-side operations and its metrics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The addresses given by `--peers`: where to find a member before the
    /// log says where it is.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Reads of this replica's applied state.
    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    /// The highest index this replica knows to be committed (openraft's
    /// metrics lag behind the log store's record of it).
    pub fn committed_index(&self) -> u64 {
        self.committed_index
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long a request may wait for the cluster (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How this replica, when it leads, confirms that before answering reads.
    pub fn reads(&self) -> &LeaderReads {
        &self.reads
    }

    /// Reports that this replica is no longer a member; `main` stops it.
    pub fn removal(&self) -> &Removal {
        &self.removal
    }
}

/// Log entries kept behind a snapshot when the log is purged.
const LOG_TAIL_AFTER_SNAPSHOT: u64 = 100;

/// How long an empty replica looks for a running cluster before it founds
/// one (see `bootstrap`).
const LISTEN_FOR_A_CLUSTER: Duration = Duration::from_millis(1000);
/// Added per place in `--peers`, so that replicas of a new cluster started
/// together do not all stand for election at the same instant.
const LISTEN_STAGGER: Duration = Duration::from_millis(250);
/// How often the peers are asked meanwhile, and how long each may take.
const ASK_AGAIN: Duration = Duration::from_millis(100);
const ASK_TIMEOUT: Duration = Duration::from_millis(300);

/// The snapshot policy's second half: openraft takes a snapshot every
/// `--snapshot-every` entries; this asks for one as well whenever the entries
/// applied since the last one hold `--snapshot-log-mib` of commands, so the
/// log kept on disk stays bounded however large the batches are.
async fn snapshot_when_the_log_outgrows(raft: Raft, stats: Arc<ApplyStats>) {
    loop {
        stats.log_growth.outgrown.notified().await;
        if raft.trigger().snapshot().await.is_err() {
            return; // Raft has shut down.
        }
    }
}

/// Raft settings. The timing comes from the flags: a follower that has not
/// heard its leader for the election timeout asks the others with a pre-vote,
/// and they refuse while they still hear the leader, so a slow replica on a
/// busy machine does not start an election it cannot win; a lost leader is
/// replaced within about a second (scripts/failover.sh).
fn raft_config(cli: &Cli) -> Result<Config, StartError> {
    let snapshot_policy = match cli.snapshot_every {
        0 => SnapshotPolicy::Never,
        entries => SnapshotPolicy::LogsSinceLast(entries),
    };
    let config = Config {
        cluster_name: cli.cluster_id(),
        heartbeat_interval: cli.heartbeat_interval,
        election_timeout_min: cli.election_timeout,
        election_timeout_max: 2 * cli.election_timeout,
        snapshot_policy,
        // The short tail of log kept behind a snapshot: a follower lagging by
        // less than this catches up from the log, not by a whole snapshot.
        max_in_snapshot_log_to_keep: LOG_TAIL_AFTER_SNAPSHOT.min(cli.snapshot_every),
        max_payload_entries: 256,
        snapshot_max_chunk_size: 1024 * 1024,
        // How long the sender waits for each chunk's answer, and the last
        // chunk's answer comes after the receiver has read the snapshot through
        // and installed it: about 3 s at a million keys. openraft's 200 ms
        // gave up on every large install and sent the whole snapshot again.
        install_snapshot_timeout: 10_000,
        // A replica whose folder was deleted rejoins empty: its log goes
        // backwards, which a debug-build leader would otherwise take for a
        // bug and panic on (openraft 0.9's `loosen-follower-log-revert`).
        allow_log_reversion: Some(true),
        // A replica that stops hearing the leader for a while (restarted,
        // cut off, or its threads busy parsing a large append) first asks
        // whether the others would vote for it, without raising its term.
        // They refuse while they still hear a leader, so it cannot depose a
        // healthy one; without this, its higher term did (issue 16).
        enable_pre_vote: Some(true),
        // Replicate an entry as soon as `append` returns, before its fsync
        // (the log store syncs in the background: `store/group_commit.rs`),
        // so the leader's fsync overlaps the followers'. openraft leaves it
        // off by default, as it can make batches smaller; here it did not
        // (notes/findings.md, session 9).
        broadcast_submitted_on_append: Some(true),
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))
}

/// Opens the data folder; this happens before logging starts, so a refused
/// folder gets nothing written into it.
pub fn open_store(cli: &Cli) -> Result<store::Db, StartError> {
    let identity = Identity {
        layout: LAYOUT_VERSION,
        replica_id: cli.replica_id,
        cluster_id: cli.cluster_id(),
    };
    Ok(store::open(&cli.replica_dir(), &identity)?)
}

/// Starts openraft on an opened store and joins the cluster. With a cluster
/// secret, every Raft connection in and out must prove it (`network/handshake.rs`).
pub async fn start(
    cli: &Cli,
    db: store::Db,
    cluster_secret: Option<ClusterSecret>,
) -> Result<Node, StartError> {
    let cluster_id = cli.cluster_id();
    let id = cli.replica_id;
    let addr = match &cli.raft_listen {
        Some(listen) => listen.clone(),
        None => cli
            .peers
            .address_of(id)
            .expect("the replica id was checked against --peers")
            .to_string(),
    };

    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| StartError::Listen {
            addr: addr.clone(),
            why: e.to_string(),
        })?;

    let log_store = LogStore::new(db.clone()).map_err(|e| StartError::Flusher(e.to_string()))?;
    let committed_index = log_store.committed_index();
    let (state_machine, reader) =
        StateMachine::open(db).map_err(|e| StartError::StateMachine(e.to_string()))?;
    let removal = Removal::new();
    let network = Network::new(
        cluster_id.clone(),
        id,
        cluster_secret,
        state_machine.known_whole_snapshot(),
        removal.clone(),
    );
    let snapshot_inbox = state_machine.snapshot_inbox();
    let config = Arc::new(raft_config(cli)?);
    let raft = Raft::new(id, config, network.clone(), log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

    if cli.snapshot_every != 0 {
        let growth = reader.stats.clone();
        growth
            .log_growth
            .set_limit(cli.snapshot_log_mib * 1024 * 1024);
        tokio::spawn(snapshot_when_the_log_outgrows(raft.clone(), growth));
    }

    let reads = LeaderReads::new(cli.read_check, Duration::from_millis(cli.election_timeout));
    let service = RaftPeerService {
        raft: raft.clone(),
        reads,
        network: network.clone(),
        versions: reader.versions.clone(),
    };
    tokio::spawn(server::serve(
        listener,
        service,
        network.secret().cloned(),
        snapshot_inbox,
        cluster_id.clone(),
        id,
    ));
    if let Some(member) = &cli.join {
        // A joining replica must never bootstrap: that would found a second
        // cluster. It asks to be added, and waits, empty, until it is.
        let my_addr = cli
            .peers
            .address_of(id)
            .expect("the replica id was checked against --peers")
            .to_string();
        tracing::info!("joining an existing cluster through {member}");
        tokio::spawn(crate::membership::join_through(
            network.clone(),
            id,
            my_addr,
            member.clone(),
        ));
    } else {
        bootstrap(&raft, &network, &cli.peers, id).await?;
    }
    note_peers_that_differ(&raft, &cli.peers, cli.join.is_some());

    Ok(Node {
        id,
        cluster_id,
        raft,
        peers: cli.peers.clone(),
        network,
        reader,
        committed_index,
        timeout: cli.timeout,
        reads,
        removal,
    })
}

/// The first peer that says it belongs to a cluster, if any answers so.
async fn founded_peer(network: &Network, peers: &Peers, my_id: NodeId) -> Option<NodeId> {
    for (&peer, addr) in peers.0.iter().filter(|(id, _)| **id != my_id) {
        let answer = network
            .call(peer, addr, &PeerRequest::Founded, ASK_TIMEOUT)
            .await;
        if let Ok(PeerResponse::Founded(true)) = answer {
            return Some(peer);
        }
    }
    None
}

/// `--peers` only founds a cluster. Once the log holds a membership, that is
/// who the members are (changed by add-replica and remove-replica, kept across
/// restarts), and the flag is not consulted again. Say so when the two differ,
/// so nobody believes an edited `--peers` took effect.
fn note_peers_that_differ(raft: &Raft, peers: &Peers, joining: bool) {
    let stored = raft.metrics().borrow_watched().membership_config.clone();
    if stored.log_id().is_none() {
        return; // a replica still waiting to be added: nothing is stored yet
    }
    let members: BTreeMap<NodeId, String> = stored
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    if members == peers.0 || joining {
        return;
    }
    let members = Peers(members);
    eprintln!(
        "note: the cluster's members are {members} (from this replica's log); \
         --peers {peers} is not used: it only founds a new cluster \
         (change members with add-replica and remove-replica)"
    );
    tracing::warn!(
        "--peers {peers} differs from the stored membership {members}; using the stored one"
    );
}

/// Makes a fresh replica a member of the configured cluster.
///
/// Every replica of a new cluster calls this with the same member list: each
/// writes the identical membership entry at log index 0, so it does not matter
/// how many of them, or in which order, found it. A replica that already has a
/// log (a restart) keeps what it has.
///
/// openraft's `initialize` starts an election at once. An empty replica of a
/// cluster that is already running (its folder was deleted) would thereby
/// disturb the leader: every start of one cost an election. So a fresh replica
/// first asks its peers whether they belong to a cluster, and listens for a
/// leader meanwhile; if either says a cluster exists, it founds nothing and
/// waits to be reached (a leader that is busy sending a large snapshot may
/// take seconds). Only if no peer has a cluster for a while does it found one.
/// The while is staggered by the replica's place in `--peers`, so in a new
/// cluster the first replica up usually wins the first election alone and the
/// others find it founded.
async fn bootstrap(
    raft: &Raft,
    network: &Network,
    peers: &Peers,
    my_id: NodeId,
) -> Result<(), StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if initialized {
        tracing::info!("restarting with an existing log; no bootstrap needed");
        return Ok(());
    }
    let place = peers.0.keys().position(|id| *id == my_id).unwrap_or(0) as u32;
    let deadline = tokio::time::Instant::now() + LISTEN_FOR_A_CLUSTER + LISTEN_STAGGER * place;
    while tokio::time::Instant::now() < deadline {
        if let Some(leader) = raft.metrics().borrow_watched().current_leader {
            tracing::info!("replica {leader} leads a running cluster: following it");
            return Ok(());
        }
        if let Some(peer) = founded_peer(network, peers, my_id).await {
            tracing::info!(
                "replica {peer} belongs to a running cluster: founding nothing, \
                 waiting for its leader to reach this replica"
            );
            return Ok(());
        }
        tokio::time::sleep(ASK_AGAIN).await;
    }
    let members: BTreeMap<NodeId, BasicNode> = peers
        .0
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("bootstrapped a new cluster with members {peers}"),
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(e),
        )) => {
            tracing::info!("bootstrap not needed: {e}")
        }
        Err(e) => return Err(StartError::Raft(e.to_string())),
    }
    Ok(())
}
