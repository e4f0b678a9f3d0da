//! The opening of every Raft connection: who calls whom, and, when the cluster
//! has a secret, proof on both sides that they hold it.
//!
//! The cluster id is a name, not a secret: it keeps two clusters from mixing
//! by mistake. Anyone who can reach a Raft port could otherwise append, vote,
//! install a snapshot, propose or ask for a read index. With a cluster secret
//! (`--cluster-secret-file FILE`, or `EXAMPLE_ONDISK_CLUSTER_SECRET`) only a
//! peer that proves it holds the secret gets past the opening.
//!
//! ## The exchange (handshake format 2)
//!
//! ```text
//! caller -> Hello { cluster_id, from, to, handshake: 2, nonce: Nc, frames: ["binary"] }
//! callee <- Challenge { nonce: Ns, proof: HMAC(secret, "callee" | link | Nc | Ns) }
//! caller -> Proof { proof: HMAC(secret, "caller" | link | Nc | Ns) }
//!           (or ProofRefused: the callee's proof was wrong, and the caller stops)
//! callee <- Admitted { frames } (or Welcome), or Unauthenticated(why)
//! ```
//!
//! `frames` lists the frame encodings the caller speaks besides JSON; the
//! callee answers a hello that lists some with `Admitted`, naming the one all
//! later frames use, and one that lists none (a replica of a release before
//! them) with `Welcome`: JSON, as before (`network/mod.rs`). The whole
//! opening is JSON, whatever is agreed.
//!
//! `link` is the cluster id and both replica ids as the hello gave them. Nonces
//! are 32 fresh bytes from the operating system. Without a secret on either
//! side the caller sends no nonce and the callee answers `Welcome` at once, as
//! replicas before the secret did (their hello has no `handshake` field, read
//! as format 1): a cluster without a secret behaves as it always has, and
//! replicas can be upgraded one at a time before a secret is given to all.
//!
//! ## Why this is safe
//!
//! 1. **The secret never crosses the wire.** Only MACs over fresh nonces do.
//!    Sending the secret itself (as a Redis client sends its password) would
//!    hand it to anyone who reads one opening, or to any process that answers
//!    on a replica's address. A MAC tells a listener nothing it can reuse.
//! 2. **A recorded opening cannot be replayed.** Each side's proof covers the
//!    nonce the *other* side just chose, so a proof fits one connection only.
//! 3. **A proof cannot be reflected.** The two proofs are labelled "callee"
//!    and "caller": a callee's proof sent back is no caller's proof.
//! 4. **A proof is for one link.** It covers the cluster id and both replica
//!    ids, so a proof for another cluster (with the same secret) or another
//!    pair of replicas is refused.
//! 5. **Checked in constant time** (`hmac`'s `verify_slice`), so the time of a
//!    refusal does not tell how much of a forged proof was right.
//! 6. **Mutual.** The caller checks the callee too, before it sends anything,
//!    so a replica with the secret never sends entries or votes to a process
//!    that merely listens on a member's address.
//! 7. **Nothing reaches openraft before the opening is done.** `server.rs`
//!    reads requests only after [`admit`] returns a replica id; a refused peer
//!    changes no state: it only gets one `note:` line in the log (and on
//!    stderr), at most once a minute per peer and reason.
//! 8. **One side with a secret, the other without, refuse each other** with a
//!    line that says so, on both sides: a caller with a secret never accepts a
//!    bare `Welcome`, and a callee with one never admits a hello without a
//!    nonce. Neither waits for a step the other will not take.
//!
//! ## What it does not protect
//!
//! - **Confidentiality.** There is no TLS on the Raft port: entries, snapshots
//!   and votes travel in clear. Whoever can read the traffic reads the data.
//! - **The traffic after the opening.** Frames carry no MAC; someone on the
//!   path who can inject into a TCP stream can alter or take over an admitted
//!   connection, or relay a whole opening between two real members and then
//!   speak on the connection it relayed (the proofs are not bound to the TCP
//!   connection). Mutual TLS with a cluster CA would stop all of this; not
//!   built yet.
//! - **A guessable secret.** A recorded opening lets an attacker test guesses
//!   offline, so the secret must be random and long: at least
//!   [`MIN_SECRET_LEN`] bytes are required; 32 random bytes in base64 are
//!   recommended (`head -c 32 /dev/urandom | base64`).
//! - **Members from each other.** Any holder of the secret is a full member:
//!   the `from` it names is believed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::{FrameEncoding, PeerRequest, PeerResponse};
use crate::logging;
use crate::types::NodeId;

