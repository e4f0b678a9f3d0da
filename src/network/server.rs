//! The answering side: accepts connections from peers and hands each request to openraft.

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::{frame_codec, Network, PeerRequest, PeerResponse};
use crate::kv::leader_read_index;
use crate::types::{NodeId, Raft};

/// Serves peers on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    network: Network,
    cluster_id: String,
    my_id: NodeId,
) {
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
        tokio::spawn(async move {
            if let Err(why) = serve_connection(stream, raft, network, &cluster_id, my_id).await {
                tracing::warn!("closed connection from {peer_addr}: {why}");
            }
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    raft: Raft,
    network: Network,
    cluster_id: &str,
    my_id: NodeId,
) -> Result<(), String> {
    let mut frames = Framed::new(stream, frame_codec());

    let from = match read_request(&mut frames).await? {
        None => return Ok(()),
        Some(PeerRequest::Hello {
            cluster_id: theirs,
            from,
            to,
        }) => {
            let refusal = if theirs != cluster_id {
                Some(format!(
                    "this is replica {my_id} of cluster '{cluster_id}', not of '{theirs}'"
                ))
            } else if to != my_id && to != 0 {
                // 0 is no replica's id: a replica joining through an address
                // does not know who serves it yet.
                Some(format!(
                    "this address serves replica {my_id}, not replica {to}"
                ))
            } else {
                None
            };
            if let Some(why) = refusal {
                let _ = send(&mut frames, &PeerResponse::Refused(why.clone())).await;
                return Err(format!("refused replica {from}: {why}"));
            }
            send(&mut frames, &PeerResponse::Welcome).await?;
            from
        }
        Some(_) => {
            let why = "a connection must start with hello".to_string();
            let _ = send(&mut frames, &PeerResponse::Refused(why.clone())).await;
            return Err(why);
        }
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
            PeerRequest::InstallSnapshot(chunk) => match chunk.try_into() {
                Ok(rpc) => PeerResponse::InstallSnapshot(raft.install_snapshot(rpc).await),
                Err(why) => {
                    let _ = send(&mut frames, &PeerResponse::Refused(why.clone())).await;
                    return Err(format!("replica {from}: {why}"));
                }
            },
            PeerRequest::Propose(proposal) => {
                PeerResponse::Propose(raft.client_write(proposal).await)
            }
            PeerRequest::ReadIndex => PeerResponse::ReadIndex(leader_read_index(&raft).await),
            PeerRequest::ChangeMembership(change) => PeerResponse::ChangeMembership(
                crate::membership::change_at_leader(&raft, &network, change).await,
            ),
            PeerRequest::Removed => {
                let _ = send(&mut frames, &PeerResponse::Welcome).await;
                crate::membership::stop_as_removed(my_id);
            }
            PeerRequest::Hello { .. } => PeerResponse::Refused("hello was already said".into()),
        };
        send(&mut frames, &response).await?;
    }
    Ok(())
}

/// The next request, `None` at a clean close; an error for anything unreadable.
async fn read_request(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Result<Option<PeerRequest>, String> {
    match frames.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(format!("bad frame: {e}")),
        Some(Ok(frame)) => serde_json::from_slice(&frame)
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
