//! The client port: Redis clients talk to the cluster through any replica.
//!
//! `redis-cli -p 6380`, `redis-benchmark` and Redis client libraries work
//! unchanged. Each connection reads every request that has arrived (clients
//! pipeline), runs them in order through the same request path as the prompt
//! (`Kv::execute`), and writes all the replies in one go. Consecutive
//! key-value requests of one pipeline travel together: their writes as one
//! queued item (one log entry, in order), their reads on one read index.
//!
//! Files: `resp.rs` reads requests and writes replies, `commands.rs` says what
//! each command means, this file serves connections.

pub mod auth;
mod commands;
mod resp;
pub mod tls;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use commands::ClientCommand;
use resp::{Frame, Protocol};

use crate::command::{Queued, Watched};
use crate::kv::{Kv, KvError, Request, Role, Runnable, Status};
use crate::machine::parse::shown;
use crate::machine::{Reply, REDIS_VERSION};
use crate::metrics::{self, ErrorKind};

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

/// What the port has served, for INFO and `redis-cli --stat`, and each
/// command's latency for `/metrics`.
pub struct ClientStats {
    connected: AtomicU64,
    connections_received: AtomicU64,
    commands_processed: AtomicU64,
    /// Calls and microseconds per command name (lower case).
    per_command: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Commands processed, sampled every [`OPS_SAMPLE_EVERY`], newest last.
    samples: Mutex<VecDeque<u64>>,
    /// Request latency by command, for `/metrics`.
    latency: metrics::CommandTable,
}

const OPS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const OPS_SAMPLES: usize = 16;

impl ClientStats {
    fn new() -> ClientStats {
        ClientStats {
            connected: AtomicU64::default(),
            connections_received: AtomicU64::default(),
            commands_processed: AtomicU64::default(),
            per_command: Mutex::default(),
            samples: Mutex::default(),
            latency: metrics::CommandTable::new(commands::COMMAND_NAMES),
        }
    }

    fn count_command(&self, name: &[u8], took: Duration) {
        self.count_commands([(name, took)]);
    }

    /// Counts a pipeline's commands under one lock; a name already in the
    /// table is found without allocating.
    fn count_commands<'a>(&self, commands: impl IntoIterator<Item = (&'a [u8], Duration)>) {
        let mut table = self.per_command.lock().unwrap_or_else(|e| e.into_inner());
        let mut lower = [0u8; 32];
        for (name, took) in commands {
            self.commands_processed.fetch_add(1, Relaxed);
            self.latency.observe(name, took);
            let short = name.len() <= lower.len();
            let name = if short {
                lower[..name.len()].copy_from_slice(name);
                lower[..name.len()].make_ascii_lowercase();
                String::from_utf8_lossy(&lower[..name.len()])
            } else {
                String::from_utf8_lossy(name).to_ascii_lowercase().into()
            };
            let known = table.contains_key(name.as_ref());
            // A client sending many unknown names must not grow the table without end.
            if !known && table.len() >= 512 {
                continue;
            }
            let entry = match table.get_mut(name.as_ref()) {
                Some(entry) => entry,
                None => table.entry(name.into_owned()).or_default(),
            };
            entry.0 += 1;
            entry.1 += took.as_micros() as u64;
        }
    }

    /// Commands per second over the last samples, as Redis reports it.
    fn ops_per_sec(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match (samples.front(), samples.back()) {
            (Some(first), Some(last)) if samples.len() > 1 => {
                let span = OPS_SAMPLE_EVERY.as_secs_f64() * (samples.len() - 1) as f64;
                ((last - first) as f64 / span) as u64
            }
            _ => 0,
        }
    }

    async fn sample_forever(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(OPS_SAMPLE_EVERY);
        loop {
            ticks.tick().await;
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            if samples.len() == OPS_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(self.commands_processed.load(Relaxed));
        }
    }
}

