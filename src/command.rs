//! What travels through the Raft log: versioned proposals of Redis commands.
//!
//! A proposal travels inside each log entry, on disk and on the wire. As JSON
//! (log records of older builds, frames to replicas that speak only JSON):
//!
//! ```json
//! {"format":3,"time_ms":1764467520000,"ops":[{"Run":{"db":0,"args":["SET","k","v"]}}]}
//! ```
//!
//! In the binary encoding of log records and frames (`binary.rs`) it is the
//! same three fields, with `ops` as bytes: the format decides how `ops` is
//! read, whatever carries the proposal.
//!
//! Format 5 is format 4 with `ops` in the binary encoding instead of JSON,
//! which costs less to write and, above all, to read at apply. Its `ops` are
//! bytes: as they are in a binary record or frame, as a base64 string in JSON
//! (`"ops":"..."`, which a replica of an older release stores like any ops
//! and then holds back at, rule 6 of `store/mod.rs`). A leader writes format 5
//! only once the cluster runs machine version 5 (`upgrade.rs`), which it moves
//! to on its own once every member can apply it. Before that, ops are JSON,
//! and in a binary record or frame they travel as the bytes of that JSON text.
//!
//! The `format` number is read before anything else. A replica that meets a
//! format it does not know stops with a clear error instead of guessing (Ra's
//! lesson: a state machine's format is versioned so replicas can be upgraded
//! one at a time, and an old binary must never apply a newer command wrongly).
//! That is why `ops` is kept as raw JSON until [`Proposal::decode`] has checked
//! the format.
//!
//! Format 6 is format 5 with commands checked in Redis 7.0's order
//! (`REDIS_ORDER_FORMAT`): which of two mistakes is reported, whether GETEX
//! of a missing key and EXPIRE of an overflowing time answer nil, 0 or an
//! error, and SET options that Redis lets repeat (`NX NX`, `EX 1 EX 2`). Each
//! changes an answer, and so what a script that reads it writes, or what an
//! entry writes: a machine version like any other.
//!
//! Format 4 is format 3 that may hold Lua scripts (EVAL) and machine-version
//! entries. Until the cluster runs version 5, an entry is written in the
//! oldest format that can carry it (3 unless it holds a script), so during a
//! rolling upgrade the replicas of the previous release go on applying
//! everything but scripts.
//!
//! The format is also the *machine version* (Ra's versioned machines): the
//! cluster runs one version, recorded in its state by a committed
//! [`Op::MachineVersion`] entry, and the leader proposes an entry that needs a
//! newer version only once the cluster has moved to it (`upgrade.rs`). A
//! replica that meets an entry of a format it cannot apply holds back applying
//! (`store/state_machine.rs`) instead of stopping: it keeps storing the log
//! and voting, and applies everything outstanding once it is upgraded.
//!
//! `time_ms` is the leader's clock when it proposed the entry: expiry is
//! decided from it at apply (see `machine/mod.rs`), never from the clock of the
//! replica applying. The leader stamps it ([`Proposal::stamp`]) even when a
//! follower built the proposal.
//!
//! Keys and values are byte strings. Valid UTF-8 is written as a plain JSON
//! string so logs stay readable; anything else as `{"b64":"..."}`.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The newest proposal format this build writes and understands: 6, whose
/// commands are checked in Redis 7.0's order. Format 5 made ops binary;
/// format 4 may hold scripts; format 3 added `Op::Sweep`; format 2 is the same
/// without it, so this build still applies it. Format 1 (plain puts and
/// deletes, no time) is gone with on-disk layout 1.
pub const PROPOSAL_FORMAT: u32 = 6;
/// The format from which a command's arguments are checked in the order
/// Redis 7.0 checks them, and SET and GETEX take options as it does
/// (`machine/parse.rs`, `machine/execute.rs`). Earlier formats keep the old
/// order: the same entry must get the same answer, and change the same keys,
/// at every replica, whichever build applies it.
pub const REDIS_ORDER_FORMAT: u32 = 6;
/// The first format whose ops are bytes in the binary encoding, not JSON.
pub const BINARY_OPS_FORMAT: u32 = 5;
/// The format that may hold scripts (and every one after it).
pub const SCRIPT_FORMAT: u32 = 4;
/// The format this build writes for entries without a script while the
/// cluster runs a version before [`BINARY_OPS_FORMAT`].
pub const SCRIPTLESS_FORMAT: u32 = 3;
const OLDEST_PROPOSAL_FORMAT: u32 = 2;

