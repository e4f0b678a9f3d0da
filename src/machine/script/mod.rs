//! Lua scripts (EVAL): run inside the state machine, on every replica.
//!
//! A script that may write runs at apply, like any other command of its log
//! entry, against the apply batch (a [`Host`]): its writes land in the same
//! atomic batch as the entry's applied index, and a script that fails halfway
//! keeps the writes it made before the error (Redis does not roll back
//! either). A read-only script (EVAL_RO, or `#!lua flags=no-writes`) runs on a
//! read view, like GET.
//!
//! Every replica runs every script, so a script must be deterministic: the
//! same log must give the same state everywhere, whatever the clock, the
//! allocator or the history of the process. That is what this module keeps:
//! - A fresh Lua state for every run, so nothing one run leaves behind
//!   (globals, garbage, memory counted against the limit) can change the next;
//!   a replica that restarted and one that did not run a script alike.
//! - No clock, no file, no process: the `os`, `io`, `package` and `debug`
//!   libraries are never loaded. TIME answers the entry's time.
//! - `math.random` is Redis's rand48, seeded the same way before every run.
//! - A runaway script is stopped by a count hook after [`INSTRUCTION_BUDGET`]
//!   Lua instructions: the count is the same on every replica, so every
//!   replica stops it at the same instruction and answers the same error. A
//!   script that allocates too much fails at the same allocation everywhere
//!   ([`MEMORY_LIMIT`]).
//! - tostring() of a table never shows its address (see `prelude.lua`).
//! - String patterns (`string.find`, `match`, `gmatch`, `gsub`) are matched
//!   in Rust, each step counted like an instruction (`pattern.rs`): Lua's own
//!   matcher runs inside one C call, which the hook never sees.
//!
//! Files: `sandbox.rs` builds the state and runs the script (its Lua half is
//! `prelude.lua`), `calls.rs` decides what redis.call may run, `convert.rs`
//! turns replies into Lua values and back, `libs.rs` holds the `bit` and
//! `cjson` libraries and the PRNG, `pattern.rs` Lua's string patterns.

mod calls;
mod convert;
mod libs;
mod pattern;
mod raised;
mod sandbox;

use sha1::{Digest, Sha1};

use super::parse::{Command, Eval};
use super::Reply;

pub use sandbox::compile_check;

/// Lua instructions a script may run (a string pattern's matching steps
/// count too). A loop of simple statements runs about two hundred million a
/// second here; Redis lets a script run five seconds and then lets a person
/// kill it, which a replicated state machine cannot offer (a kill would reach
/// each replica at another instruction), so the limit is fixed and counted.
#[cfg(not(test))]
pub const INSTRUCTION_BUDGET: u64 = 100_000_000;
/// The unit tests' budget: a tenth, so the runaway scripts they run end
/// sooner in a debug build (the integration tests use the real one).
#[cfg(test)]
pub const INSTRUCTION_BUDGET: u64 = 10_000_000;

/// Bytes of memory a script's Lua state may use.
pub const MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// The stack a script may need, and what the runtime's threads get so that
/// a script never has to switch stacks (see `sandbox::run`).
pub const STACK: usize = 32 * 1024 * 1024;
/// Below this much stack left, a script runs on a fresh stack of [`STACK`].
const STACK_NEEDED: usize = 24 * 1024 * 1024;

/// Bytes of a script's data Rust may hold at once outside the Lua state: the
/// words of one redis.call, one result of cjson, cmsgpack or gsub, the
/// script's answer. The same short string repeated in a table costs Lua
/// little but every copy here, and an allocation the process cannot make
/// aborts every replica; past this the script gets an error instead.
pub const COPY_LIMIT: usize = 64 * 1024 * 1024;

/// What a script's `redis.call` runs against: the apply batch of the entry
/// (a script that may write) or a point-in-time view (a read-only script).
pub trait Host {
    /// Runs a keyspace command in database `db`. `Err` is a storage failure
    /// (it ends the apply), never a user's mistake.
    fn run(&mut self, db: u8, command: Command) -> Result<Reply, String>;
    /// RANDOMKEY, picked by `seed` so every replica picks the same key.
    fn random_key(&mut self, db: u8, seed: u64) -> Result<Reply, String>;
    /// The machine's time for this run, in ms: the entry's, or the read's.
    fn now(&self) -> u64;
    /// Whose rules the script's calls are read by: the entry's format.
    fn format(&self) -> u32;
}

/// Runs `eval`'s script with `db` selected. `Ok` holds the script's answer,
/// errors included; `Err` is a storage failure met by one of its calls.
pub fn run(host: &mut impl Host, db: u8, eval: &Eval) -> Result<Reply, String> {
    // A script may run up to its instruction budget (a second or so): the
    // worker's other tasks (heartbeats, reads) move to another thread
    // meanwhile. Only here: a run of entries without a script stays on the
    // worker, where a hand-off would cost more than the whole apply.
    crate::heavy::long(|| sandbox::run(host, db, eval, &sha1_hex(&eval.body)))
}

/// A script's name: the SHA1 of its body, in lower-case hex (Redis's).
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