/// Accepts clients until the process ends.
pub async fn serve(
    listener: TcpListener,
    kv: Kv,
    password: Option<auth::Password>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let password = password.map(Arc::new);
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let backup_slot = Arc::new(Semaphore::new(1));
    let stats = Arc::new(ClientStats::new());
    tokio::spawn(stats.clone().sample_forever());
    let mut next_id = 0u64;
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
        next_id += 1;
        let mut connection = Connection {
            kv: kv.clone(),
            stats: stats.clone(),
            session: Session::new(next_id, peer.to_string(), password.is_none()),
            password: password.clone(),
            backup_slot: backup_slot.clone(),
            run: Vec::new(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("client {peer}: {e}");
                return;
            }
            connection.stats.connected.fetch_add(1, Relaxed);
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
            connection.stats.connected.fetch_sub(1, Relaxed);
            drop(counted);
            drop(slot);
        });
    }
}

/// What a connection remembers between requests, as Redis keeps per client.
struct Session {
    id: u64,
    addr: String,
    /// Whether this client may run commands: it gave the password, or the
    /// port asks for none.
    authenticated: bool,
    name: Option<Bytes>,
    protocol: Protocol,
    db: u8,
    /// Between MULTI and EXEC: the commands queued, and whether one was refused.
    transaction: Option<Transaction>,
    /// Keys WATCHed since the last EXEC, DISCARD or UNWATCH.
    watched: Vec<Watched>,
}

#[derive(Default)]
struct Transaction {
    /// The database at MULTI, to go back to if the transaction does not run
    /// (a queued SELECT switches at once, for the commands queued after it).
    db_at_multi: u8,
    queued: Vec<Queued>,
    /// Answers of commands that do not touch the keyspace (PING, SELECT...),
    /// with their place among EXEC's replies.
    answered: Vec<(usize, Frame)>,
    refused: bool,
}

impl Transaction {
    fn len(&self) -> usize {
        self.queued.len() + self.answered.len()
    }

    /// EXEC's reply: the keyspace commands' replies with the other answers
    /// put back in their places.
    fn merge(self, replies: Vec<Frame>) -> Frame {
        let mut replies = replies.into_iter();
        let mut answered = self.answered.into_iter().peekable();
        let mut merged = Vec::with_capacity(replies.len() + answered.len());
        loop {
            if answered.peek().is_some_and(|(at, _)| *at == merged.len()) {
                merged.push(answered.next().expect("peeked").1);
            } else if let Some(reply) = replies.next() {
                merged.push(reply);
            } else {
                break;
            }
        }
        merged.extend(answered.map(|(_, frame)| frame));
        Frame::Array(merged)
    }
}

impl Session {
    fn new(id: u64, addr: String, authenticated: bool) -> Session {
        Session {
            id,
            addr,
            authenticated,
            name: None,
            protocol: Protocol::Resp2,
            db: 0,
            transaction: None,
            watched: Vec::new(),
        }
    }

    /// CLIENT INFO's line.
    fn info_line(&self) -> String {
        format!(
            "id={} addr={} name={} db={} multi={} watch={} resp={}",
            self.id,
            self.addr,
            self.name
                .as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default(),
            self.db,
            self.transaction.as_ref().map_or(-1, |t| t.len() as i64),
            self.watched.len(),
            if self.protocol == Protocol::Resp3 {
                3
            } else {
                2
            },
        )
    }
}