/// The machine version of a state that holds no version record: one written
/// before versions were recorded, or a new cluster before its leader moved it
/// on. Every replica starts from it, so every replica applying the same log
/// agrees on the version at every index.
pub const UNVERSIONED_MACHINE: u32 = SCRIPTLESS_FORMAT;

/// The highest machine version (proposal format) this replica can apply:
/// this build's newest, unless a test plays an older release.
pub fn applicable_machine_version() -> u32 {
    crate::faults::machine_version_limit().map_or(PROPOSAL_FORMAT, |limit| {
        limit.clamp(UNVERSIONED_MACHINE, PROPOSAL_FORMAT)
    })
}

/// Longest key accepted from a person or a client, in bytes. fjall takes
/// keys of up to 64 KiB, and a stored key adds a few bytes (see
/// `machine/record.rs`); Redis's own tests use keys of 50,000 bytes.
pub const MAX_KEY_LEN: usize = 60 * 1024;
/// Longest value accepted from a person or a client, in bytes (Redis allows
/// 512 MB; its own tests write 4 MB values). An entry this large must still
/// cross to a follower, be parsed and be fsynced within one AppendEntries
/// deadline, which grows with the bytes carried (`network/client.rs`);
/// replication and apply read the log in bounded pages (`store/log.rs`), so
/// several such entries never travel or sit in memory together.
pub const MAX_VALUE_LEN: usize = 32 * 1024 * 1024;

/// One entry's worth of operations, applied atomically and in order.
///
/// As JSON it is the object in the module comment. In the binary encoding
/// (`binary.rs`: log records and binary Raft frames) it is the same three
/// fields in order, `ops` as a byte string. Which form `ops` take is the
/// format's: JSON up to format 4, bytes from [`BINARY_OPS_FORMAT`] on, and
/// each form is checked when read, so a proposal read from either encoding
/// can be written out in the other and means the same to every build.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub format: u32,
    /// The proposing leader's clock, in ms since the epoch.
    pub time_ms: u64,
    ops: Ops,
}

/// A proposal's operations as they travel, decoded only by [`Proposal::decode`].
#[derive(Clone, Debug)]
enum Ops {
    /// Formats before [`BINARY_OPS_FORMAT`]: the JSON of `Vec<Op>`.
    Json(Box<RawValue>),
    /// [`BINARY_OPS_FORMAT`] and after: bytes (format 5: `binary.rs` of `Vec<Op>`).
    Binary(Vec<u8>),
}

impl Ops {
    fn bytes(&self) -> &[u8] {
        match self {
            Ops::Json(json) => json.get().as_bytes(),
            Ops::Binary(bytes) => bytes,
        }
    }
}

/// [`Proposal`] as JSON: an absent `time_ms` read as 0.
#[derive(Serialize, Deserialize)]
struct JsonProposal<T> {
    format: u32,
    #[serde(default)]
    time_ms: u64,
    ops: T,
}

/// [`Proposal`] in a binary encoding: `ops` always as bytes.
#[derive(Serialize, Deserialize)]
struct BinaryProposal<T> {
    format: u32,
    time_ms: u64,
    ops: T,
}

impl Serialize for Proposal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let (format, time_ms) = (self.format, self.time_ms);
        if !serializer.is_human_readable() {
            let ops = Bytes::borrowed_form(self.ops.bytes());
            return BinaryProposal {
                format,
                time_ms,
                ops,
            }
            .serialize(serializer);
        }
        match &self.ops {
            Ops::Json(json) => {
                let ops = &**json;
                JsonProposal {
                    format,
                    time_ms,
                    ops,
                }
                .serialize(serializer)
            }
            Ops::Binary(bytes) => {
                let ops = base64::engine::general_purpose::STANDARD.encode(bytes);
                JsonProposal {
                    format,
                    time_ms,
                    ops,
                }
                .serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (format, time_ms, ops) = if deserializer.is_human_readable() {
            let JsonProposal {
                format,
                time_ms,
                ops,
            } = JsonProposal::<Box<RawValue>>::deserialize(deserializer)?;
            (format, time_ms, ops_from_json(format, ops)?)
        } else {
            let BinaryProposal {
                format,
                time_ms,
                ops,
            } = BinaryProposal::<Bytes>::deserialize(deserializer)?;
            (format, time_ms, ops_from_bytes(format, ops.0)?)
        };
        Ok(Proposal {
            format,
            time_ms,
            ops,
        })
    }
}

