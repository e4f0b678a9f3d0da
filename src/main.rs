//! example-ondisk: a replica of a three-way replicated key-value store.
//!
//! `main` only wires the parts together; each Raft concept has its own file:
//! `store/log.rs` (Raft log and vote), `store/state_machine.rs` (apply, reads),
//! `store/snapshot.rs` (snapshot files), `network/` (Raft transport),
//! `node.rs` (starting openraft, bootstrap), `kv.rs` (the request path),
//! `repl.rs` (the prompt), `command.rs` (what goes into the log).

// openraft's error types are large by design and are what its traits return;
// boxing them at every call would only add noise.
#![allow(clippy::result_large_err)]

mod cli;
mod command;
mod kv;
mod logging;
mod network;
mod node;
mod repl;
mod store;
mod types;

use std::process::ExitCode;

use cli::Cli;
use openraft::error::Fatal;

fn main() -> ExitCode {
    let cli = Cli::parse_and_check();

    // The data folder is checked before anything is written into it.
    let db = match node::open_store(&cli) {
        Ok(db) => db,
        Err(e) => return fail(&e),
    };
    let _log_flush = match logging::init(&cli.replica_dir(), cli.log_level) {
        Ok(guard) => guard,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let node = match runtime.block_on(node::start(&cli, db)) {
        Ok(node) => node,
        Err(e) => return fail(&e),
    };
    runtime.spawn(exit_on_fatal(node.clone()));
    tracing::info!("replica {} started; peers {}", node.id, node.peers);

    if cli.no_prompt {
        runtime.block_on(wait_for_signal());
    } else {
        repl::run(&runtime, &node, &cli.replica_dir());
    }

    tracing::info!("shutting down");
    if let Err(e) = runtime.block_on(node.raft.shutdown()) {
        tracing::warn!("openraft did not shut down cleanly: {e}");
    }
    ExitCode::SUCCESS
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
    let mut metrics = node.raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            if !matches!(fatal, Fatal::Stopped) {
                eprintln!("error: replica {} stopped: {fatal}", node.id);
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
