//! `example-ondisk backup`: copies a running cluster's whole state to a file,
//! through one replica's client port (its BACKUP command, `client/mod.rs`).
//!
//! Why the file can be trusted:
//! - the replica copies one point-in-time view of its state, taken once it
//!   has applied everything acknowledged before the backup began (a
//!   linearizable read point, `Kv::backup`);
//! - the bytes go to `FILE.part`; only after all of them arrived, were
//!   fsynced and read back whole (header, key order, record count, CRC: what
//!   an install checks) is that renamed to FILE. A transfer cut anywhere
//!   leaves no FILE, and an older FILE stays as it was;
//! - the CHECKSUM printed at the end is computed from the file itself, so it
//!   can be compared with the `CHECKSUM` of any replica at the same index.
//!
//! The client is blocking and speaks just enough RESP for AUTH and BACKUP:
//! one connection, one request at a time.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::cli::BackupArgs;
use crate::client::tls;
use crate::session::auth::{Password, PASSWORD_VARIABLE};
use crate::store::snapshot::sync_dir;
use crate::store::StateDigest;

/// The longest line the replica may answer with before the backup's bytes
/// (an error, or `$LEN`): anything longer is not our client port.
const MAX_LINE: usize = 64 * 1024;
/// How much is read from the connection, and written to the file, at a time.
const CHUNK: usize = 256 * 1024;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Why a backup was not written. Each is one line; none leaves FILE changed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A password or TLS file that cannot be used (the message names the flag).
    #[error("{0}")]
    Config(String),
    #[error("cannot reach {addr}: {why} (is a replica's client port there?)")]
    Unreachable { addr: String, why: String },
    #[error("the TLS handshake with {addr} failed: {why}")]
    Tls { addr: String, why: String },
    #[error("{addr} asks for a password: give --password-file FILE or set {PASSWORD_VARIABLE}")]
    NeedsPassword { addr: String },
    #[error("{addr} refused the password: {reply}")]
    WrongPassword { addr: String, reply: String },
    #[error("{addr} refused the backup: {reply}")]
    Refused { addr: String, reply: String },
    #[error("{addr} did not answer as an example-ondisk client port ({what})")]
    NotOurs { addr: String, what: String },
    #[error("lost contact with {addr}: {why}; nothing was written to {out}")]
    Cut {
        addr: String,
        why: String,
        out: PathBuf,
    },
    #[error("the copy received from {addr} is damaged ({why}); nothing was written to {out}")]
    Damaged {
        addr: String,
        why: String,
        out: PathBuf,
    },
    #[error("cannot write {path}: {why}")]
    Write { path: PathBuf, why: String },
}

/// Takes the backup `args` ask for; returns the line to print.
pub fn run(args: &BackupArgs) -> Result<String, BackupError> {
    let started = Instant::now();
    // Read before connecting, so a bad file is reported without touching the cluster.
    let password =
        Password::configured(args.password_file.as_deref()).map_err(BackupError::Config)?;
    let tls = match &args.tls_ca_file {
        None => None,
        Some(ca) => {
            let pair = args
                .tls_cert_file
                .as_deref()
                .zip(args.tls_key_file.as_deref());
            Some(tls::client_config(ca, pair).map_err(BackupError::Config)?)
        }
    };
    let addr = args.from.clone();
    let stream = connect(&addr, args.timeout, tls)?;
    let mut port = Port {
        addr: addr.clone(),
        out: args.out.clone(),
        stream: BufReader::with_capacity(CHUNK, stream),
    };
    if let Some(password) = &password {
        port.login(password)?;
    }
    let mut progress = Progress::new(io::stderr().is_terminal());
    progress.waiting(&addr);
    let size = port.ask_for_backup()?;

    let part = PartFile::create(&args.out)?;
    let received = port.receive(size, &part, &mut progress);
    progress.clear();
    received?;
    let (meta, checksum) = File::open(&part.path)
        .and_then(StateDigest::of_file)
        .map_err(|e| BackupError::Damaged {
            addr: addr.clone(),
            why: e.to_string(),
            out: args.out.clone(),
        })?;
    part.keep_as(&args.out)?;
    let at = meta.last_log_id.map_or(0, |id| id.index);
    debug_assert_eq!(at, checksum.applied_index);
    Ok(format!(
        "backup of {addr} written to {}: {size} bytes in {:.1} s, at {}",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        crate::session::format_checksum(&checksum)
    ))
}