/// The handshake format this replica speaks: 2 adds the nonces and proofs.
/// A hello without a `handshake` field is format 1 (replicas before the
/// secret), which a replica without a secret still admits.
pub const HANDSHAKE_FORMAT: u32 = 2;

/// The format of a hello that does not name one.
pub fn first_format() -> u32 {
    1
}

/// The variable a cluster secret may come from instead of a file.
pub const SECRET_VARIABLE: &str = "EXAMPLE_ONDISK_CLUSTER_SECRET";

/// The shortest secret accepted, in bytes: a recorded opening lets an attacker
/// try guesses offline, so a short secret is no secret.
pub const MIN_SECRET_LEN: usize = 16;

/// Bytes of randomness in each nonce.
const NONCE_LEN: usize = 32;

/// How long a callee waits for a caller to finish the opening.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(10);

type Frames = Framed<TcpStream, LengthDelimitedCodec>;
type HmacSha256 = Hmac<Sha256>;

/// Why no cluster secret could be read. Printed as one line at start.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read --cluster-secret-file {path}: {why}")]
    Unreadable { path: PathBuf, why: std::io::Error },
    #[error("{origin} holds an empty cluster secret")]
    Empty { origin: String },
    #[error("{origin} holds more than one line; a cluster secret is one line")]
    SeveralLines { origin: String },
    #[error(
        "{origin} holds a cluster secret of {len} bytes; it needs at least {MIN_SECRET_LEN} \
         (make one with: head -c 32 /dev/urandom | base64)"
    )]
    TooShort { origin: String, len: usize },
}

/// The secret every member of the cluster holds. Cheap to clone; its bytes
/// are never printed.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret in `file` (one line; the line ending is not part of it),
    /// else in [`SECRET_VARIABLE`], else none: the port stays open, as before.
    pub fn configured(file: Option<&Path>) -> Result<Option<ClusterSecret>, SecretError> {
        if let Some(path) = file {
            let text = std::fs::read(path).map_err(|why| SecretError::Unreadable {
                path: path.to_path_buf(),
                why,
            })?;
            let line = text.strip_suffix(b"\n").unwrap_or(&text);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let origin = format!("--cluster-secret-file {}", path.display());
            return ClusterSecret::new(line.to_vec(), origin).map(Some);
        }
        match std::env::var_os(SECRET_VARIABLE) {
            None => Ok(None),
            Some(value) => {
                ClusterSecret::new(value.into_encoded_bytes(), SECRET_VARIABLE.into()).map(Some)
            }
        }
    }

    /// `origin` names where the bytes came from, for the error line.
    fn new(bytes: Vec<u8>, origin: String) -> Result<ClusterSecret, SecretError> {
        if bytes.is_empty() {
            return Err(SecretError::Empty { origin });
        }
        if bytes.contains(&b'\n') {
            return Err(SecretError::SeveralLines { origin });
        }
        if bytes.len() < MIN_SECRET_LEN {
            let len = bytes.len();
            return Err(SecretError::TooShort { origin, len });
        }
        Ok(ClusterSecret(bytes.into()))
    }

    /// The MAC one side of `link` shows: over the role, the link and both
    /// nonces. The cluster id, the one field of varying length, goes after
    /// its length, so that no two different links give the same bytes even
    /// if fields are added.
    fn mac(&self, role: Role, link: &Link, nonces: &Nonces) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(b"example-ondisk raft handshake 2\0");
        mac.update(role.label());
        mac.update(&(link.cluster_id.len() as u64).to_be_bytes());
        mac.update(link.cluster_id.as_bytes());
        mac.update(&link.from.to_be_bytes());
        mac.update(&link.to.to_be_bytes());
        mac.update(&nonces.caller.0);
        mac.update(&nonces.callee.0);
        mac
    }

    fn proof(&self, role: Role, link: &Link, nonces: &Nonces) -> String {
        encode(&self.mac(role, link, nonces).finalize().into_bytes())
    }

    /// Whether `offered` is the proof of `role` for this link and nonces,
    /// compared in constant time.
    fn is_proof(&self, role: Role, link: &Link, nonces: &Nonces, offered: &str) -> bool {
        match decode(offered) {
            Some(bytes) => self.mac(role, link, nonces).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

/// Which side of the opening a proof comes from.
#[derive(Clone, Copy)]
enum Role {
    Caller,
    Callee,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Caller => b"caller\0",
            Role::Callee => b"callee\0",
        }
    }
}

