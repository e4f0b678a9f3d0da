//! example-ondisk: a replica of a three-way replicated key-value store.
//!
//! `main` only wires the parts together and is the one place that stops the
//! process. Each Raft concept has its own file; README.md's code map lists
//! them from the front ends down to the store, in the order they depend on
//! each other (`tests/layers.rs` keeps that order free of cycles). Two tools
//! share the binary: `backup.rs` and `restore.rs`.

// openraft's error types are large by design and are what its traits return;
// boxing them at every call would only add noise.
#![allow(clippy::result_large_err)]

mod backup;
mod batching;
mod binary;
mod cli;
mod client;
mod command;
mod expiry;
mod faults;
mod first_report;
mod forward;
#[cfg(test)]
mod fuzz;
mod heavy;
mod http;
mod kv;
mod listen;
mod logging;
mod machine;
mod membership;
mod metrics;
mod network;
mod node;
mod peer_service;
mod raft;
mod read_index;
mod removal;
mod repl;
mod restore;
mod scripts;
mod session;
mod stop;
mod store;
mod sweep;
mod types;
mod upgrade;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use cli::{Invocation, Tool};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::Fatal;

fn main() -> ExitCode {
    fewer_malloc_arenas();
    let cli = match cli::parse_invocation() {
        Invocation::Replica(cli) => cli,
        Invocation::Tool(Tool::Backup(args)) => return report(backup::run(&args)),
        Invocation::Tool(Tool::Restore(args)) => return report(restore::run(&args)),
    };
    // Read before anything else, so a bad secret, password or TLS file changes nothing.
    let cluster_secret =
        match network::ClusterSecret::configured(cli.cluster_secret_file.as_deref()) {
            Ok(secret) => secret,
            Err(e) => return fail(&e),
        };
    let client_password = match session::auth::Password::configured(cli.password_file.as_deref()) {
        Ok(password) => password,
        Err(e) => return fail(&e),
    };
    let client_tls = match (&cli.tls_cert_file, &cli.tls_key_file) {
        (Some(cert), Some(key)) => {
            match client::tls::acceptor(cert, key, cli.tls_client_ca_file.as_deref()) {
                Ok(acceptor) => Some(acceptor),
                Err(e) => return fail(&e),
            }
        }
        _ => None,
    };

    // The data folder is checked before anything is written into it.
    let db = match node::open_store(&cli) {
        Ok(db) => db,
        Err(e) => return fail(&e),
    };
    let log_flush = match logging::init(&cli.replica_dir(), cli.log_level) {
        Ok(guard) => Arc::new(Mutex::new(Some(guard))),
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads())
        .enable_all()
        // Lua scripts run at apply and on reads; see machine::script::STACK.
        .thread_stack_size(machine::script::STACK)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let stop_signals = if cli.no_prompt {
        match runtime.block_on(async { StopSignals::install() }) {
            Ok(signals) => Some(signals),
            Err(e) => return fail(&format!("cannot handle SIGTERM/SIGINT: {e}")),
        }
    } else {
        None
    };
    let client_listener = match runtime.block_on(client::bind(&cli.client_addr())) {
        Ok(listener) => listener,
        Err(e) => return fail(&e),
    };
    // The HTTP port serves from here on, so a probe sees a replica that is
    // still starting (opening its disk, finding its cluster) as alive.
    let http_pages = http::Pages::new();
    if let Some(addr) = cli.http_addr() {
        match runtime.block_on(http::bind(&addr)) {
            Ok(listener) => drop(runtime.spawn(http::serve(listener, http_pages.clone()))),
            Err(e) => return fail(&e),
        }
    }
    let node = match runtime.block_on(node::start(&cli, db, cluster_secret)) {
        Ok(node) => node,
        Err(e) => return fail(&e),
    };
    let kv = {
        // `Kv::start` spawns its write batcher onto this runtime.
        let _entered = runtime.enter();
        kv::Kv::start(node.clone())
    };
    runtime.spawn(http_pages.started(kv.clone()));
    runtime.spawn(exit_on_fatal(node.clone()));
    runtime.spawn(report_removal_from_log(node.clone(), cli.join.is_some()));
    runtime.spawn(stop_when_removed(node.id(), node.removal().clone()));
    let stop_requests = stop::StopRequests::new();
    let shared = session::Shared {
        kv: kv.clone(),
        stats: {
            // The command rate is sampled on this runtime.
            let _entered = runtime.enter();
            session::Stats::start()
        },
        password: client_password.map(Arc::new),
        stop: stop_requests.clone(),
    };
    runtime.spawn(client::serve(client_listener, shared.clone(), client_tls));
    runtime.spawn(expiry::remove_expired_keys(kv.clone()));
    runtime.spawn(sweep::sweep_flushed_keys(kv.clone()));
    runtime.spawn(upgrade::step_aside_when_held_back(
        node.raft().clone(),
        node.network().clone(),
        node.reader().versions.clone(),
    ));
    runtime.spawn(upgrade::move_to_newest_version(
        node.raft().clone(),
        node.network().clone(),
        node.reader().versions.clone(),
    ));
    tracing::info!("replica {} started; peers {}", node.id(), node.peers());

    if let Some(signals) = stop_signals {
        runtime.block_on(async {
            tokio::select! {
                () = signals.wait() => {}
                who = stop_requests.reported() => tracing::info!("{who}"),
            }
        });
    } else {
        runtime.spawn(stop_the_prompt_when_asked(
            node.clone(),
            stop_requests,
            log_flush.clone(),
            TerminalSettings::save(),
        ));
        repl::run(&runtime, shared, &cli.replica_dir());
    }

    tracing::info!("shutting down");
    runtime.block_on(stop_raft(&node));
    ExitCode::SUCCESS
}

