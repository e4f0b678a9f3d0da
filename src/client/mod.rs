//! The client port: Redis clients talk to the cluster through any replica.
//!
//! `redis-cli -p 6380`, `redis-benchmark` and Redis client libraries work
//! unchanged. Each connection reads every request that has arrived (clients
//! pipeline), runs them in order through its [`Session`] (the one the prompt
//! uses too), and writes all the replies in one go. Consecutive key-value
//! requests of one pipeline travel together: their writes as one queued item
//! (one log entry, in order), their reads on one read index.
//!
//! Files: `resp.rs` reads requests, `tls.rs` wraps a connection in TLS, this
//! file serves connections. What each command means is `session/`.

mod resp;
pub mod tls;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::kv::{KvError, Request};
use crate::metrics::{self, ErrorKind};
use crate::session::{ClientCommand, Frame, Protocol, Session, Shared, Step};

/// Connections served at once; one more is told so and closed (as Redis does
/// at `maxclients`), so a flood of connections cannot exhaust file handles.
const MAX_CLIENTS: usize = 1024;
/// Requests taken from one connection's buffer before their replies are sent,
/// so a client that pipelines without end still gets answers as it goes.
const MAX_PIPELINE: usize = 1024;

/// Opens the client port, before the replica starts, so a taken port is
/// reported at once.
pub async fn bind(addr: &str) -> Result<TcpListener, crate::listen::ListenError> {
    crate::listen::bind(
        addr,
        "clients",
        "is another replica or a Redis server using it? choose another with --client-addr",
    )
    .await
}

/// Accepts clients until the process ends.
pub async fn serve(listener: TcpListener, shared: Shared, tls: Option<tokio_rustls::TlsAcceptor>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let backup_slot = Arc::new(Semaphore::new(1));
    let stats = shared.stats.clone();
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file handles, most likely: wait for some to close.
                tracing::warn!("accepting a client failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.connections_received.fetch_add(1, Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::error(ErrorKind::TooManyClients);
            let mut out = BytesMut::new();
            Frame::error("ERR max number of clients reached").write_to(&mut out, Protocol::Resp2);
            tokio::spawn(async move {
                let _ = stream.write_all(&out).await;
            });
            continue;
        };
        let logged_in = shared.password.is_none();
        let mut connection = Connection {
            session: Session::new(shared.clone(), peer.to_string(), logged_in),
            backup_slot: backup_slot.clone(),
            run: Vec::new(),
        };
        let tls = tls.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("client {peer}: {e}");
                return;
            }
            stats.connected.fetch_add(1, Relaxed);
            let counted = metrics::client_connected();
            let served = match &tls {
                None => connection.serve(stream).await,
                Some(acceptor) => match tls::handshake(acceptor, stream, &peer.to_string()).await {
                    Some(stream) => connection.serve(stream).await,
                    None => Ok(()),
                },
            };
            if let Err(e) = served {
                tracing::debug!("client {peer}: {e}");
            }
            stats.connected.fetch_sub(1, Relaxed);
            drop(counted);
            drop(slot);
        });
    }
}

/// One client's connection: its session, and the keyspace requests of the
/// current pipeline that have not run yet.
struct Connection {
    session: Session,
    /// One BACKUP at a time per replica: each copies the whole state to disk.
    backup_slot: Arc<Semaphore>,
    run: Vec<(Request, Instant, Bytes)>,
}

/// How a connection goes on after a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Serve,
    /// QUIT: its OK goes out, then the connection closes.
    Close,
    /// SHUTDOWN: the replica is stopping; the connection closes without a
    /// reply, as Redis's does.
    Stop,
}