/// The ops of a proposal of `format` read from JSON: as they are before
/// [`BINARY_OPS_FORMAT`], else the bytes their base64 string holds.
fn ops_from_json<E: serde::de::Error>(format: u32, json: Box<RawValue>) -> Result<Ops, E> {
    use base64::Engine as _;
    if format < BINARY_OPS_FORMAT {
        return Ok(Ops::Json(json));
    }
    let text: String = serde_json::from_str(json.get())
        .map_err(|_| E::custom(format!("a proposal of format {format} needs ops in base64")))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map(Ops::Binary)
        .map_err(|e| E::custom(format!("a proposal's ops are not base64: {e}")))
}

/// The ops of a proposal of `format` read from a binary encoding: checked to
/// be JSON text before [`BINARY_OPS_FORMAT`], bytes as they are from it on.
fn ops_from_bytes<E: serde::de::Error>(format: u32, bytes: Vec<u8>) -> Result<Ops, E> {
    if format >= BINARY_OPS_FORMAT {
        return Ok(Ops::Binary(bytes));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| E::custom("a proposal's ops are not UTF-8 text"))?;
    RawValue::from_string(text)
        .map(Ops::Json)
        .map_err(|e| E::custom(format!("a proposal's ops are not JSON: {e}")))
}

/// A single change to the key-value state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// One Redis command, as the client sent it, in database `db`.
    Run(Queued),
    /// MULTI ... EXEC: all the commands or, if a watched key changed since
    /// it was watched, none.
    Exec {
        watched: Vec<Watched>,
        commands: Vec<Queued>,
    },
    /// The leader's active expiry: remove these keys if their expiry has
    /// passed at this entry's time.
    Reap(Vec<Expired>),
    /// The leader's sweep after a flush: remove the records of `db` at SCAN
    /// positions `first..=last` that the database's flush mark made stale.
    Sweep { db: u8, first: u64, last: u64 },
    /// The leader moves the cluster to machine version `to` (never back:
    /// applying it keeps the higher of the two). Written in format `to`, so a
    /// replica that cannot apply that version holds back at this entry.
    MachineVersion { to: u32 },
}

/// A command's words and the database it runs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub db: u8,
    pub args: Vec<Bytes>,
}

/// A key a client WATCHed: the index that had last written it when it was
/// watched (`seen`, 0 for no key) and the applied index of that read (`since`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    pub db: u8,
    pub key: Bytes,
    pub seen: u64,
    pub since: u64,
}

/// An expiry-index entry found due by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    pub db: u8,
    pub key: Bytes,
    pub at: u64,
}

impl Op {
    /// Roughly how many bytes the operation carries (to bound a batch).
    pub fn size(&self) -> usize {
        let args = |q: &Queued| q.args.iter().map(|a| a.len()).sum::<usize>();
        match self {
            Op::Run(queued) => args(queued),
            Op::Exec { watched, commands } => {
                watched.iter().map(|w| w.key.len()).sum::<usize>()
                    + commands.iter().map(args).sum::<usize>()
            }
            Op::Reap(due) => due.iter().map(|e| e.key.len() + 9).sum(),
            Op::Sweep { .. } => 17,
            Op::MachineVersion { .. } => 4,
        }
    }

    /// The oldest format (machine version) that can carry the operation.
    pub fn format_needed(&self) -> u32 {
        match self {
            Op::MachineVersion { to } => (*to).max(SCRIPT_FORMAT),
            Op::Run(queued) => format_needed_by([queued]),
            Op::Exec { commands, .. } => format_needed_by(commands),
            Op::Reap(_) | Op::Sweep { .. } => SCRIPTLESS_FORMAT,
        }
    }
}

/// The oldest format (machine version) that can carry these commands, run
/// as a write (one command, or a transaction's).
pub fn format_needed_by<'a>(commands: impl IntoIterator<Item = &'a Queued>) -> u32 {
    if commands.into_iter().any(Queued::runs_a_script) {
        SCRIPT_FORMAT
    } else {
        SCRIPTLESS_FORMAT
    }
}

impl Queued {
    /// Whether the command is EVAL or EVAL_RO (EVALSHA is turned into EVAL
    /// before it gets this far).
    pub fn runs_a_script(&self) -> bool {
        self.args.first().is_some_and(|name| {
            name.eq_ignore_ascii_case(b"eval") || name.eq_ignore_ascii_case(b"eval_ro")
        })
    }
}