/// What a connection joins, as the caller's hello names it.
pub struct Link<'a> {
    pub cluster_id: &'a str,
    pub from: NodeId,
    pub to: NodeId,
}

/// 32 fresh random bytes.
struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    fn fresh() -> Result<Nonce, String> {
        let mut bytes = [0u8; NONCE_LEN];
        getrandom::fill(&mut bytes)
            .map_err(|e| format!("no randomness from the operating system: {e}"))?;
        Ok(Nonce(bytes))
    }

    fn text(&self) -> String {
        encode(&self.0)
    }

    fn parse(text: &str) -> Option<Nonce> {
        decode(text)?.try_into().ok().map(Nonce)
    }
}

struct Nonces {
    caller: Nonce,
    callee: Nonce,
}

fn encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .ok()
}

// ---------------------------------------------------------------------------
// The calling side
// ---------------------------------------------------------------------------

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The callee refused the hello (another cluster, another replica).
    #[error("refused us: {0}")]
    Refused(String),
    /// The opening failed on the cluster secret, on either side.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Transport(String),
    #[error("did not answer hello as a replica would")]
    Unexpected,
}

/// Opens a connection to replica `link.to` at `addr` from this one: sends the
/// hello and, with a secret, completes the exchange in the module comment.
/// Returns the encoding of the frames that follow. A failure on the secret
/// is also noted (see [`note_refusal`]).
pub async fn open(
    frames: &mut Frames,
    link: &Link<'_>,
    addr: &str,
    secret: Option<&ClusterSecret>,
) -> Result<FrameEncoding, OpenError> {
    let callee = format!("replica {} at {addr}", link.to);
    match secret {
        Some(secret) => open_with_secret(frames, link, &callee, secret).await,
        None => open_without_secret(frames, link, &callee).await,
    }
}

fn hello(link: &Link<'_>, nonce: Option<&Nonce>) -> PeerRequest {
    PeerRequest::Hello {
        cluster_id: link.cluster_id.to_string(),
        from: link.from,
        to: link.to,
        handshake: HANDSHAKE_FORMAT,
        nonce: nonce.map(Nonce::text),
        frames: FrameEncoding::offered(),
    }
}

/// The frame encoding a welcome names: JSON for a bare `Welcome`, from a
/// replica of a release before frame encodings (or one playing it).
fn welcomed(response: &PeerResponse) -> Option<FrameEncoding> {
    match response {
        PeerResponse::Welcome => Some(FrameEncoding::Json),
        PeerResponse::Admitted { frames } => Some(*frames),
        _ => None,
    }
}