impl Connection {
    async fn serve(
        &mut self,
        stream: impl AsyncRead + AsyncWrite + Unpin + Send,
    ) -> std::io::Result<()> {
        let (mut reader, mut writer) = tokio::io::split(stream);
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
            let after = self.answer(requests, &mut output, &mut writer).await?;
            if after == After::Stop {
                return writer.shutdown().await;
            }
            if let Some(e) = &unreadable {
                metrics::error(ErrorKind::Protocol);
                // The rest of the stream cannot be trusted to start at a request.
                Frame::error(format!("ERR {e}")).write_to(&mut output, self.session.protocol());
            }
            writer.write_all(&output).await?;
            output.clear();
            if after == After::Close || unreadable.is_some() {
                return writer.shutdown().await;
            }
        }
    }

    /// Runs a pipeline's requests in order and writes their replies to `out`
    /// (a BACKUP's reply, and those before it, straight to `writer`).
    async fn answer(
        &mut self,
        requests: Vec<Vec<Bytes>>,
        out: &mut BytesMut,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<After> {
        let stats = self.session.shared().stats.clone();
        for args in requests {
            let started = Instant::now();
            let command = match self.session.step(&args) {
                Step::Keyspace(request) => {
                    // Consecutive keyspace requests run together: their writes
                    // as one queued item (one log entry, in order), their
                    // reads on one read index.
                    self.run.push((request, started, args[0].clone()));
                    continue;
                }
                Step::Answered(reply) => {
                    self.flush_run(out).await;
                    reply.write_to(out, self.session.protocol());
                    stats.count_command(&args[0], started.elapsed());
                    continue;
                }
                Step::Command(command) => command,
            };
            // Whatever comes next sees the effects of the requests before it.
            self.flush_run(out).await;
            if let ClientCommand::Backup = command {
                self.send_backup(out, writer).await?;
                stats.count_command(&args[0], started.elapsed());
                continue;
            }
            let quit = matches!(command, ClientCommand::Quit);
            let reply = self.session.execute(command).await;
            stats.count_command(&args[0], started.elapsed());
            if self.session.stopping() {
                // The replies before it go out; SHUTDOWN's own does not.
                writer.write_all(out).await?;
                out.clear();
                return Ok(After::Stop);
            }
            reply.write_to(out, self.session.protocol());
            if quit {
                return Ok(After::Close);
            }
        }
        self.flush_run(out).await;
        Ok(After::Serve)
    }

    /// BACKUP: the whole state as one bulk string (`$LEN`, the file, CRLF),
    /// the way Redis's SYNC sends its RDB file. The copy is written to this
    /// replica's disk first (`Kv::backup`), so the state is held only for as
    /// long as that takes, not while a slow client reads; then it is sent from
    /// the file without being read into memory. The replies before it go out
    /// first. A failure once the length has gone out can only close the
    /// connection: the client then has less than announced and refuses it.
    async fn send_backup(
        &mut self,
        out: &mut BytesMut,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        let protocol = self.session.protocol();
        let Ok(_slot) = self.backup_slot.clone().try_acquire_owned() else {
            metrics::error(ErrorKind::Command);
            Frame::error(
                "ERR a backup is already being made at this replica; try again when it is done",
            )
            .write_to(out, protocol);
            return Ok(());
        };
        let copy = match self.session.shared().kv.backup().await {
            Ok(copy) => copy,
            Err(e) => {
                metrics::error(e.metric_kind());
                Frame::error(format!("ERR {e}")).write_to(out, protocol);
                return Ok(());
            }
        };
        let file = match tokio::fs::File::open(&copy.path).await {
            Ok(file) => file,
            Err(e) => {
                metrics::error(ErrorKind::Storage);
                Frame::error(format!("ERR {}", KvError::Storage(e.to_string())))
                    .write_to(out, protocol);
                return Ok(());
            }
        };
        tracing::info!(
            "sending a backup at {:?} to client {}: {} bytes",
            copy.meta.last_log_id,
            self.session.addr(),
            copy.size
        );
        out.extend_from_slice(format!("${}\r\n", copy.size).as_bytes());
        writer.write_all(out).await?;
        out.clear();
        let mut body = tokio::io::BufReader::with_capacity(256 * 1024, file).take(copy.size);
        let sent = tokio::io::copy_buf(&mut body, writer).await?;
        if sent != copy.size {
            return Err(std::io::Error::other(format!(
                "the backup copy {} ended after {sent} of {} bytes",
                copy.path.display(),
                copy.size
            )));
        }
        writer.write_all(b"\r\n").await
    }

    /// Executes the waiting keyspace requests together and writes their replies.
    async fn flush_run(&mut self, out: &mut BytesMut) {
        if self.run.is_empty() {
            return;
        }
        let run = std::mem::take(&mut self.run);
        let (requests, started): (Vec<Request>, Vec<(Instant, Bytes)>) = run
            .into_iter()
            .map(|(request, at, name)| (request, (at, name)))
            .unzip();
        for reply in self.session.run_keyspace(requests).await {
            reply.write_to(out, self.session.protocol());
        }
        self.session
            .shared()
            .stats
            .count_commands(started.iter().map(|(at, name)| (&name[..], at.elapsed())));
    }
}