/// Why a log entry's proposal cannot be applied by this build.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "the log holds a command of format {found}, but this build of example-ondisk only \
         understands formats {OLDEST_PROPOSAL_FORMAT} to {PROPOSAL_FORMAT}; upgrade this replica before it can go on"
    )]
    UnknownFormat { found: u32 },
    #[error("a command of format {format} in the log is malformed: {why}")]
    Malformed { format: u32, why: String },
}

/// The wall-clock time of this machine, in ms since the epoch. Only a leader
/// stamping an entry or answering a read-index round calls this; applying an
/// entry uses the time stamped in it, never a clock.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Proposal {
    /// Wraps operations for a cluster that runs `machine_version`, stamped
    /// with this replica's clock (a leader that did not build it stamps it
    /// again): in the oldest format that can carry them, or, once the cluster
    /// runs version 5 or later, in the cluster's version. A version read from
    /// any replica's applied state will do: versions only go up, and one is
    /// applied only once the move to it is committed, which happened only
    /// after every member could apply it (`upgrade.rs`).
    pub fn new(ops: &[Op], machine_version: u32) -> Self {
        let needed = ops
            .iter()
            .map(Op::format_needed)
            .max()
            .unwrap_or(SCRIPTLESS_FORMAT);
        // From version 5 on, every entry is written in the cluster's version:
        // each newer one changes how all commands are read or run.
        let needed = match machine_version >= BINARY_OPS_FORMAT {
            true => needed.max(machine_version.min(PROPOSAL_FORMAT)),
            false => needed,
        };
        // A test can make this replica write another format, past the
        // version gate, to check that replicas which cannot apply it hold
        // back instead of applying it.
        let format = crate::faults::proposal_format_override().unwrap_or(needed);
        let ops = if format >= BINARY_OPS_FORMAT {
            Ops::Binary(crate::binary::encode(ops))
        } else {
            Ops::Json(
                serde_json::value::to_raw_value(ops)
                    .expect("serialising ops to JSON cannot fail: keys and values are plain data"),
            )
        };
        Proposal {
            format,
            time_ms: wall_clock_ms(),
            ops,
        }
    }

    /// Sets the entry's time to this (the leader's) clock.
    pub fn stamp(mut self) -> Self {
        self.time_ms = wall_clock_ms();
        self
    }

    /// The operations, if this build understands the proposal's format.
    /// (Whether this replica may apply that format now is the state
    /// machine's question: see `store/state_machine.rs`.)
    pub fn decode(&self) -> Result<Vec<Op>, DecodeError> {
        let format = self.format;
        if !(OLDEST_PROPOSAL_FORMAT..=PROPOSAL_FORMAT).contains(&format) {
            return Err(DecodeError::UnknownFormat { found: format });
        }
        let malformed = |why: String| DecodeError::Malformed { format, why };
        match &self.ops {
            Ops::Json(json) => {
                serde_json::from_str(json.get()).map_err(|e| malformed(e.to_string()))
            }
            Ops::Binary(bytes) => {
                crate::binary::decode(bytes).map_err(|e| malformed(e.to_string()))
            }
        }
    }

    /// The size of its operations as they travel, in bytes.
    pub fn encoded_len(&self) -> usize {
        self.ops.bytes().len()
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (format, time) = (self.format, self.time_ms);
        match &self.ops {
            Ops::Json(json) => write!(f, "format {format} time {time} ops {}", json.get()),
            Ops::Binary(bytes) => {
                write!(
                    f,
                    "format {format} time {time} ops of {} bytes",
                    bytes.len()
                )
            }
        }
    }
}

/// A byte string that serialises as text when it is UTF-8 that JSON writes
/// almost as is, as base64 otherwise. Either way a value's JSON is at most
/// about 1.6 times its size, which bounds the frames that carry it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Self {
        Bytes(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// Whether JSON writes `text` at about its own size: a byte JSON escapes
/// costs up to six, so at most one in eight may need it.
fn cheap_as_json(text: &str) -> bool {
    let escaped = text
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    escaped * 8 <= text.len()
}

impl Bytes {
    /// Bytes that serialise as [`Bytes`] do, without a copy.
    fn borrowed_form(bytes: &[u8]) -> BorrowedBytes<'_> {
        BorrowedBytes(bytes)
    }
}

/// How [`Bytes`] serialise, for borrowed bytes. A binary encoding (one that
/// is not human-readable) takes the bytes as they are; JSON takes text or
/// base64, as the module comment says.
struct BorrowedBytes<'a>(&'a [u8]);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BorrowedBytes(&self.0).serialize(serializer)
    }
}