/// A hello as before the secret (no nonce): a welcome is all there is to it.
async fn open_without_secret(
    frames: &mut Frames,
    link: &Link<'_>,
    callee: &str,
) -> Result<FrameEncoding, OpenError> {
    send(frames, &hello(link, None)).await?;
    let answer = receive(frames).await?;
    if let Some(encoding) = welcomed(&answer) {
        return Ok(encoding);
    }
    match answer {
        PeerResponse::Refused(why) => Err(OpenError::Refused(why)),
        PeerResponse::Unauthenticated(why) => {
            Err(refused(format!("{callee} refused this replica: {why}")))
        }
        PeerResponse::Challenge { .. } => Err(refused(format!(
            "{callee} asks for a cluster secret and this replica has none: \
             give it --cluster-secret-file or {SECRET_VARIABLE}"
        ))),
        _ => Err(OpenError::Unexpected),
    }
}

/// The caller's side of the exchange in the module comment. The callee's
/// proof is checked before this replica shows its own or sends anything.
async fn open_with_secret(
    frames: &mut Frames,
    link: &Link<'_>,
    callee: &str,
    secret: &ClusterSecret,
) -> Result<FrameEncoding, OpenError> {
    let caller_nonce = Nonce::fresh().map_err(OpenError::Transport)?;
    send(frames, &hello(link, Some(&caller_nonce))).await?;
    let (theirs, proof) = match receive(frames).await? {
        PeerResponse::Challenge { nonce, proof } => (nonce, proof),
        PeerResponse::Refused(why) => return Err(OpenError::Refused(why)),
        PeerResponse::Unauthenticated(why) => {
            return Err(refused(format!("{callee} refused this replica: {why}")));
        }
        PeerResponse::Welcome | PeerResponse::Admitted { .. } => {
            return Err(refused(format!(
                "{callee} admitted this replica without checking the cluster secret \
                 (it has none, or runs a version without one): not talking to it"
            )));
        }
        _ => return Err(OpenError::Unexpected),
    };
    let nonces = Nonce::parse(&theirs).map(|callee_nonce| Nonces {
        caller: caller_nonce,
        callee: callee_nonce,
    });
    let nonces = match nonces {
        Some(nonces) if secret.is_proof(Role::Callee, link, &nonces, &proof) => nonces,
        _ => {
            let _ = send(frames, &PeerRequest::ProofRefused).await;
            return Err(refused(format!(
                "{callee} could not prove it holds the cluster secret \
                 (the two hold different secrets, or it is not a member): \
                 not talking to it"
            )));
        }
    };
    let proof = secret.proof(Role::Caller, link, &nonces);
    send(frames, &PeerRequest::Proof { proof }).await?;
    let answer = receive(frames).await?;
    if let Some(encoding) = welcomed(&answer) {
        return Ok(encoding);
    }
    match answer {
        PeerResponse::Unauthenticated(why) => {
            Err(refused(format!("{callee} refused this replica: {why}")))
        }
        PeerResponse::Refused(why) => Err(OpenError::Refused(why)),
        _ => Err(OpenError::Unexpected),
    }
}

/// A refusal on the secret, as the caller sees it: noted, and returned.
fn refused(text: String) -> OpenError {
    note_refusal(&text);
    OpenError::Unauthenticated(text)
}

async fn send(frames: &mut Frames, request: &PeerRequest) -> Result<(), OpenError> {
    let body = serde_json::to_vec(request).expect("peer requests serialise");
    frames
        .send(bytes::Bytes::from(body))
        .await
        .map_err(|e| OpenError::Transport(e.to_string()))
}

async fn receive(frames: &mut Frames) -> Result<PeerResponse, OpenError> {
    match frames.next().await {
        Some(Ok(frame)) => serde_json::from_slice(&frame).map_err(|_| OpenError::Unexpected),
        Some(Err(e)) => Err(OpenError::Transport(e.to_string())),
        None => Err(OpenError::Transport("connection closed".into())),
    }
}

// ---------------------------------------------------------------------------
// The answering side
// ---------------------------------------------------------------------------

