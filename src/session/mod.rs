//! A Redis client's session, the same at the client port and at the prompt:
//! what each request means (`commands.rs`), and what a client keeps between
//! requests, as Redis keeps it per client: the selected database, MULTI's
//! queue, the WATCHed keys, its name, its protocol, whether it logged in.
//!
//! A front end reads words (the port from RESP frames, the prompt with
//! redis-cli's quoting), hands each request to [`Session::step`], runs what
//! comes back, and shows the [`Frame`] it gets (the port writes it in RESP,
//! the prompt prints it as redis-cli does). So a command, a transaction or a
//! SELECT means the same thing at either door, through one code path.
//!
//! Files: `commands.rs` (words to a [`ClientCommand`]), `frame.rs` (replies
//! and their wire forms), `info.rs` (what the front ends count, and INFO),
//! `auth.rs` (the password).

pub mod auth;
pub mod commands;
pub mod frame;
pub mod info;

use std::sync::Arc;

use bytes::Bytes;

pub use commands::ClientCommand;
pub use frame::{Frame, Protocol};
pub use info::Stats;

use crate::command::{Queued, Watched};
use crate::kv::{Kv, KvError, Request, Runnable};
use crate::machine::{Reply, REDIS_VERSION};
use crate::metrics::{self, ErrorKind};
use crate::stop::StopRequests;
use crate::store::StateChecksum;

/// What every session of this replica shares. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub kv: Kv,
    pub stats: Arc<Stats>,
    /// What AUTH must match, if the port asks for a password.
    pub password: Option<Arc<auth::Password>>,
    /// Where SHUTDOWN is reported; `main` stops the replica.
    pub stop: StopRequests,
}

/// What a client remembers between requests.
pub struct Session {
    shared: Shared,
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
    /// SHUTDOWN was asked for and reported: the front end stops serving.
    stopping: bool,
}

/// What [`Session::step`] makes of a request.
#[derive(Debug)]
pub enum Step {
    /// A keyspace request outside a transaction: run it with
    /// [`Session::run_keyspace`], together with the keyspace requests next to
    /// it if the front end has several (a pipeline).
    Keyspace(Request),
    /// Anything else to run: [`Session::execute`]. BACKUP and QUIT are the
    /// front end's own to serve.
    Command(ClientCommand),
    /// Answered already: refused, or queued in a transaction.
    Answered(Frame),
}

#[derive(Default)]
struct Transaction {
    /// The database at MULTI, to go back to if the transaction does not run
    /// (a queued SELECT switches at once, for the commands queued after it).
    db_at_multi: u8,
    queued: Vec<Queued>,
    /// Commands that do not touch the keyspace (PING, SELECT, LASTSAVE...),
    /// with their place among EXEC's replies.
    answered: Vec<(usize, Answer)>,
    refused: bool,
}

/// A queued command that is not part of the transaction's log entry.
enum Answer {
    /// Answered while queueing: its answer cannot change by EXEC (PING,
    /// SELECT, CONFIG SET, which changes nothing here).
    Now(Frame),
    /// Run at EXEC, after the log entry, and only if the transaction runs
    /// (CONFIG RESETSTAT, BGSAVE, LASTSAVE, INFO, TIME).
    AtExec(ClientCommand),
}

impl Transaction {
    fn len(&self) -> usize {
        self.queued.len() + self.answered.len()
    }
}

/// "Command not allowed inside a transaction": Redis 7.0's refusal of a
/// command flagged `no-multi` (SAVE, SHUTDOWN), which also makes EXEC fail.
const NOT_IN_MULTI: &str = "ERR Command not allowed inside a transaction";