impl Serialize for BorrowedBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(self.0);
        }
        match std::str::from_utf8(self.0) {
            Ok(text) if cheap_as_json(text) => serializer.serialize_str(text),
            _ => Base64Form {
                b64: base64::engine::general_purpose::STANDARD.encode(self.0),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: untagged buffers every value
        // before trying each form, and this runs for every key and value applied.
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Bytes;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a string, or {"b64": "..."}, or bytes"#)
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(bytes.to_vec()))
            }

            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(bytes))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Bytes, E> {
                Ok(Bytes(text.as_bytes().to_vec()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Bytes, E> {
                Ok(Bytes(text.into_bytes()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Bytes, A::Error> {
                use base64::Engine as _;
                let Base64Form { b64 } =
                    Base64Form::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map(Bytes)
                    .map_err(|e| A::Error::custom(format!("bytes that are not base64: {e}")))
            }
        }
        // A binary encoding cannot say what comes next (no
        // `deserialize_any`): there, bytes are always raw bytes.
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(BytesVisitor)
        } else {
            deserializer.deserialize_byte_buf(BytesVisitor)
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Base64Form {
    b64: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&[u8]]) -> Op {
        Op::Run(Queued {
            db: 3,
            args: words.iter().map(|w| Bytes(w.to_vec())).collect(),
        })
    }

    #[test]
    fn proposal_round_trips_through_json() {
        let ops = vec![
            run(&[b"SET", b"k", b"hello world"]),
            run(&[b"DEL", &[0xff, 0x00, 0x80]]),
            Op::Reap(vec![Expired {
                db: 1,
                key: "x".into(),
                at: 5,
            }]),
        ];
        let json = serde_json::to_string(&Proposal::new(&ops, UNVERSIONED_MACHINE)).unwrap();
        // No script: the format of the previous release.
        assert!(json.contains(r#""format":3"#), "{json}");
        assert!(json.contains(r#"{"b64":"/wCA"}"#), "{json}");
        let back: Proposal = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode().unwrap(), ops);
    }

    #[test]
    fn an_entry_with_a_script_is_written_in_format_4() {
        let script = run(&[b"EVAL", b"return 1", b"0"]);
        let in_exec = Op::Exec {
            watched: vec![],
            commands: vec![Queued {
                db: 0,
                args: vec!["eval_ro".into(), "return 1".into(), "0".into()],
            }],
        };
        for ops in [vec![run(&[b"SET", b"k", b"v"]), script], vec![in_exec]] {
            let proposal = Proposal::new(&ops, UNVERSIONED_MACHINE);
            assert_eq!(proposal.format, 4);
            assert_eq!(proposal.decode().unwrap(), ops);
        }
        assert_eq!(Proposal::new(&[run(&[b"GET", b"eval"])], 4).format, 3);
    }

    #[test]
    fn a_version_entry_is_written_in_the_format_it_moves_to() {
        for to in [4, 5] {
            let proposal = Proposal::new(&[Op::MachineVersion { to }], UNVERSIONED_MACHINE);
            assert_eq!(proposal.format, to);
        }
        assert_eq!(
            format_needed_by(&[Queued {
                db: 0,
                args: vec!["set".into(), "k".into(), "v".into()],
            }]),
            SCRIPTLESS_FORMAT
        );
    }

    #[test]
    fn unknown_format_is_refused_not_guessed() {
        // Before format 5 ops are JSON, from it on bytes (base64 in JSON).
        let unknown = [
            (1, r#"{"format":1,"ops":{"something":"new"}}"#),
            (7, r#"{"format":7,"ops":"c29tZXRoaW5nIG5ldw=="}"#),
        ];
        for (found, json) in unknown {
            let proposal: Proposal = serde_json::from_str(json).unwrap();
            let err = proposal.decode().unwrap_err();
            assert!(matches!(err, DecodeError::UnknownFormat { found: f } if f == found));
            assert!(err.to_string().contains("only understands formats 2 to 6"));
            let binary: Proposal =
                crate::binary::decode(&crate::binary::encode(&proposal)).unwrap();
            assert_eq!(
                serde_json::to_string(&binary).unwrap(),
                serde_json::to_string(&proposal).unwrap()
            );
        }
    }

    #[test]
    fn format_2_is_still_applied() {
        let json = r#"{"format":2,"time_ms":5,"ops":[{"Run":{"db":0,"args":["SET","k","v"]}}]}"#;
        let proposal: Proposal = serde_json::from_str(json).unwrap();
        assert_eq!(proposal.decode().unwrap().len(), 1);
    }

    #[test]
    fn malformed_ops_are_an_error() {
        let json = r#"{"format":2,"ops":[{"Explode":{"key":"k"}}]}"#;
        let proposal: Proposal = serde_json::from_str(json).unwrap();
        assert!(matches!(
            proposal.decode(),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn once_the_cluster_runs_version_5_every_entry_is_binary_format_5() {
        let script = run(&[b"EVAL", b"return 1", b"0"]);
        for ops in [vec![run(&[b"SET", b"k", &[0xff, 0]])], vec![script]] {
            let proposal = Proposal::new(&ops, 5);
            assert_eq!(proposal.format, 5);
            assert_eq!(proposal.decode().unwrap(), ops);
            // In JSON the ops are one base64 string, which any older build
            // stores like other ops (and holds back at).
            let json = serde_json::to_string(&proposal).unwrap();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(value["ops"].is_string(), "{json}");
            let back: Proposal = serde_json::from_str(&json).unwrap();
            assert_eq!(back.decode().unwrap(), ops);
            let back: Proposal = crate::binary::decode(&crate::binary::encode(&proposal)).unwrap();
            assert_eq!(back.decode().unwrap(), ops);
            // The binary ops are smaller than the JSON ones would be.
            assert!(proposal.encoded_len() < Proposal::new(&ops, 4).encoded_len());
        }
    }

    #[test]
    fn format_5_ops_that_are_not_binary_ops_are_refused() {
        for json in [
            r#"{"format":5,"ops":[{"Run":{"db":0,"args":["SET","k","v"]}}]}"#,
            r#"{"format":5,"ops":"not base64!"}"#,
        ] {
            assert!(serde_json::from_str::<Proposal>(json).is_err(), "{json}");
        }
        // Base64 of bytes that are no ops: read, then refused at decode.
        let garbage: Proposal = serde_json::from_str(r#"{"format":5,"ops":"/////w=="}"#).unwrap();
        let err = garbage.decode().unwrap_err();
        assert!(
            matches!(err, DecodeError::Malformed { format: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn json_ops_round_trip_through_the_binary_encoding_and_keep_their_json() {
        let ops = vec![run(&[b"SET", &[0xff, 0, 0x80], b"v"])];
        let proposal = Proposal::new(&ops, UNVERSIONED_MACHINE);
        let back: Proposal = crate::binary::decode(&crate::binary::encode(&proposal)).unwrap();
        assert_eq!(back.decode().unwrap(), ops);
        assert_eq!(
            (back.format, back.time_ms),
            (proposal.format, proposal.time_ms)
        );
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&proposal).unwrap()
        );
    }

    #[test]
    fn json_ops_in_a_binary_record_are_checked_to_be_json() {
        // Format 3, time 0, then ops of one byte, "{": not JSON.
        assert!(crate::binary::decode::<Proposal>(&[3, 0, 1, b'{']).is_err());
        let empty: Proposal = crate::binary::decode(&[3, 0, 2, b'[', b']']).unwrap();
        assert!(empty.decode().unwrap().is_empty());
    }

    #[test]
    fn bytes_are_raw_in_binary() {
        let value = Bytes(vec![0xff; 100]);
        let encoded = crate::binary::encode(&value);
        assert_eq!(encoded.len(), 101, "a length byte and the bytes");
        assert_eq!(crate::binary::decode::<Bytes>(&encoded).unwrap(), value);
    }

    #[test]
    fn escape_heavy_text_goes_as_base64() {
        let quotes = Bytes(vec![b'"'; 1000]);
        let json = serde_json::to_string(&quotes).unwrap();
        assert!(json.len() < 1400, "{} bytes", json.len());
        assert_eq!(serde_json::from_str::<Bytes>(&json).unwrap(), quotes);
        let readable = Bytes(b"a somewhat longer \"quoted\" word".to_vec());
        assert!(serde_json::to_string(&readable).unwrap().contains("quoted"));
    }

    #[test]
    fn bad_base64_is_an_error() {
        for bad in [r#"{"b64":"a"}"#, r#"{"b64":"!!"}"#, r#"{"hex":"00"}"#] {
            assert!(serde_json::from_str::<Bytes>(bad).is_err(), "{bad}");
        }
    }
}
