//! The answering side: accepts connections from peers, checks who calls,
//! and hands each request to the [`PeerService`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::handshake::{self, Callee, ClusterSecret};
use super::{frame_codec, FrameEncoding, PeerRequest, PeerResponse, SnapshotChunk};
use crate::store::snapshot::Snapshot;
use crate::store::snapshot::{Inbox, SnapshotFile};
use crate::types::{NodeId, Vote};

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

/// What the Raft port answers with. The transport reads frames, checks who
/// is calling (`handshake.rs`) and puts snapshot chunks back together; what
/// each request means, and whether to accept it, is the service's: the Raft
/// node implements it (`peer_service.rs`), and nothing here decides policy.
pub trait PeerService: Clone + Send + Sync + 'static {
    /// Answers one request from replica `from`: anything but a snapshot chunk.
    fn answer(
        &self,
        from: NodeId,
        request: PeerRequest,
    ) -> impl Future<Output = PeerResponse> + Send;

    /// Before a snapshot chunk from a sender with `sender_vote` is stored:
    /// `Ok(answer)` to take it (the answer to a chunk that is not the last),
    /// `Err(answer)` to turn the sender away.
    fn admit_snapshot_chunk(
        &self,
        sender_vote: &Vote,
    ) -> impl Future<Output = Result<PeerResponse, PeerResponse>> + Send;

    /// A snapshot received whole from replica `from`: check and install it.
    fn install_snapshot(
        &self,
        from: NodeId,
        sender_vote: Vote,
        snapshot: Snapshot,
    ) -> impl Future<Output = PeerResponse> + Send;
}

/// Serves peers on `listener` until the process ends, answering through
/// `service`. Snapshots sent by a leader are written into `inbox`.
pub async fn serve(
    listener: TcpListener,
    service: impl PeerService,
    secret: Option<ClusterSecret>,
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
        let service = service.clone();
        let secret = secret.clone();
        let cluster_id = cluster_id.clone();
        let incoming = incoming.clone();
        tokio::spawn(async move {
            let me = Callee {
                cluster_id: &cluster_id,
                my_id,
                secret: secret.as_ref(),
            };
            if let Err(why) = serve_connection(stream, peer_addr, &service, incoming, me).await {
                tracing::warn!("closed connection from {peer_addr}: {why}");
            }
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer_addr: SocketAddr,
    service: &impl PeerService,
    incoming: IncomingSnapshot,
    me: Callee<'_>,
) -> Result<(), String> {
    let mut frames = Framed::new(stream, frame_codec());

    // Nothing below runs for a caller that was not admitted (handshake.rs).
    let Some((from, encoding)) = handshake::admit(&mut frames, &me, peer_addr).await? else {
        return Ok(());
    };

    while let Some(request) = read_request(&mut frames, encoding)
        .await
        .map_err(|e| format!("replica {from}: {e}"))?
    {
        let response = match request {
            PeerRequest::InstallSnapshot(chunk) => match chunk.data() {
                Ok(data) => receive_snapshot_chunk(service, &incoming, from, chunk, &data).await,
                Err(why) => {
                    let refusal = PeerResponse::Refused(why.clone());
                    let _ = send(&mut frames, encoding, &refusal).await;
                    return Err(format!("replica {from}: {why}"));
                }
            },
            PeerRequest::Hello { .. } | PeerRequest::Proof { .. } | PeerRequest::ProofRefused => {
                PeerResponse::Refused("hello was already said".into())
            }
            request => service.answer(from, request).await,
        };
        send(&mut frames, encoding, &response).await?;
    }
    Ok(())
}

/// Receives one chunk of a snapshot (`client.rs`, `full_snapshot`, sends
/// them in order) and, after the last, hands the whole file to the service.
async fn receive_snapshot_chunk(
    service: &impl PeerService,
    incoming: &IncomingSnapshot,
    from: NodeId,
    chunk: SnapshotChunk,
    data: &[u8],
) -> PeerResponse {
    let answer = match service.admit_snapshot_chunk(&chunk.vote).await {
        Ok(answer) => answer,
        Err(refusal) => return refusal,
    };
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
    service.install_snapshot(from, chunk.vote, snapshot).await
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

/// The next request, `None` at a clean close; an error for anything unreadable.
async fn read_request(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    encoding: FrameEncoding,
) -> Result<Option<PeerRequest>, String> {
    match frames.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(format!("bad frame: {e}")),
        Some(Ok(frame)) => crate::heavy::run(frame.len(), || encoding.decode(&frame))
            .map(Some)
            .map_err(|e| format!("unreadable request: {e}")),
    }
}

async fn send(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    encoding: FrameEncoding,
    response: &PeerResponse,
) -> Result<(), String> {
    let body = encoding.encode(response);
    frames
        .send(bytes::Bytes::from(body))
        .await
        .map_err(|e| format!("sending the answer failed: {e}"))
}