/// A connection, plain or TLS.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Connects to `addr` (and completes the TLS handshake, with `tls`).
fn connect(
    addr: &str,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>, BackupError> {
    let unreachable = |why: String| BackupError::Unreachable {
        addr: addr.to_string(),
        why,
    };
    let targets: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let mut last_error = "the name resolves to no address".to_string();
    let mut tcp = None;
    for target in targets {
        match TcpStream::connect_timeout(&target, timeout) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    let mut tcp = tcp.ok_or_else(|| unreachable(last_error))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| unreachable(e.to_string()))?;
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let tls_error = |why: String| BackupError::Tls {
        addr: addr.to_string(),
        why,
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| tls_error(format!("'{host}' is not a server name: {e}")))?;
    let mut connection =
        rustls::ClientConnection::new(config, name).map_err(|e| tls_error(e.to_string()))?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .map_err(|e| tls_error(e.to_string()))?;
    }
    Ok(Box::new(rustls::StreamOwned::new(connection, tcp)))
}

/// The conversation with one replica's client port.
struct Port {
    addr: String,
    out: PathBuf,
    stream: BufReader<Box<dyn Stream>>,
}

impl Port {
    /// AUTH with `password`.
    fn login(&mut self, password: &Password) -> Result<(), BackupError> {
        self.send(&[b"AUTH", password.as_bytes()])?;
        let line = self.read_line()?;
        match Answer::of(&line) {
            Answer::Ok => Ok(()),
            Answer::Error(reply) => Err(BackupError::WrongPassword {
                addr: self.addr.clone(),
                reply,
            }),
            _ => Err(self.not_ours(&line)),
        }
    }

    /// BACKUP; returns the length of the copy that follows.
    fn ask_for_backup(&mut self) -> Result<u64, BackupError> {
        self.send(&[b"BACKUP"])?;
        let line = self.read_line()?;
        match Answer::of(&line) {
            Answer::Length(size) => Ok(size),
            Answer::Error(reply) if reply.starts_with("NOAUTH") => {
                Err(BackupError::NeedsPassword {
                    addr: self.addr.clone(),
                })
            }
            Answer::Error(reply) => Err(BackupError::Refused {
                addr: self.addr.clone(),
                reply,
            }),
            _ => Err(self.not_ours(&line)),
        }
    }

    /// Copies the `size` bytes of the copy, and the CRLF after them, into
    /// `part`, then fsyncs it.
    fn receive(
        &mut self,
        size: u64,
        part: &PartFile,
        progress: &mut Progress,
    ) -> Result<(), BackupError> {
        let write_error = |e: io::Error| BackupError::Write {
            path: part.path.clone(),
            why: e.to_string(),
        };
        let mut file = BufWriter::with_capacity(CHUNK, part.file().map_err(write_error)?);
        let mut buffer = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < size {
            let want = (size - got).min(CHUNK as u64) as usize;
            let n = match self.stream.read(&mut buffer[..want]) {
                Ok(0) => {
                    return Err(self.cut(format!("the copy ended after {got} of {size} bytes")))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.cut(format!("after {got} of {size} bytes: {e}"))),
            };
            file.write_all(&buffer[..n]).map_err(write_error)?;
            got += n as u64;
            progress.show(got, size);
        }
        let mut end = [0u8; 2];
        self.stream
            .read_exact(&mut end)
            .map_err(|e| self.cut(format!("no end after the copy: {e}")))?;
        if &end != b"\r\n" {
            return Err(self.not_ours("the copy is longer than announced"));
        }
        let file = file.into_inner().map_err(|e| write_error(e.into_error()))?;
        file.sync_all().map_err(write_error)
    }

    fn send(&mut self, words: &[&[u8]]) -> Result<(), BackupError> {
        let request = encode_request(words);
        let stream = self.stream.get_mut();
        stream
            .write_all(&request)
            .and_then(|()| stream.flush())
            .map_err(|e| self.cut(e.to_string()))
    }

    /// One answer line, without its CRLF.
    fn read_line(&mut self) -> Result<String, BackupError> {
        let mut line = Vec::new();
        let read = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => Err(self.not_ours("it closed the connection without an answer")),
            Ok(_) if !line.ends_with(b"\r\n") => {
                Err(self.not_ours("its answer is not a RESP line"))
            }
            Ok(_) => {
                line.truncate(line.len() - 2);
                Ok(String::from_utf8_lossy(&line).into_owned())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.cut("no answer in time (see --timeout)".into()))
            }
            Err(e) => Err(self.cut(e.to_string())),
        }
    }

    fn not_ours(&self, what: &str) -> BackupError {
        // `what` may be a line from whatever listens there: printable, and short.
        let what = what
            .chars()
            .take(120)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        BackupError::NotOurs {
            addr: self.addr.clone(),
            what,
        }
    }

    fn cut(&self, why: String) -> BackupError {
        BackupError::Cut {
            addr: self.addr.clone(),
            why,
            out: self.out.clone(),
        }
    }
}