/// This replica, as the answering side of an opening.
pub struct Callee<'a> {
    pub cluster_id: &'a str,
    pub my_id: NodeId,
    pub secret: Option<&'a ClusterSecret>,
}

/// Reads a caller's opening and admits or refuses it. Returns the caller's
/// replica id and the encoding of the frames that follow once admitted;
/// `Ok(None)` if it closed before saying hello;
/// `Err` (for the log) when refused or cut off, after telling the caller why.
/// The whole opening must be done within [`ADMIT_TIMEOUT`].
pub async fn admit(
    frames: &mut Frames,
    me: &Callee<'_>,
    peer_addr: SocketAddr,
) -> Result<Option<(NodeId, FrameEncoding)>, String> {
    tokio::time::timeout(ADMIT_TIMEOUT, admit_in_time(frames, me, peer_addr))
        .await
        .unwrap_or_else(|_| Err(format!("no complete hello within {ADMIT_TIMEOUT:?}")))
}

/// A caller's hello, as read.
struct Hello {
    cluster_id: String,
    from: NodeId,
    to: NodeId,
    handshake: u32,
    nonce: Option<String>,
    frames: Vec<String>,
}

impl Hello {
    /// The welcome for this hello, and the encoding it agrees on: a caller
    /// that offered no encodings gets the bare `Welcome` of old, and JSON;
    /// so does every caller of a replica that speaks only JSON (one of the
    /// previous release, or a test playing it).
    fn welcome(&self) -> (PeerResponse, FrameEncoding) {
        if self.frames.is_empty() || FrameEncoding::offered().is_empty() {
            return (PeerResponse::Welcome, FrameEncoding::Json);
        }
        let frames = FrameEncoding::agree(&self.frames);
        (PeerResponse::Admitted { frames }, frames)
    }
}

async fn admit_in_time(
    frames: &mut Frames,
    me: &Callee<'_>,
    peer_addr: SocketAddr,
) -> Result<Option<(NodeId, FrameEncoding)>, String> {
    let hello = match read(frames).await? {
        None => return Ok(None),
        Some(PeerRequest::Hello {
            cluster_id,
            from,
            to,
            handshake,
            nonce,
            frames,
        }) => Hello {
            cluster_id,
            from,
            to,
            handshake,
            nonce,
            frames,
        },
        Some(_) => return refuse(frames, "a connection must start with hello".into()).await,
    };
    if let Some(why) = not_for_me(me, &hello) {
        return refuse(frames, why).await;
    }
    let my_id = me.my_id;
    let caller = format!("replica {} (from {})", hello.from, peer_addr.ip());
    let (welcome, encoding) = hello.welcome();
    match (me.secret, &hello.nonce) {
        (None, None) => send_answer(frames, &welcome).await?,
        (Some(secret), Some(nonce)) => {
            let link = Link {
                cluster_id: &hello.cluster_id,
                from: hello.from,
                to: hello.to,
            };
            let welcome = &welcome;
            challenge(frames, secret, &link, nonce, &caller, my_id, welcome).await?;
        }
        (None, Some(_)) => {
            note_refusal(&format!(
                "refused {caller}: it offers a cluster secret and this replica has none \
                 (give every replica the same --cluster-secret-file)"
            ));
            let why = format!(
                "replica {my_id} has no cluster secret and checks none: give it the same \
                 --cluster-secret-file or {SECRET_VARIABLE}"
            );
            return unauthenticated(frames, why).await;
        }
        (Some(_), None) => {
            note_refusal(&format!(
                "refused {caller}: it offers no cluster secret (started without \
                 --cluster-secret-file or {SECRET_VARIABLE}, or a version without one)"
            ));
            let why = format!(
                "replica {my_id} admits only holders of the cluster secret: give this \
                 replica --cluster-secret-file or {SECRET_VARIABLE}"
            );
            return unauthenticated(frames, why).await;
        }
    }
    Ok(Some((hello.from, encoding)))
}