impl Session {
    /// A new client's session; it must log in first unless `authenticated`.
    pub fn new(shared: Shared, addr: String, authenticated: bool) -> Session {
        Session {
            id: shared.stats.next_client_id(),
            shared,
            addr,
            authenticated,
            name: None,
            protocol: Protocol::Resp2,
            db: 0,
            transaction: None,
            watched: Vec::new(),
            stopping: false,
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The protocol replies are written in (RESP3 after `HELLO 3`).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The selected database.
    pub fn db(&self) -> u8 {
        self.db
    }

    /// Between MULTI and EXEC (or DISCARD).
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// SHUTDOWN was accepted: the front end stops serving this client.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// A request the front end refused before it got here (the prompt checks
    /// its lines first): inside MULTI it makes EXEC fail, as a command the
    /// session refused would.
    pub fn refused_elsewhere(&mut self) {
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.refused = true;
        }
    }

    /// Understands one request in this session: refuses it (before login,
    /// a syntax error), queues it (inside MULTI), or says what to run.
    pub fn step(&mut self, args: &[Bytes]) -> Step {
        let command = commands::parse(args, self.db);
        // Before AUTH, only the ways to log in (or leave) are served; a
        // request that cannot be understood still hears why, as in Redis.
        let may_run = self.authenticated
            || matches!(
                command,
                Err(_)
                    | Ok(ClientCommand::Auth { .. }
                        | ClientCommand::Hello { .. }
                        | ClientCommand::Quit)
            );
        if !may_run {
            metrics::error(ErrorKind::Auth);
            return Step::Answered(Frame::error(auth::NOAUTH));
        }
        if self.transaction.is_some()
            && !matches!(
                command,
                Ok(ClientCommand::Exec | ClientCommand::Discard | ClientCommand::Quit)
            )
        {
            let reply = self.queue(command);
            if matches!(reply, Frame::Error(_)) {
                metrics::error(ErrorKind::Command);
            }
            return Step::Answered(reply);
        }
        match command {
            Ok(ClientCommand::Kv(request)) => Step::Keyspace(request),
            Ok(command) => Step::Command(command),
            Err(message) => {
                metrics::error(ErrorKind::Command);
                Step::Answered(Frame::Error(message))
            }
        }
    }

    /// One request from start to end, for a front end that takes one at a
    /// time (the prompt). BACKUP is refused: it streams to a client.
    pub async fn run_one(&mut self, args: &[Bytes]) -> Frame {
        match self.step(args) {
            Step::Keyspace(request) => self
                .run_keyspace(vec![request])
                .await
                .pop()
                .unwrap_or_else(|| Frame::error("ERR internal error: no reply was produced")),
            Step::Command(ClientCommand::Backup) => Frame::error(
                "ERR BACKUP sends the whole state to a client; use `example-ondisk backup`",
            ),
            Step::Command(command) => self.execute(command).await,
            Step::Answered(frame) => frame,
        }
    }

    /// Runs keyspace requests that came in this order (see [`Kv::execute`]:
    /// consecutive writes as one log entry, consecutive reads on one read
    /// index), and answers each.
    pub async fn run_keyspace(&self, requests: Vec<Request>) -> Vec<Frame> {
        let replies = self.shared.kv.execute(requests).await;
        replies.into_iter().map(reply_frame).collect()
    }

    /// Between MULTI and EXEC: queues a command (`+QUEUED`); a command
    /// refused here makes EXEC fail, as in Redis. Keyspace commands go into
    /// the transaction's log entry; the others are answered now or at EXEC,
    /// their answers given back in their places in EXEC's reply.
    fn queue(&mut self, command: Result<ClientCommand, String>) -> Frame {
        let kv = &self.shared.kv;
        let Some(transaction) = self.transaction.as_mut() else {
            return Frame::error("ERR internal error: no transaction to queue in");
        };
        let answer = match command {
            // EVALSHA is resolved now, SCRIPT answered now; an error of
            // either takes the command's place in EXEC's reply, as in Redis.
            Ok(ClientCommand::Kv(request)) => match kv.prepare(request) {
                Ok(Runnable::Run { queued, .. }) => {
                    transaction.queued.push(queued);
                    return Frame::Simple("QUEUED");
                }
                Ok(Runnable::Transaction { .. }) => Answer::Now(Frame::error(
                    "ERR internal error: a transaction inside a transaction",
                )),
                Err(answer) => Answer::Now(reply_frame(answer)),
            },
            Ok(ClientCommand::Multi) => return Frame::error("ERR MULTI calls can not be nested"),
            Ok(ClientCommand::Watch(_)) => {
                return Frame::error("ERR WATCH inside MULTI is not allowed")
            }
            Ok(ClientCommand::Save | ClientCommand::Shutdown) => {
                transaction.refused = true;
                return Frame::error(NOT_IN_MULTI);
            }
            Ok(ClientCommand::Constant(frame)) => Answer::Now(frame),
            Ok(ClientCommand::Select(db)) => {
                self.db = db;
                Answer::Now(Frame::ok())
            }
            // EXEC forgets the watched keys anyway.
            Ok(ClientCommand::Unwatch) => Answer::Now(Frame::ok()),
            Ok(ClientCommand::GetName) => Answer::Now(Frame::Bulk(self.name.clone())),
            Ok(ClientCommand::ClientId) => Answer::Now(Frame::Integer(self.id as i64)),
            Ok(
                command @ (ClientCommand::ResetStats
                | ClientCommand::BgSave
                | ClientCommand::LastSave
                | ClientCommand::Info(_)
                | ClientCommand::Time),
            ) => Answer::AtExec(command),
            Ok(other) => {
                transaction.refused = true;
                return Frame::error(format!(
                    "ERR '{}' cannot be queued in a transaction here",
                    other.name()
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

    /// Runs a command that is not a keyspace request. SHUTDOWN answers OK
    /// here once `main` has been asked to stop; the port then closes the
    /// connection without a reply, as Redis does.
    pub async fn execute(&mut self, command: ClientCommand) -> Frame {
        match command {
            ClientCommand::Multi => {
                self.transaction = Some(Transaction {
                    db_at_multi: self.db,
                    ..Transaction::default()
                });
                Frame::ok()
            }
            ClientCommand::Discard => match self.transaction.take() {
                Some(transaction) => {
                    self.db = transaction.db_at_multi;
                    self.watched.clear();
                    Frame::ok()
                }
                None => Frame::error("ERR DISCARD without MULTI"),
            },
            ClientCommand::Exec => self.exec().await,
            ClientCommand::Watch(keys) => match self.shared.kv.watch(self.db, &keys).await {
                Ok(watched) => {
                    self.watched.extend(watched);
                    Frame::ok()
                }
                Err(e) => {
                    metrics::error(e.metric_kind());
                    Frame::error(format!("ERR {e}"))
                }
            },
            ClientCommand::Unwatch => {
                self.watched.clear();
                Frame::ok()
            }
            other => self.answer(other).await,
        }
    }

    /// EXEC: the queued keyspace commands as one log entry, applied all or
    /// none, then the commands kept for EXEC, every answer in its place.
    async fn exec(&mut self) -> Frame {
        let Some(mut transaction) = self.transaction.take() else {
            return Frame::error("ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut self.watched);
        if transaction.refused {
            self.db = transaction.db_at_multi;
            return Frame::error("EXECABORT Transaction discarded because of previous errors.");
        }
        let replies = if transaction.queued.is_empty() && watched.is_empty() {
            Vec::new()
        } else {
            let request = Request::Transaction {
                watched,
                commands: std::mem::take(&mut transaction.queued),
            };
            match reply_frame(self.shared.kv.execute_one(request).await) {
                Frame::Array(replies) => replies,
                // Nil (a watched key changed) or an error: nothing ran.
                other => {
                    self.db = transaction.db_at_multi;
                    return other;
                }
            }
        };
        let mut answered = Vec::with_capacity(transaction.answered.len());
        for (at, answer) in transaction.answered {
            let frame = match answer {
                Answer::Now(frame) => frame,
                Answer::AtExec(command) => self.answer(command).await,
            };
            answered.push((at, frame));
        }
        merge(replies, answered)
    }

    /// The commands that neither touch the keyspace nor change the
    /// transaction state; also what a transaction runs at EXEC.
    async fn answer(&mut self, command: ClientCommand) -> Frame {
        let kv = &self.shared.kv;
        match command {
            ClientCommand::Kv(request) => reply_frame(kv.execute_one(request).await),
            ClientCommand::Constant(frame) => frame,
            ClientCommand::Info(section) => {
                info::info(kv, &self.shared.stats, section.as_deref()).await
            }
            ClientCommand::Checksum => match kv.state().checksum().await {
                Ok(sum) => Frame::bulk(format_checksum(&sum)),
                Err(e) => Frame::error(format!("ERR {}", KvError::Storage(e))),
            },
            // The port streams it (`client::Connection::send_backup`).
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
                let since_epoch = since_epoch();
                Frame::Array(vec![
                    Frame::bulk(since_epoch.as_secs().to_string()),
                    Frame::bulk(since_epoch.subsec_micros().to_string()),
                ])
            }
            ClientCommand::Auth { user, password } => {
                let required = self.shared.password.as_deref();
                match auth::check(required, user.as_deref(), &password) {
                    Ok(()) => {
                        self.authenticated = true;
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
            } => self.hello(protocol, auth, name),
            ClientCommand::Select(db) => {
                self.db = db;
                Frame::ok()
            }
            ClientCommand::SetName(name) => {
                self.name = (!name.is_empty()).then_some(name);
                Frame::ok()
            }
            ClientCommand::GetName => Frame::Bulk(self.name.clone()),
            ClientCommand::ClientId => Frame::Integer(self.id as i64),
            ClientCommand::ClientInfo { list } => {
                let line = self.info_line();
                Frame::bulk(if list { line + "\n" } else { line })
            }
            ClientCommand::ResetStats => {
                self.shared.stats.reset();
                Frame::ok()
            }
            // Every write was fsynced at a majority before it was
            // acknowledged: there is nothing left to save.
            ClientCommand::Save => {
                self.shared.stats.saved_at(since_epoch().as_secs());
                Frame::ok()
            }
            ClientCommand::BgSave => {
                self.shared.stats.saved_at(since_epoch().as_secs());
                Frame::Simple("Background saving started")
            }
            ClientCommand::LastSave => match kv.state().clock().await {
                Ok(millis) => {
                    Frame::Integer(info::last_save(millis, self.shared.stats.last_save()))
                }
                Err(e) => Frame::error(format!("ERR {}", KvError::Storage(e))),
            },
            ClientCommand::Shutdown => {
                let who = match &self.name {
                    Some(name) => format!(
                        "SHUTDOWN from client {} ({}, {})",
                        self.id,
                        self.addr,
                        String::from_utf8_lossy(name)
                    ),
                    None => format!("SHUTDOWN from client {} ({})", self.id, self.addr),
                };
                tracing::info!("{who}: stopping this replica");
                self.shared.stop.report(who);
                self.stopping = true;
                Frame::ok()
            }
            ClientCommand::Multi
            | ClientCommand::Exec
            | ClientCommand::Discard
            | ClientCommand::Watch(_)
            | ClientCommand::Unwatch => Frame::error(format!(
                "ERR internal error: {} reached the wrong handler",
                command.name()
            )),
        }
    }

    /// HELLO: maybe log in, switch protocol and name the connection. A
    /// refused HELLO changes nothing, not even the protocol.
    fn hello(
        &mut self,
        protocol: Option<Protocol>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    ) -> Frame {
        match auth {
            Some((user, password)) => {
                let required = self.shared.password.as_deref();
                if let Err(refused) = auth::check(required, Some(&user), &password) {
                    metrics::error(ErrorKind::Auth);
                    return Frame::error(refused);
                }
                self.authenticated = true;
            }
            None if !self.authenticated => return Frame::error(auth::NOAUTH_HELLO),
            None => {}
        }
        if let Some(protocol) = protocol {
            self.protocol = protocol;
        }
        if name.is_some() {
            self.name = name;
        }
        hello_reply(self)
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

/// EXEC's reply: the keyspace commands' replies with the other answers
/// put back in their places.
fn merge(replies: Vec<Frame>, answered: Vec<(usize, Frame)>) -> Frame {
    let mut replies = replies.into_iter();
    let mut answered = answered.into_iter().peekable();
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

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The one line `checksum` prints (at the prompt, on the client port, and by
/// the backup and restore tools).
pub fn format_checksum(sum: &StateChecksum) -> String {
    format!(
        "applied={} keys={} digest={:032x}",
        sum.applied_index, sum.keys, sum.digest
    )
}

/// A command's answer as a frame.
pub fn reply_frame(reply: Result<Reply, KvError>) -> Frame {
    match reply {
        Ok(reply) => frame_of(reply),
        Err(e) => Frame::error(format!("ERR {e}")),
    }
}

/// The machine's answer in a reply's shape.
pub fn frame_of(reply: Reply) -> Frame {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_puts_every_answer_back_in_its_place() {
        let merged = merge(
            vec![Frame::Integer(1), Frame::Integer(2)],
            vec![
                (0, Frame::ok()),
                (2, Frame::Simple("PONG")),
                (4, Frame::Null),
            ],
        );
        assert_eq!(
            merged,
            Frame::Array(vec![
                Frame::ok(),
                Frame::Integer(1),
                Frame::Simple("PONG"),
                Frame::Integer(2),
                Frame::Null,
            ])
        );
    }
}
