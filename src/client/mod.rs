//! The client port: Redis clients talk to the cluster through any replica.
//!
//! `redis-cli -p 6380`, `redis-benchmark` and Redis client libraries work
//! unchanged. Each connection reads every request that has arrived (clients
//! pipeline), runs them in order through the same request path as the prompt
//! (`Node::execute`), and writes all the replies in one go. Consecutive
//! key-value requests of one pipeline travel together: their writes as one
//! queued item (one log entry, in order), their reads on one read index.
//!
//! Files: `resp.rs` reads requests and writes replies, `commands.rs` says what
//! each command means, this file serves connections.

mod commands;
mod resp;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use commands::ClientCommand;
use resp::Frame;

use crate::kv::{KvError, Reply, Request, Status};
use crate::node::Node;

/// Connections served at once; one more is told so and closed (as Redis does
/// at `maxclients`), so a flood of connections cannot exhaust file handles.
const MAX_CLIENTS: usize = 1024;
/// Requests taken from one connection's buffer before their replies are sent,
/// so a client that pipelines without end still gets answers as it goes.
const MAX_PIPELINE: usize = 1024;

/// Why the client port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve clients on {addr}: {why} (is another replica or a Redis server using it? choose another with --client-addr)")]
pub struct ListenError {
    addr: String,
    why: String,
}

/// Opens the client port, before the replica starts, so a taken port is
/// reported at once.
pub async fn bind(addr: &str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|e| ListenError {
        addr: addr.to_string(),
        why: e.to_string(),
    })
}

/// Accepts clients until the process ends.
pub async fn serve(listener: TcpListener, node: Node) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file handles, most likely: wait for some to close.
                tracing::warn!("accepting a client failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let mut out = BytesMut::new();
            Frame::error("ERR max number of clients reached").write_to(&mut out);
            tokio::spawn(async move {
                let _ = stream.write_all(&out).await;
            });
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &node).await {
                tracing::debug!("client {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn serve_connection(stream: TcpStream, node: &Node) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut output = BytesMut::with_capacity(16 * 1024);
    let mut requests_in = resp::RequestReader::default();
    loop {
        let mut requests = Vec::new();
        let mut unreadable = None;
        while requests.len() < MAX_PIPELINE {
            match requests_in.read(&mut input) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            }
        }
        if requests.is_empty() && unreadable.is_none() {
            if reader.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
            continue;
        }
        let quit = answer(node, requests, &mut output).await;
        if let Some(e) = &unreadable {
            // The rest of the stream cannot be trusted to start at a request.
            Frame::error(format!("ERR {e}")).write_to(&mut output);
        }
        writer.write_all(&output).await?;
        output.clear();
        if quit || unreadable.is_some() {
            return writer.shutdown().await;
        }
    }
}

/// Runs a pipeline's requests in order and writes their replies to `out`.
/// Returns true when the client said QUIT.
async fn answer(node: &Node, requests: Vec<Vec<Bytes>>, out: &mut BytesMut) -> bool {
    let mut run: Vec<Request> = Vec::new();
    for args in requests {
        let command = commands::parse(&args);
        if let Ok(ClientCommand::Kv(request)) = command {
            run.push(request);
            continue;
        }
        // Whatever comes next sees the effects of the requests before it.
        flush_run(node, &mut run, out).await;
        let reply = match command {
            Ok(ClientCommand::Kv(_)) => unreachable!("key-value requests joined the run"),
            Ok(ClientCommand::Constant(frame)) => frame,
            Ok(ClientCommand::Info(section)) => info(node, section.as_deref()).await,
            Ok(ClientCommand::DbSize) => match node.reader.count_keys().await {
                Ok((_, keys)) => Frame::Integer(keys as i64),
                Err(e) => Frame::error(format!("ERR {}", KvError::Storage(e))),
            },
            Ok(ClientCommand::Checksum) => match node.reader.checksum().await {
                Ok(sum) => Frame::bulk(crate::repl::format_checksum(&sum)),
                Err(e) => Frame::error(format!("ERR {}", KvError::Storage(e))),
            },
            Ok(ClientCommand::Membership(change)) => match node.change_membership(change).await {
                Ok(voters) => {
                    let ids: Vec<String> = voters.iter().map(u64::to_string).collect();
                    Frame::bulk(format!("OK members={}", ids.join(",")))
                }
                Err(e) => Frame::error(format!("ERR {e}")),
            },
            Ok(ClientCommand::Quit) => {
                Frame::ok().write_to(out);
                return true;
            }
            Err(message) => Frame::Error(message),
        };
        reply.write_to(out);
    }
    flush_run(node, &mut run, out).await;
    false
}