/// An answer line, understood.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Ok,
    Error(String),
    /// `$LEN`: a bulk string of that many bytes follows.
    Length(u64),
    Other,
}

impl Answer {
    fn of(line: &str) -> Answer {
        if line == "+OK" {
            return Answer::Ok;
        }
        if let Some(error) = line.strip_prefix('-') {
            return Answer::Error(error.to_string());
        }
        match line.strip_prefix('$').map(str::parse::<u64>) {
            Some(Ok(size)) => Answer::Length(size),
            _ => Answer::Other,
        }
    }
}

/// A request as RESP: an array of bulk strings.
fn encode_request(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `FILE.part`, where the copy is received. Removed when dropped, unless
/// [`PartFile::keep_as`] renamed it into place.
struct PartFile {
    path: PathBuf,
    kept: bool,
}

impl PartFile {
    fn create(out: &Path) -> Result<PartFile, BackupError> {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(".part");
        let path = out.with_file_name(name);
        File::create(&path).map_err(|e| BackupError::Write {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(PartFile { path, kept: false })
    }

    fn file(&self) -> io::Result<File> {
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
    }

    /// Renames the whole, checked copy to `out`, durably.
    fn keep_as(mut self, out: &Path) -> Result<(), BackupError> {
        let write_error = |e: io::Error| BackupError::Write {
            path: out.to_path_buf(),
            why: e.to_string(),
        };
        fs::rename(&self.path, out).map_err(write_error)?;
        self.kept = true;
        let folder = match out.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(folder).map_err(write_error)
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The progress line on stderr, when stderr is a terminal; nothing otherwise.
struct Progress {
    on: bool,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(on: bool) -> Progress {
        Progress { on, drawn: None }
    }

    fn waiting(&mut self, addr: &str) {
        if self.on {
            eprint!("\rbackup: {addr} is copying its state...");
            let _ = io::stderr().flush();
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        let due = self.drawn.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if self.on && (due || done == total) {
            eprint!("\r\x1b[K{}", progress_line(done, total));
            let _ = io::stderr().flush();
            self.drawn = Some(Instant::now());
        }
    }

    fn clear(&mut self) {
        if self.on {
            eprint!("\r\x1b[K");
            let _ = io::stderr().flush();
        }
    }
}

/// `backup [#########-----------]  45%  12.3 of 27.1 MiB`.
fn progress_line(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * WIDTH as f64) as u64).min(WIDTH);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    format!(
        "backup [{}{}] {:3.0}%  {:.1} of {:.1} MiB",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        fraction * 100.0,
        mib(done),
        mib(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_understood() {
        assert_eq!(Answer::of("+OK"), Answer::Ok);
        assert_eq!(Answer::of("$1234"), Answer::Length(1234));
        assert_eq!(
            Answer::of("-WRONGPASS invalid"),
            Answer::Error("WRONGPASS invalid".into())
        );
        for other in ["$-1", "$x", "", "*2", "+PONG", "HTTP/1.1 400"] {
            assert_eq!(Answer::of(other), Answer::Other, "{other:?}");
        }
    }

    #[test]
    fn requests_are_arrays_of_bulk_strings() {
        assert_eq!(encode_request(&[b"BACKUP"]), b"*1\r\n$6\r\nBACKUP\r\n");
        assert_eq!(
            encode_request(&[b"AUTH", b"p w"]),
            b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n"
        );
    }

    #[test]
    fn the_progress_line_fills_with_the_bytes() {
        assert!(progress_line(0, 100).starts_with("backup [------------------------------]   0%"));
        assert!(progress_line(50, 100).contains("[###############---------------]  50%"));
        assert!(progress_line(100, 100).contains("100%"));
        assert!(progress_line(0, 0).contains("100%"));
        assert!(progress_line(3 << 20, 6 << 20).ends_with("3.0 of 6.0 MiB"));
    }

    #[test]
    fn a_part_file_is_removed_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.snap");
        let part = PartFile::create(&out).unwrap();
        let part_path = part.path.clone();
        assert!(part_path.ends_with("b.snap.part"));
        drop(part);
        assert!(!part_path.exists());
        let part = PartFile::create(&out).unwrap();
        part.keep_as(&out).unwrap();
        assert!(out.exists() && !part_path.exists());
    }
}