/// One client's connection: its session, and the keyspace requests of the
/// current pipeline that have not run yet.
struct Connection {
    kv: Kv,
    stats: Arc<ClientStats>,
    session: Session,
    /// What AUTH must match, if the port asks for a password.
    password: Option<Arc<auth::Password>>,
    /// One BACKUP at a time per replica: each copies the whole state to disk.
    backup_slot: Arc<Semaphore>,
    run: Vec<(Request, Instant, Bytes)>,
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
            let quit = self.answer(requests, &mut output, &mut writer).await?;
            if let Some(e) = &unreadable {
                metrics::error(ErrorKind::Protocol);
                // The rest of the stream cannot be trusted to start at a request.
                Frame::error(format!("ERR {e}")).write_to(&mut output, self.session.protocol);
            }
            writer.write_all(&output).await?;
            output.clear();
            if quit || unreadable.is_some() {
                return writer.shutdown().await;
            }
        }
    }

    /// Runs a pipeline's requests in order and writes their replies to `out`
    /// (a BACKUP's reply, and those before it, straight to `writer`).
    /// Returns true when the client said QUIT.
    async fn answer(
        &mut self,
        requests: Vec<Vec<Bytes>>,
        out: &mut BytesMut,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<bool> {
        for args in requests {
            let started = Instant::now();
            let command = commands::parse(&args, self.session.db);
            // Before AUTH, only the ways to log in (or leave) are served; a
            // request that cannot be understood still hears why, as in Redis.
            let may_run = self.session.authenticated
                || matches!(
                    command,
                    Err(_)
                        | Ok(ClientCommand::Auth { .. }
                            | ClientCommand::Hello { .. }
                            | ClientCommand::Quit)
                );
            if !may_run {
                self.flush_run(out).await;
                metrics::error(ErrorKind::Auth);
                Frame::error(auth::NOAUTH).write_to(out, self.session.protocol);
                continue;
            }
            let in_transaction = self.session.transaction.is_some();
            let ends_transaction = matches!(
                command,
                Ok(ClientCommand::Exec | ClientCommand::Discard | ClientCommand::Quit)
            );
            if in_transaction && !ends_transaction {
                let reply = self.queue(&args, command);
                if matches!(reply, Frame::Error(_)) {
                    metrics::error(ErrorKind::Command);
                }
                reply.write_to(out, self.session.protocol);
                self.stats.count_command(&args[0], started.elapsed());
                continue;
            }
            if let Ok(ClientCommand::Kv(request)) = command {
                // Consecutive keyspace requests run together: their writes as
                // one queued item (one log entry, in order), their reads on one
                // read index.
                self.run.push((request, started, args[0].clone()));
                continue;
            }
            // Whatever comes next sees the effects of the requests before it.
            self.flush_run(out).await;
            if let Ok(ClientCommand::Backup) = command {
                self.send_backup(out, writer).await?;
                self.stats.count_command(&args[0], started.elapsed());
                continue;
            }
            let quit = matches!(command, Ok(ClientCommand::Quit));
            let reply = match command {
                Ok(command) => self.connection_command(command).await,
                Err(message) => {
                    metrics::error(ErrorKind::Command);
                    Frame::Error(message)
                }
            };
            reply.write_to(out, self.session.protocol);
            self.stats.count_command(&args[0], started.elapsed());
            if quit {
                return Ok(true);
            }
        }
        self.flush_run(out).await;
        Ok(false)
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
        let protocol = self.session.protocol;
        let Ok(_slot) = self.backup_slot.clone().try_acquire_owned() else {
            metrics::error(ErrorKind::Command);
            Frame::error(
                "ERR a backup is already being made at this replica; try again when it is done",
            )
            .write_to(out, protocol);
            return Ok(());
        };
        let copy = match self.kv.backup().await {
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
            self.session.addr,
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

    /// Between MULTI and EXEC: queues a command (`+QUEUED`); a command
    /// refused here makes EXEC fail, as in Redis. Keyspace commands go into
    /// the transaction's log entry; PING, SELECT and the like are answered now
    /// and their answers given back in EXEC's reply.
    fn queue(&mut self, args: &[Bytes], command: Result<ClientCommand, String>) -> Frame {
        let session = &mut self.session;
        let Some(transaction) = session.transaction.as_mut() else {
            return Frame::error("ERR internal error: no transaction to queue in");
        };
        let answer = match command {
            // EVALSHA is resolved now, SCRIPT answered now; an error of
            // either takes the command's place in EXEC's reply, as in Redis.
            Ok(ClientCommand::Kv(request)) => match self.kv.prepare(request) {
                Ok(Runnable::Run { queued, .. }) => {
                    transaction.queued.push(queued);
                    return Frame::Simple("QUEUED");
                }
                Ok(Runnable::Transaction { .. }) => {
                    Frame::error("ERR internal error: a transaction inside a transaction")
                }
                Err(answer) => reply_frame(answer),
            },
            Ok(ClientCommand::Multi) => return Frame::error("ERR MULTI calls can not be nested"),
            Ok(ClientCommand::Watch(_)) => {
                return Frame::error("ERR WATCH inside MULTI is not allowed")
            }
            Ok(ClientCommand::Constant(frame)) => frame,
            Ok(ClientCommand::Select(db)) => {
                session.db = db;
                Frame::ok()
            }
            // EXEC forgets the watched keys anyway.
            Ok(ClientCommand::Unwatch) => Frame::ok(),
            Ok(ClientCommand::GetName) => Frame::Bulk(session.name.clone()),
            Ok(ClientCommand::ClientId) => Frame::Integer(session.id as i64),
            Ok(_) => {
                transaction.refused = true;
                return Frame::error(format!(
                    "ERR '{}' cannot be queued in a transaction here",
                    shown(&args[0])
                ));
            }
            Err(message) => {
                transaction.refused = true;
                return Frame::Error(message);
            }
        };
        let at = transaction.len();
        transaction.answered.push((at, answer));
        Frame::Simple("QUEUED")
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
        let replies = self.kv.execute(requests).await;
        for reply in replies {
            reply_frame(reply).write_to(out, self.session.protocol);
        }
        self.stats
            .count_commands(started.iter().map(|(at, name)| (&name[..], at.elapsed())));
    }

    /// Everything that is not a keyspace request.
    async fn connection_command(&mut self, command: ClientCommand) -> Frame {
        let kv = &self.kv;
        let session = &mut self.session;
        match command {
            ClientCommand::Kv(request) => reply_frame(kv.execute_one(request).await),
            ClientCommand::Constant(frame) => frame,
            ClientCommand::Info(section) => info(kv, &self.stats, section.as_deref()).await,
            ClientCommand::Checksum => match kv.state().checksum().await {
                Ok(sum) => Frame::bulk(crate::repl::format_checksum(&sum)),
                Err(e) => Frame::error(format!("ERR {}", KvError::Storage(e))),
            },
            // Streamed by `answer`, straight to the connection.
            ClientCommand::Backup => Frame::error("ERR internal error: BACKUP was not streamed"),
            ClientCommand::Membership(change) => {
                let done = change.clone();
                match kv.change_membership(change).await {
                    Ok(changed) => Frame::bulk(done.done_text(&changed)),
                    Err(e) => Frame::error(format!("ERR {e}")),
                }
            }
            ClientCommand::Quit => Frame::ok(),
            ClientCommand::Time => {
                let since_epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Frame::Array(vec![
                    Frame::bulk(since_epoch.as_secs().to_string()),
                    Frame::bulk(since_epoch.subsec_micros().to_string()),
                ])
            }
            ClientCommand::Auth { user, password } => {
                match auth::check(self.password.as_deref(), user.as_deref(), &password) {
                    Ok(()) => {
                        session.authenticated = true;
                        Frame::ok()
                    }
                    Err(refused) => {
                        metrics::error(ErrorKind::Auth);
                        Frame::error(refused)
                    }
                }
            }
            ClientCommand::Hello {
                protocol,
                auth,
                name,
            } => {
                // A refused HELLO changes nothing, not even the protocol.
                match auth {
                    Some((user, password)) => {
                        if let Err(refused) =
                            auth::check(self.password.as_deref(), Some(&user), &password)
                        {
                            metrics::error(ErrorKind::Auth);
                            return Frame::error(refused);
                        }
                        session.authenticated = true;
                    }
                    None if !session.authenticated => return Frame::error(auth::NOAUTH_HELLO),
                    None => {}
                }
                if let Some(protocol) = protocol {
                    session.protocol = protocol;
                }
                if name.is_some() {
                    session.name = name;
                }
                hello_reply(session)
            }
            ClientCommand::Select(db) => {
                session.db = db;
                Frame::ok()
            }
            ClientCommand::SetName(name) => {
                session.name = (!name.is_empty()).then_some(name);
                Frame::ok()
            }
            ClientCommand::GetName => Frame::Bulk(session.name.clone()),
            ClientCommand::ClientId => Frame::Integer(session.id as i64),
            ClientCommand::ClientInfo { list } => {
                let line = session.info_line();
                Frame::bulk(if list { line + "\n" } else { line })
            }
            ClientCommand::Multi => {
                session.transaction = Some(Transaction {
                    db_at_multi: session.db,
                    ..Transaction::default()
                });
                Frame::ok()
            }
            ClientCommand::Discard => match session.transaction.take() {
                Some(transaction) => {
                    session.db = transaction.db_at_multi;
                    session.watched.clear();
                    Frame::ok()
                }
                None => Frame::error("ERR DISCARD without MULTI"),
            },
            ClientCommand::Exec => {
                let Some(mut transaction) = session.transaction.take() else {
                    return Frame::error("ERR EXEC without MULTI");
                };
                let watched = std::mem::take(&mut session.watched);
                if transaction.refused {
                    session.db = transaction.db_at_multi;
                    return Frame::error(
                        "EXECABORT Transaction discarded because of previous errors.",
                    );
                }
                if transaction.queued.is_empty() && watched.is_empty() {
                    return transaction.merge(Vec::new());
                }
                let request = Request::Transaction {
                    watched,
                    commands: std::mem::take(&mut transaction.queued),
                };
                match reply_frame(kv.execute_one(request).await) {
                    Frame::Array(replies) => transaction.merge(replies),
                    // Nil (a watched key changed) or an error: nothing ran.
                    other => {
                        session.db = transaction.db_at_multi;
                        other
                    }
                }
            }
            ClientCommand::Watch(keys) => match kv.watch(session.db, &keys).await {
                Ok(watched) => {
                    session.watched.extend(watched);
                    Frame::ok()
                }
                Err(e) => {
                    metrics::error(e.metric_kind());
                    Frame::error(format!("ERR {e}"))
                }
            },
            ClientCommand::Unwatch => {
                session.watched.clear();
                Frame::ok()
            }
        }
    }
}

/// A command's answer as a frame.
fn reply_frame(reply: Result<Reply, KvError>) -> Frame {
    match reply {
        Ok(reply) => frame_of(reply),
        Err(e) => Frame::error(format!("ERR {e}")),
    }
}

fn frame_of(reply: Reply) -> Frame {
    match reply {
        Reply::Ok => Frame::ok(),
        Reply::Status(text) => Frame::Status(text),
        Reply::Nil => Frame::Null,
        Reply::NilArray => Frame::NullArray,
        Reply::Int(n) => Frame::Integer(n),
        Reply::Bulk(bytes) => Frame::bulk(bytes.0),
        Reply::Array(items) => Frame::Array(items.into_iter().map(frame_of).collect()),
        Reply::Map(pairs) => Frame::Map(
            pairs
                .into_iter()
                .map(|(key, value)| (frame_of(key), frame_of(value)))
                .collect(),
        ),
        Reply::Error(message) => Frame::Error(message),
    }
}

/// HELLO's answer: who we are, in the connection's (new) protocol.
fn hello_reply(session: &Session) -> Frame {
    let field = |name: &'static str, value: Frame| (Frame::bulk(name), value);
    Frame::Map(vec![
        field("server", Frame::bulk("redis")),
        field("version", Frame::bulk(REDIS_VERSION)),
        field(
            "proto",
            Frame::Integer(if session.protocol == Protocol::Resp3 {
                3
            } else {
                2
            }),
        ),
        field("id", Frame::Integer(session.id as i64)),
        field("mode", Frame::bulk("standalone")),
        field("role", Frame::bulk("master")),
        field("modules", Frame::Array(Vec::new())),
    ])
}

/// `INFO`, in the sections tools read.
async fn info(kv: &Kv, stats: &ClientStats, section: Option<&str>) -> Frame {
    let keyspace = match kv.state().keyspace_counts().await {
        Ok(counts) => counts,
        Err(e) => return Frame::error(format!("ERR {}", KvError::Storage(e))),
    };
    Frame::Verbatim(info_text(kv, stats, &kv.status(), &keyspace, section))
}

fn section_wanted(asked: Option<&str>, name: &str) -> bool {
    match asked {
        None | Some("all") | Some("default") | Some("everything") => true,
        Some(asked) => asked.eq_ignore_ascii_case(name),
    }
}

/// This process's resident memory in bytes (0 where /proc is not there).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The text of `INFO`: sections of `name:value` lines, as Redis writes them.
fn info_text(
    kv: &Kv,
    stats: &ClientStats,
    status: &Status,
    keyspace: &[(u8, u64, u64)],
    section: Option<&str>,
) -> String {
    let server = [
        (
            "example_ondisk_version",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("redis_version", REDIS_VERSION.to_string()),
        ("redis_mode", "standalone".to_string()),
        ("process_id", std::process::id().to_string()),
        ("replica_id", kv.replica_id().to_string()),
        ("cluster_id", kv.cluster_id().to_string()),
    ];
    let memory = resident_bytes();
    let (scripts, script_bytes) = kv.scripts.size();
    let memory = [
        ("used_memory", memory.to_string()),
        ("used_memory_rss", memory.to_string()),
        ("maxmemory", "0".to_string()),
        // No Lua state lives between scripts: each run has its own.
        ("used_memory_lua", "0".to_string()),
        ("used_memory_scripts", script_bytes.to_string()),
        ("number_of_cached_scripts", scripts.to_string()),
    ];
    let clients = [
        (
            "connected_clients",
            stats.connected.load(Relaxed).to_string(),
        ),
        ("blocked_clients", "0".to_string()),
    ];
    let counters = [
        (
            "total_connections_received",
            stats.connections_received.load(Relaxed).to_string(),
        ),
        (
            "total_commands_processed",
            stats.commands_processed.load(Relaxed).to_string(),
        ),
        ("instantaneous_ops_per_sec", stats.ops_per_sec().to_string()),
    ];
    // The fields of `status`, under the names INFO has always used for the
    // two indexes (scripts read them), with the replication progress given
    // one line per member below instead of in one field.
    let mut raft: Vec<(String, String)> = status
        .fields()
        .into_iter()
        .filter(|(name, _)| *name != "replication")
        .map(|(name, value)| {
            let name = match name {
                "committed" => "commit_index",
                "applied" => "applied_index",
                other => other,
            };
            (name.to_string(), value)
        })
        .collect();
    // One line per member, as Redis lists its replicas (`slave0:ip=...`);
    // at the leader with how far each member's log matches, and its lag.
    for member in &status.members {
        let mut line = format!(
            "role={},addr={}",
            if member.voter { "voter" } else { "learner" },
            member.addr
        );
        if status.role == Role::Leader {
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
    let keyspace: Vec<(String, String)> = keyspace
        .iter()
        .map(|(db, keys, expires)| {
            (
                format!("db{db}"),
                format!("keys={keys},expires={expires},avg_ttl=0"),
            )
        })
        .collect();
    let commandstats: Vec<(String, String)> = stats
        .per_command
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, (calls, usec))| {
            (
                format!("cmdstat_{name}"),
                format!(
                    "calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls=0",
                    *usec as f64 / (*calls).max(1) as f64
                ),
            )
        })
        .collect();
    let mut sections = vec![
        ("Server", named(&server)),
        ("Clients", named(&clients)),
        ("Memory", named(&memory)),
        ("Stats", named(&counters)),
        ("Raft", raft),
        ("Keyspace", keyspace),
    ];
    // Redis leaves Commandstats out of plain INFO too.
    if matches!(section, Some("commandstats" | "all" | "everything")) {
        sections.push(("Commandstats", commandstats));
    }
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