/// Executes the waiting key-value requests together and writes their replies.
async fn flush_run(node: &Node, run: &mut Vec<Request>, out: &mut BytesMut) {
    if run.is_empty() {
        return;
    }
    for reply in node.execute(std::mem::take(run)).await {
        let frame = match reply {
            Ok(Reply::Done) => Frame::ok(),
            Ok(Reply::Value(value)) => Frame::Bulk(value.map(Bytes::from)),
            Ok(Reply::Values(values)) => Frame::Array(
                values
                    .into_iter()
                    .map(|value| Frame::Bulk(value.map(Bytes::from)))
                    .collect(),
            ),
            Ok(Reply::Count(count)) => Frame::Integer(count as i64),
            Err(e) => Frame::error(format!("ERR {e}")),
        };
        frame.write_to(out);
    }
}

/// `INFO`: the key count is only taken when the Keyspace section is asked
/// for (plain `INFO` does), since it reads every key.
async fn info(node: &Node, section: Option<&str>) -> Frame {
    let wants_keyspace = section_wanted(section, "Keyspace");
    let keys = if wants_keyspace {
        match node.reader.count_keys().await {
            Ok((_, keys)) => Some(keys),
            Err(e) => return Frame::error(format!("ERR {}", KvError::Storage(e))),
        }
    } else {
        None
    };
    Frame::bulk(info_text(node, &node.status(), keys, section))
}

fn section_wanted(asked: Option<&str>, name: &str) -> bool {
    match asked {
        None | Some("all") | Some("default") | Some("everything") => true,
        Some(asked) => asked.eq_ignore_ascii_case(name),
    }
}

/// The text of `INFO`: sections of `name:value` lines, as Redis writes them.
fn info_text(node: &Node, status: &Status, keys: Option<u64>, section: Option<&str>) -> String {
    let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let server = [
        (
            "example_ondisk_version",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        // Client libraries and tools gate features on this; the commands
        // served here behave as Redis 7.0's do.
        ("redis_version", "7.0.0".to_string()),
        ("redis_mode", "standalone".to_string()),
        ("process_id", std::process::id().to_string()),
        ("replica_id", node.id.to_string()),
        ("cluster_id", node.cluster_id.clone()),
    ];
    let mut raft = named(&[
        ("role", status.role.to_string()),
        (
            "leader",
            status.leader.map_or("none".into(), |id| id.to_string()),
        ),
        ("term", status.term.to_string()),
        ("last_log_index", status.last_log_index.to_string()),
        ("commit_index", status.committed.to_string()),
        ("applied_index", status.applied.to_string()),
        ("first_log_index", status.first_log_index.to_string()),
        (
            "snapshot_index",
            status
                .snapshot_index
                .map_or("none".into(), |i| i.to_string()),
        ),
        ("snapshot_bytes", status.snapshot_bytes.to_string()),
        (
            "snapshots_installed",
            status.snapshots_installed.to_string(),
        ),
        ("members", ids(&status.voters)),
        ("learners", ids(&status.learners)),
        ("recovered_at", status.recovered_at.to_string()),
        ("replayed", status.replayed.to_string()),
    ]);
    // One line per member, as Redis lists its replicas (`slave0:ip=...`);
    // at the leader with how far each member's log matches, and its lag.
    for member in &status.members {
        let mut line = format!(
            "role={},addr={}",
            if member.voter { "voter" } else { "learner" },
            member.addr
        );
        if status.role == "leader" {
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
    let keyspace = [(
        "db0",
        format!("keys={},expires=0,avg_ttl=0", keys.unwrap_or(0)),
    )];
    let sections = [
        ("Server", named(&server)),
        ("Raft", raft),
        ("Keyspace", named(&keyspace)),
    ];
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
