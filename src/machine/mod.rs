//! What the Redis commands mean: the deterministic state machine.
//!
//! Ra's rule, kept here: a state machine is `apply(meta, command, state)`,
//! and every replica that applies the same log reaches the same state. So
//! nothing in this module reads a clock, a random number or anything outside
//! its arguments. Time comes from the log entry, stamped by the leader that
//! proposed it; "now" at apply is the largest time the machine has
//! seen, so it never runs backwards when a leader with a slower clock takes
//! over.
//!
//! Files: `parse.rs` understands a command's words, `record.rs` lays keys and
//! values out on disk, `execute.rs` runs a command against a [`Space`] (the
//! store's view: an apply batch, or a point-in-time read view), `script/`
//! runs Lua scripts (EVAL) inside the machine, deterministically.

mod execute;
mod lcs;
pub mod parse;
pub mod record;
pub mod script;
#[cfg(test)]
pub mod testing;

use serde::{Deserialize, Serialize};

pub use execute::{
    apply_entry, clock, database_sizes, due_expiries, has_stale, machine_version, next_sweep,
    pattern_matches, read, read_head, watch_stamp, Entries, Space, SpaceMut, SweepRange,
};
pub use parse::Command;
pub use record::DATABASES;

use crate::command::Bytes;

/// The Redis version whose command semantics this server follows. Client
/// libraries and tools gate features on it; scripts read it as
/// `redis.REDIS_VERSION`.
pub const REDIS_VERSION: &str = "7.0.15";

/// A command's answer, in the shapes Redis replies have. It travels back from
/// the leader to a follower that forwarded the write, so it is serialisable.
/// It is read through [`ReplyForm`], which bounds how deep it nests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReplyForm")]
pub enum Reply {
    Ok,
    /// A simple-string reply other than OK (TYPE's `string`, `none`).
    Status(String),
    /// A missing value.
    Nil,
    /// EXEC after a WATCHed key changed.
    NilArray,
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Reply>),
    /// Pairs: a map in RESP3, a flat array in RESP2 (LCS ... IDX).
    Map(Vec<(Reply, Reply)>),
    /// A runtime error (`WRONGTYPE ...`, `ERR value is not an integer ...`):
    /// the command did nothing, other commands of its transaction still ran.
    Error(String),
}

/// How deep a reply read from a peer may nest. JSON frames had serde_json's
/// limit; a binary decoder has none, and a frame of nested arrays costs two
/// bytes a level, so without this a peer's answer could exhaust the stack.
const MAX_REPLY_DEPTH: u32 = 128;

thread_local! {
    /// How deep the reply being read on this thread is nested so far.
    static REPLY_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// [`Reply`] as read: the same variants, nested replies read through [`Nested`].
#[derive(Deserialize)]
enum ReplyForm {
    Ok,
    Status(String),
    Nil,
    NilArray,
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Nested>),
    Map(Vec<(Nested, Nested)>),
    Error(String),
}

/// A reply inside another, read only within [`MAX_REPLY_DEPTH`].
struct Nested(Reply);

impl<'de> Deserialize<'de> for Nested {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let depth = REPLY_DEPTH.with(|depth| depth.get());
        if depth >= MAX_REPLY_DEPTH {
            return Err(serde::de::Error::custom(format!(
                "a reply nested deeper than {MAX_REPLY_DEPTH}"
            )));
        }
        REPLY_DEPTH.with(|d| d.set(depth + 1));
        let reply = Reply::deserialize(deserializer);
        REPLY_DEPTH.with(|d| d.set(depth));
        reply.map(Nested)
    }
}

impl From<ReplyForm> for Reply {
    fn from(form: ReplyForm) -> Reply {
        let nested = |list: Vec<Nested>| list.into_iter().map(|n| n.0).collect();
        match form {
            ReplyForm::Ok => Reply::Ok,
            ReplyForm::Status(text) => Reply::Status(text),
            ReplyForm::Nil => Reply::Nil,
            ReplyForm::NilArray => Reply::NilArray,
            ReplyForm::Int(n) => Reply::Int(n),
            ReplyForm::Bulk(bytes) => Reply::Bulk(bytes),
            ReplyForm::Array(items) => Reply::Array(nested(items)),
            ReplyForm::Map(pairs) => {
                Reply::Map(pairs.into_iter().map(|(k, v)| (k.0, v.0)).collect())
            }
            ReplyForm::Error(text) => Reply::Error(text),
        }
    }
}

impl Reply {
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Bytes(bytes.into()))
    }
}

/// What applying a proposal produced: one reply per op.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalOutcome {
    pub replies: Vec<Reply>,
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn a_deeply_nested_reply_is_refused_without_overflowing_the_stack() {
        use crate::binary::{decode, BinaryError};
        // Reply::Array is variant 6: a level is its index and a length of 1.
        let nested = |levels: usize| {
            let mut bytes = [6u8, 1].repeat(levels);
            bytes.push(0); // Reply::Ok
            bytes
        };
        assert!(decode::<Reply>(&nested(100)).is_ok());
        let err = decode::<Reply>(&nested(1_000_000)).unwrap_err();
        assert!(
            matches!(err, BinaryError::Malformed(postcard::Error::SerdeDeCustom)),
            "{err}"
        );
        assert!(decode::<Reply>(&nested(100)).is_ok(), "the depth is reset");
    }
}
