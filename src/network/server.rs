//! The answering side: accepts connections from peers and hands each request to openraft.

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use openraft::errors::RaftError;
use openraft::raft::SnapshotResponse;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::handshake::{self, Callee};
use super::{frame_codec, Network, PeerRequest, PeerResponse, SnapshotChunk};
use crate::kv::leader_read_index;
use crate::store::snapshot::{self, Inbox, SnapshotFile};
use crate::types::{NodeId, Raft, Snapshot, Vote};

/// A snapshot on its way in, chunk by chunk. There is one at a time per
/// replica, whichever connection its chunks arrive on.
#[derive(Clone)]
struct IncomingSnapshot {
    inbox: Inbox,
    receiving: Arc<tokio::sync::Mutex<Option<Receiving>>>,
}

/// The transfer being received, written up to `next_offset`. Dropping it
/// (a new transfer began, or this one was refused) removes its file.
struct Receiving {
    transfer: String,
    next_offset: u64,
    file: SnapshotFile,
}

/// Serves peers on `listener` until the process ends. Snapshots sent by a
/// leader are written into `inbox`.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    network: Network,
    inbox: Inbox,
    cluster_id: String,
    my_id: NodeId,
) {
    let incoming = IncomingSnapshot {
        inbox,
        receiving: Arc::default(),
    };
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let network = network.clone();
        let cluster_id = cluster_id.clone();
        let incoming = incoming.clone();
        tokio::spawn(async move {
            if let Err(why) = serve_connection(
                stream,
                peer_addr,
                raft,
                network,
                incoming,
                &cluster_id,
                my_id,
            )
            .await
            {
                tracing::warn!("closed connection from {peer_addr}: {why}");
            }
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer_addr: SocketAddr,
    raft: Raft,
    network: Network,
    incoming: IncomingSnapshot,
    cluster_id: &str,
    my_id: NodeId,
) -> Result<(), String> {
    let mut frames = Framed::new(stream, frame_codec());

    // Nothing below runs for a caller that was not admitted (handshake.rs).
    let me = Callee {
        cluster_id,
        my_id,
        secret: network.secret(),
    };
    let Some(from) = handshake::admit(&mut frames, &me, peer_addr).await? else {
        return Ok(());
    };

    while let Some(request) = read_request(&mut frames)
        .await
        .map_err(|e| format!("replica {from}: {e}"))?
    {
        let response = match request {
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => match crate::membership::removed_while_away(&raft, &rpc) {
                Some(why) => PeerResponse::NotAMember(why),
                None => PeerResponse::Vote(raft.vote(rpc).await),
            },
            PeerRequest::PreVote(rpc) => match crate::membership::removed_while_away(&raft, &rpc) {
                Some(why) => PeerResponse::NotAMember(why),
                None => PeerResponse::Vote(raft.pre_vote(rpc).await),
            },
            PeerRequest::InstallSnapshot(chunk) => match chunk.data() {
                Ok(data) => receive_snapshot_chunk(&raft, &incoming, from, chunk, &data).await,
                Err(why) => {
                    let _ = send(&mut frames, &PeerResponse::Refused(why.clone())).await;
                    return Err(format!("replica {from}: {why}"));
                }
            },
            PeerRequest::Propose(proposal) => {
                PeerResponse::Propose(raft.client_write(proposal.stamp()).await)
            }
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(leader_read_index(&raft).await),
            PeerRequest::ChangeMembership(change) => PeerResponse::ChangeMembership(
                crate::membership::change_at_leader(&raft, &network, change).await,
            ),
            PeerRequest::TransferLeader(request) => PeerResponse::TransferLeader(
                raft.handle_transfer_leader(request)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            PeerRequest::Removed => {
                network
                    .removal()
                    .report(format!("replica {from}, the leader, said so"));
                PeerResponse::Welcome
            }
            PeerRequest::Founded => match raft.is_initialized().await {
                Ok(founded) => PeerResponse::Founded(founded),
                Err(e) => PeerResponse::Refused(format!("this replica has stopped: {e}")),
            },
            PeerRequest::Hello { .. } | PeerRequest::Proof { .. } | PeerRequest::ProofRefused => {
                PeerResponse::Refused("hello was already said".into())
            }
        };
        send(&mut frames, &response).await?;
    }
    Ok(())
}

/// Receives one chunk of a snapshot (`client.rs`, `full_snapshot`, sends
/// them in order) and, after the last, installs the snapshot. A finished
/// snapshot is read through before openraft is given it: openraft stops a
/// replica whose install fails, so a damaged file must be refused here, where
/// refusing costs nothing: the sender is told, checks its own file again, and
/// sends a whole one.
async fn receive_snapshot_chunk(
    raft: &Raft,
    incoming: &IncomingSnapshot,
    from: NodeId,
    chunk: SnapshotChunk,
    data: &[u8],
) -> PeerResponse {
    // A sender with an older vote is told ours (and steps down) before it
    // sends a whole snapshot for nothing.
    let my_vote = match raft.with_raft_state(|state| *state.vote_ref()).await {
        Ok(vote) => vote,
        Err(fatal) => return PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
    };
    // Votes are only partly ordered: anything not at least ours is refused.
    let current = matches!(
        chunk.vote.partial_cmp(&my_vote),
        Some(Ordering::Greater | Ordering::Equal)
    );
    let answer = PeerResponse::InstallSnapshot(Ok(SnapshotResponse { vote: my_vote }));
    if !current {
        return answer;
    }
    let finished = match write_chunk(incoming, &chunk, data).await {
        Ok(finished) => finished,
        Err(refusal) => return refusal,
    };
    let Some(file) = finished else {
        return answer;
    };
    let snapshot = Snapshot {
        meta: chunk.meta,
        snapshot: file,
    };
    check_and_install(raft, from, chunk.vote, snapshot).await
}

/// Writes a chunk at its place in the transfer it belongs to; a chunk at
/// offset 0 begins a new transfer. Returns the file once the last chunk is
/// in, or the answer that refuses a chunk out of order (the sender then
/// starts over).
async fn write_chunk(
    incoming: &IncomingSnapshot,
    chunk: &SnapshotChunk,
    data: &[u8],
) -> Result<Option<SnapshotFile>, PeerResponse> {
    let mut receiving = incoming.receiving.lock().await;
    if chunk.offset == 0 {
        // Whatever came before was abandoned: its file goes as it is dropped.
        *receiving = None;
        let file = incoming.inbox.create().map_err(|e| {
            PeerResponse::Refused(format!("cannot make room for the snapshot: {e}"))
        })?;
        *receiving = Some(Receiving {
            transfer: chunk.transfer.clone(),
            next_offset: 0,
            file,
        });
    }
    let in_order = receiving
        .as_ref()
        .is_some_and(|r| r.transfer == chunk.transfer && r.next_offset == chunk.offset);
    let Some(current) = receiving.as_mut().filter(|_| in_order) else {
        return Err(PeerResponse::Refused(format!(
            "snapshot chunk at offset {} of transfer {} is not the one expected",
            chunk.offset, chunk.transfer
        )));
    };
    let written = current.file.file.write_all(data).await;
    let written = match chunk.done {
        true => written.and(current.file.file.flush().await),
        false => written,
    };
    if let Err(e) = written {
        *receiving = None;
        return Err(PeerResponse::Refused(format!(
            "cannot write the snapshot: {e}"
        )));
    }
    current.next_offset += data.len() as u64;
    if !chunk.done {
        return Ok(None);
    }
    Ok(receiving.take().map(|done| done.file))
}

/// The last step of [`receive_snapshot_chunk`], for a snapshot received whole.
async fn check_and_install(
    raft: &Raft,
    from: NodeId,
    sender_vote: Vote,
    snapshot: Snapshot,
) -> PeerResponse {
    // openraft ignores a snapshot that holds nothing past what is committed
    // here, and answers at once. That quick answer is what tells a sender that
    // gave up waiting on a long install that it is done: reading the file
    // first would make it late every time.
    let committed = match raft
        .with_raft_state(|state| state.local_committed().copied())
        .await
    {
        Ok(committed) => committed,
        Err(fatal) => return PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
    };
    let checked = if snapshot.meta.last_log_id > committed {
        read_through(&snapshot).await
    } else {
        Ok(())
    };
    if let Err(damage) = checked {
        crate::logging::note(&format!(
            "refused snapshot {} (state at {:?}) from replica {from}: {damage}; kept the current state",
            snapshot.snapshot.path().display(),
            snapshot.meta.last_log_id,
        ));
        return PeerResponse::SnapshotDamaged(damage);
    }
    match raft.install_full_snapshot(sender_vote, snapshot).await {
        Ok(response) => PeerResponse::InstallSnapshot(Ok(response)),
        Err(fatal) => PeerResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
    }
}

/// Reads a received snapshot through, off the async workers.
async fn read_through(received: &Snapshot) -> Result<(), String> {
    let file = received
        .snapshot
        .file
        .try_clone()
        .await
        .map_err(|e| format!("could not read the received file: {e}"))?
        .into_std()
        .await;
    let announced = received.meta.clone();
    tokio::task::spawn_blocking(move || snapshot::check_received(file, &announced))
        .await
        .map_err(|e| format!("the check did not finish: {e}"))?
        .map_err(|e| e.to_string())
}

/// The next request, `None` at a clean close; an error for anything unreadable.
async fn read_request(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Result<Option<PeerRequest>, String> {
    match frames.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(format!("bad frame: {e}")),
        Some(Ok(frame)) => crate::heavy::run(frame.len(), || serde_json::from_slice(&frame))
            .map(Some)
            .map_err(|e| format!("unreadable request: {e}")),
    }
}

async fn send(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    response: &PeerResponse,
) -> Result<(), String> {
    let body = serde_json::to_vec(response).expect("peer responses serialise");
    frames
        .send(bytes::Bytes::from(body))
        .await
        .map_err(|e| format!("sending the answer failed: {e}"))
}