/// Why a hello is not for this replica, secret or not: a handshake format it
/// does not know, another cluster, or another replica expected here.
fn not_for_me(me: &Callee<'_>, hello: &Hello) -> Option<String> {
    let my_id = me.my_id;
    if hello.handshake > HANDSHAKE_FORMAT {
        return Some(format!(
            "this replica speaks handshake formats up to {HANDSHAKE_FORMAT}, \
             not {}: upgrade replica {my_id}",
            hello.handshake
        ));
    }
    if hello.cluster_id != me.cluster_id {
        return Some(format!(
            "this is replica {my_id} of cluster '{}', not of '{}'",
            me.cluster_id, hello.cluster_id
        ));
    }
    // 0 is no replica's id: a replica joining through an address does not
    // know who serves it yet.
    if hello.to != my_id && hello.to != 0 {
        return Some(format!(
            "this address serves replica {my_id}, not replica {}",
            hello.to
        ));
    }
    None
}

/// The exchange with a caller that offered a nonce: our nonce and proof,
/// then its proof, checked, then `welcome`. `Ok` once it is right; otherwise
/// the caller has been told why (and the refusal noted), and the error is for
/// the log.
async fn challenge(
    frames: &mut Frames,
    secret: &ClusterSecret,
    link: &Link<'_>,
    caller_nonce: &str,
    caller: &str,
    my_id: NodeId,
    welcome: &PeerResponse,
) -> Result<(), String> {
    let Some(caller_nonce) = Nonce::parse(caller_nonce) else {
        note_refusal(&format!("refused {caller}: its hello's nonce is malformed"));
        let why = format!("a nonce is {NONCE_LEN} bytes in base64");
        return unauthenticated(frames, why).await;
    };
    let nonces = Nonces {
        caller: caller_nonce,
        callee: Nonce::fresh()?,
    };
    let challenge = PeerResponse::Challenge {
        nonce: nonces.callee.text(),
        proof: secret.proof(Role::Callee, link, &nonces),
    };
    send_answer(frames, &challenge).await?;
    match read(frames).await? {
        Some(PeerRequest::Proof { proof })
            if secret.is_proof(Role::Caller, link, &nonces, &proof) =>
        {
            send_answer(frames, welcome).await
        }
        Some(PeerRequest::Proof { .. }) => {
            note_refusal(&format!(
                "refused {caller}: its proof of the cluster secret is wrong \
                 (it holds a different secret, or is not a member)"
            ));
            let why = format!(
                "this replica's proof of the cluster secret is wrong: replica {my_id} \
                 holds a different secret"
            );
            unauthenticated(frames, why).await
        }
        Some(PeerRequest::ProofRefused) => {
            let why = format!(
                "{caller} refused this replica's proof of the cluster secret \
                 (the two hold different secrets)"
            );
            note_refusal(&why);
            Err(why)
        }
        Some(_) => {
            note_refusal(&format!(
                "refused {caller}: it sent a request before proving it holds the cluster secret"
            ));
            let why = "prove the cluster secret before any request".to_string();
            unauthenticated(frames, why).await
        }
        None => Err(format!(
            "{caller} closed the connection before proving it holds the cluster secret"
        )),
    }
}

/// Tells the caller why its hello is refused (not a matter of the secret).
async fn refuse<T>(frames: &mut Frames, why: String) -> Result<T, String> {
    let _ = send_answer(frames, &PeerResponse::Refused(why.clone())).await;
    Err(format!("refused: {why}"))
}

/// Tells the caller why it failed on the secret (already noted here).
async fn unauthenticated<T>(frames: &mut Frames, why: String) -> Result<T, String> {
    let _ = send_answer(frames, &PeerResponse::Unauthenticated(why.clone())).await;
    Err(format!("refused on the cluster secret: {why}"))
}