/// Hands leadership over (at a leader) and stops openraft, once. The end of
/// the prompt, SIGTERM and SHUTDOWN can come at about the same time; a second
/// caller waits for ever, and the first one's caller ends the process.
async fn stop_raft(node: &node::Node) {
    static STOPPING: AtomicBool = AtomicBool::new(false);
    if STOPPING.swap(true, SeqCst) {
        std::future::pending::<()>().await;
    }
    membership::step_down(node.raft(), node.network()).await;
    if let Err(e) = node.raft().shutdown().await {
        tracing::warn!("openraft did not shut down cleanly: {e}");
    }
}

/// A tool's outcome: what it did on stdout, or one `error:` line.
fn report<E: std::fmt::Display>(outcome: Result<String, E>) -> ExitCode {
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    tracing::error!("{error}");
    ExitCode::FAILURE
}

/// openraft stops itself on a storage failure (a full disk, an entry of an
/// unknown format). Say so on stderr and exit, rather than leave a prompt that
/// can no longer do anything.
async fn exit_on_fatal(node: node::Node) {
    let mut metrics = node.raft().metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            if !matches!(fatal, Fatal::Stopped) {
                // openraft wraps the cause in what it was doing; the person
                // needs the cause, the log keeps the rest.
                let mut cause: &dyn std::error::Error = fatal;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                eprintln!("error: replica {} stopped: {cause}", node.id());
                tracing::error!("replica stopped: {fatal}");
                std::process::exit(1);
            }
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A replica taken out of the members has nothing left to serve: say so and
/// stop, rather than answer as if it still belonged. However it learnt it
/// (`removal.rs`), it stops here, and only here.
async fn stop_when_removed(my_id: types::NodeId, removal: removal::Removal) {
    let why = removal.reported().await;
    eprintln!("replica {my_id} was removed from the cluster ({why}); stopping (its folder can be deleted)");
    tracing::warn!("removed from the cluster ({why}); stopping");
    std::process::exit(0);
}

/// Reports a removal that this replica's own log shows: a membership without
/// it (openraft's effective one, committed or not), also at a restart.
///
/// A replica started with --join is the exception until it is added: it may
/// first receive a snapshot whose membership predates it, so it counts as
/// removed only once it has been a member.
///
/// A leader removing itself waits too, while it leads: the membership without
/// it shows here as soon as it is appended, before it is committed. Stopping
/// then left the others in the joint configuration and whoever asked without
/// an answer (tests/membership.rs, removing the leader). openraft steps it
/// down once the change is committed, and it stops then.
async fn report_removal_from_log(node: node::Node, joining: bool) {
    let mut metrics = node.raft().metrics();
    let mut was_member = !joining;
    loop {
        let (member, known, leading) = {
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            let member = membership.voter_ids().any(|id| id == node.id())
                || membership.learner_ids().any(|id| id == node.id());
            let leading = m.state == openraft::ServerState::Leader;
            (member, m.membership_config.log_id().is_some(), leading)
        };
        was_member |= member;
        if was_member && known && !member && !leading {
            node.removal()
                .report("its log holds a membership without it");
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// glibc's malloc gives threads that allocate at once arenas of their own, up
/// to eight per core, and hands little of an arena's freed memory back. Under
/// load a replica's threads (the runtime's workers, the blocking pool, the
/// log flusher, fjall's workers) each grew one, and peak memory passed the
/// 200 MiB a replica may use in `scripts/bench.sh`. Two arenas were not
/// enough: a follower's second arena filled with holes left by freed
/// memtables and apply batches, until most of its heap was free but still
/// resident. One arena shares its holes between all threads; it costs a
/// little CPU in lock waits (notes/findings.md, sessions 9 and 12).
/// Elsewhere than glibc, nothing.
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ARENAS: libc::c_int = 1;
        // SAFETY: mallopt only sets a malloc tunable; called before any
        // thread is started, and it fails harmlessly (returns 0) if refused.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// With a prompt, SIGTERM (a service manager stopping the replica, a rolling
/// restart) must not simply kill it: a leader hands leadership over first, as
/// at the end of the prompt, so the others need not wait out an election.
/// SHUTDOWN (from a client, or typed at the prompt) stops it the same way.
/// The prompt may be blocked reading a line, so this stops the process
/// itself, after flushing the log and giving the terminal its settings back.
async fn stop_the_prompt_when_asked(
    node: node::Node,
    requests: stop::StopRequests,
    log_flush: Arc<Mutex<Option<tracing_appender::non_blocking::WorkerGuard>>>,
    terminal: TerminalSettings,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let sigterm = async {
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => terminate.recv().await,
            Err(_) => {
                tracing::warn!(
                    "cannot handle SIGTERM; it will stop this replica without a hand-over"
                );
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        _ = sigterm => tracing::info!("SIGTERM: shutting down"),
        who = requests.reported() => tracing::info!("{who}: shutting down"),
    }
    stop_raft(&node).await;
    terminal.restore();
    // Dropping the guard writes out what the log still buffers.
    drop(log_flush.lock().unwrap_or_else(|e| e.into_inner()).take());
    std::process::exit(0);
}

/// The terminal's settings when the replica started, if stdin is one: the
/// prompt puts it in raw mode while it reads a line.
struct TerminalSettings(Option<libc::termios>);

impl TerminalSettings {
    fn save() -> Self {
        // SAFETY: tcgetattr writes a termios into the zeroed one it is given,
        // and only reports an error for a stdin that is not a terminal.
        unsafe {
            let mut settings: libc::termios = std::mem::zeroed();
            let is_terminal = libc::tcgetattr(libc::STDIN_FILENO, &mut settings) == 0;
            TerminalSettings(is_terminal.then_some(settings))
        }
    }

    fn restore(&self) {
        if let Some(settings) = &self.0 {
            // SAFETY: the settings were read from this same terminal.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, settings);
            }
        }
    }
}

/// Signal handlers for `--no-prompt`, installed before the replica starts so
/// that a SIGTERM during start-up also ends it cleanly instead of killing it.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