async fn read(frames: &mut Frames) -> Result<Option<PeerRequest>, String> {
    match frames.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(format!("bad frame: {e}")),
        Some(Ok(frame)) => serde_json::from_slice(&frame)
            .map(Some)
            .map_err(|e| format!("unreadable request: {e}")),
    }
}

async fn send_answer(frames: &mut Frames, response: &PeerResponse) -> Result<(), String> {
    let body = serde_json::to_vec(response).expect("peer responses serialise");
    frames
        .send(bytes::Bytes::from(body))
        .await
        .map_err(|e| format!("sending the answer failed: {e}"))
}

/// How often the same refusal is said again while its cause lasts: a refused
/// peer retries every heartbeat or election timeout.
const NOTE_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// One `note:` line for a refusal on the secret, on either side.
fn note_refusal(text: &str) {
    logging::note_now_and_then(text, NOTE_AGAIN_AFTER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes().to_vec(), "test".into()).unwrap()
    }

    fn nonces(caller: u8, callee: u8) -> Nonces {
        Nonces {
            caller: Nonce([caller; NONCE_LEN]),
            callee: Nonce([callee; NONCE_LEN]),
        }
    }

    const LINK: Link = Link {
        cluster_id: "shop",
        from: 1,
        to: 2,
    };

    #[test]
    fn a_proof_holds_only_for_its_secret_role_link_and_nonces() {
        let ours = secret("0123456789abcdef-ours");
        let n = nonces(1, 2);
        let proof = ours.proof(Role::Caller, &LINK, &n);
        assert!(ours.is_proof(Role::Caller, &LINK, &n, &proof));

        let theirs = secret("0123456789abcdef-theirs");
        assert!(!theirs.is_proof(Role::Caller, &LINK, &n, &proof), "secret");
        // Reflected: the caller's proof shown as the callee's.
        assert!(!ours.is_proof(Role::Callee, &LINK, &n, &proof), "role");
        // Replayed on another connection: either nonce differs.
        assert!(!ours.is_proof(Role::Caller, &LINK, &nonces(1, 3), &proof));
        assert!(!ours.is_proof(Role::Caller, &LINK, &nonces(3, 2), &proof));
        for other in [
            Link {
                cluster_id: "shop2",
                ..LINK
            },
            Link { from: 3, ..LINK },
            Link { to: 3, ..LINK },
        ] {
            assert!(!ours.is_proof(Role::Caller, &other, &n, &proof), "link");
        }
        for forged in ["", "not base64!", &encode(&[0u8; 32]), &proof[..20]] {
            assert!(!ours.is_proof(Role::Caller, &LINK, &n, forged), "{forged}");
        }
    }

    #[test]
    fn nonces_are_fresh_and_exactly_32_bytes() {
        let a = Nonce::fresh().unwrap();
        let b = Nonce::fresh().unwrap();
        assert_ne!(a.0, b.0);
        assert_eq!(Nonce::parse(&a.text()).map(|n| n.0), Some(a.0));
        assert!(Nonce::parse(&encode(&[7u8; 31])).is_none());
        assert!(Nonce::parse(&encode(&[7u8; 33])).is_none());
        assert!(Nonce::parse("%%%").is_none());
    }

    #[test]
    fn a_secret_file_is_one_line_of_at_least_16_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=\r\n").unwrap();
        let read = ClusterSecret::configured(Some(&path)).unwrap().unwrap();
        assert_eq!(&read.0[..], b"c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
        assert_eq!(format!("{read:?}"), "ClusterSecret(..)");
        for (text, says) in [
            ("\n", "empty cluster secret"),
            ("", "empty cluster secret"),
            ("0123456789abcdef\nmore\n", "more than one line"),
            ("short\n", "of 5 bytes; it needs at least 16"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = ClusterSecret::configured(Some(&path)).unwrap_err();
            assert!(error.to_string().contains(says), "{text:?}: {error}");
        }
        let missing = dir.path().join("missing");
        let error = ClusterSecret::configured(Some(&missing)).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot read --cluster-secret-file"));
    }
}
