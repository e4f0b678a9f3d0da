//! The Lua state a script runs in: built for one run, dropped after it.
//!
//! `run` is the whole life of a script: a fresh state with only the `base`,
//! `table`, `string` and `math` libraries and a memory limit, the Rust
//! functions the prelude needs, the prelude (`prelude.lua`), the script
//! compiled as text, the count hook, the run, and the answer converted before
//! the state goes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use mlua::{
    chunk::ChunkMode, Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic,
    VmState,
};

use super::calls::Calls;
use super::convert::{self, lua_to_reply, one_line, reply_to_lua, words_of};
use super::libs::{self, Rand48};
use super::pattern;
use super::raised::Raised;
use super::{Host, INSTRUCTION_BUDGET, MEMORY_LIMIT, STACK, STACK_NEEDED};
use crate::machine::parse::{parse_shebang, Eval};
use crate::machine::{Reply, REDIS_VERSION};

const PRELUDE: &str = include_str!("prelude.lua");

/// The prelude compiled once per process: parsing it took longer than the
/// rest of a short script's run. This build's own bytecode, never a
/// client's (a client's script is always loaded as text).
fn prelude_bytecode() -> &'static [u8] {
    static BYTECODE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTECODE.get_or_init(|| {
        let lua = Lua::new();
        let _name = lua.create_string("=prelude"); // see `compile`
        match lua.load(PRELUDE).set_name("=prelude").into_function() {
            Ok(prelude) => prelude.dump(false),
            // A syntax error in our own prelude: every script then answers
            // this error (and the unit tests fail).
            Err(e) => {
                let message = format!(
                    "error({:?}, 0)",
                    format!("the prelude does not compile: {e}")
                );
                lua.load(message.as_str())
                    .into_function()
                    .map(|f| f.dump(false))
                    .unwrap_or_default()
            }
        }
    })
}

/// The count hook fires every this many instructions.
const HOOK_EVERY: u32 = 1000;

/// The chunk name of a script, as Redis names it (errors say `user_script:3:`).
const SCRIPT_NAME: &str = "@user_script";

/// What the Rust callbacks and the hook of one run share.
struct RunState {
    instructions: Cell<u64>,
    /// Set when the budget is spent or a storage call failed: the script is
    /// ended and its answer is decided here, not by the script.
    stopped: Cell<bool>,
    resp3: Cell<bool>,
    random: Cell<Rand48>,
}

fn new_state() -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    Ok(lua)
}

/// Whether a script compiles, without running it: what SCRIPT LOAD checks,
/// and what EVAL checks before it is proposed. The error is Redis's line.
pub fn compile_check(body: &[u8]) -> Result<(), String> {
    let shebang = parse_shebang(body)?;
    let code = &body[shebang.map_or(0, |s| s.length)..];
    let lua = new_state().map_err(|e| format!("ERR the script could not be compiled: {e}"))?;
    compile(&lua, code).map(|_| ())
}

fn compile(lua: &Lua, code: &[u8]) -> Result<Function, String> {
    // Lua 5.1's parser does not keep its chunk name alive while it runs
    // (CVE-2025-49844, a use-after-free if the collector runs meanwhile).
    // Names are interned: holding the same string here keeps it alive.
    let _name = lua
        .create_string(SCRIPT_NAME)
        .map_err(|e| format!("ERR Error compiling script (new function): {e}"))?;
    lua.load(code)
        .set_name(SCRIPT_NAME)
        .set_mode(ChunkMode::Text)
        .into_function()
        .map_err(|e| {
            let why = match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            };
            format!(
                "ERR Error compiling script (new function): {}",
                one_line(&why)
            )
        })
}

/// Runs `eval` (see `script::run`) with at least [`STACK_NEEDED`] of stack
/// left, switching to a fresh stack of [`STACK`] if this thread has less:
/// how deep a script can make Lua and the libraries recurse is bounded (Lua's
/// 200 nested C calls, cjson's and cmsgpack's depth limits, the pattern
/// matcher's), but not within the 2 MiB of a test thread in a debug build.
/// A stack overflow would abort every replica at the same entry, again
/// after each restart. The runtime's threads are given [`STACK`] (`main.rs`),
/// so the switch only happens elsewhere (tests).
pub fn run(host: &mut impl Host, db: u8, eval: &Eval, sha: &str) -> Result<Reply, String> {
    stacker::maybe_grow(STACK_NEEDED, STACK, || run_here(host, db, eval, sha))
}

fn run_here(host: &mut impl Host, db: u8, eval: &Eval, sha: &str) -> Result<Reply, String> {
    let lua = match new_state() {
        Ok(lua) => lua,
        Err(e) => return Ok(Reply::Error(format!("ERR the script could not start: {e}"))),
    };
    let state = Rc::new(RunState {
        instructions: Cell::new(0),
        stopped: Cell::new(false),
        resp3: Cell::new(false),
        random: Cell::new(Rand48::start()),
    });
    let failure = RefCell::new(None);
    let mut calls = Calls::new(db, eval.is_read());
    let calls = RefCell::new((&mut calls, host));
    let outcome = lua.scope(|scope| {
        // redis.call raises a command's error; redis.pcall returns it.
        let raising = scope.create_function(|lua, args: Variadic<Value>| {
            let (calls, host) = &mut *calls.borrow_mut();
            match call(lua, calls, *host, &state, &failure, &args)? {
                Ok(value) => Ok(value),
                Err(text) => Err(Raised::table(&text)),
            }
        })?;
        let returning = scope.create_function(|lua, args: Variadic<Value>| {
            let (calls, host) = &mut *calls.borrow_mut();
            match call(lua, calls, *host, &state, &failure, &args)? {
                Ok(value) => Ok(value),
                Err(text) => error_table(lua, &text),
            }
        })?;
        let native = natives(&lua, &state, eval)?;
        native.raw_set("call", raising)?;
        native.raw_set("pcall", returning)?;
        let runner: Function = lua
            .load(prelude_bytecode())
            .set_mode(ChunkMode::Binary)
            .call(native)?;
        let script = match compile(&lua, eval.code()) {
            Ok(script) => script,
            Err(message) => return Ok(Reply::Error(message)),
        };
        let counter = state.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| count(&counter),
        )?;
        let (ok, value): (bool, Value) = runner.call(script)?;
        lua.remove_global_hook();
        Ok(if ok {
            lua_to_reply(&value)
        } else {
            script_error(&value, sha)
        })
    });
    if let Some(failure) = failure.into_inner() {
        return Err(failure);
    }
    if state.stopped.get() {
        return Ok(Reply::Error(format!(
            "ERR the script was stopped after {INSTRUCTION_BUDGET} Lua instructions, the limit \
             on every replica (writes it made before stay) script: {sha}"
        )));
    }
    Ok(outcome.unwrap_or_else(|e| {
        Reply::Error(format!(
            "ERR Error running script {sha}, {}",
            one_line(&mlua_error_text(&e))
        ))
    }))
}

/// A string pattern's steps are charged like instructions.
impl pattern::Meter for RunState {
    fn step(&self) -> bool {
        let spent = self.instructions.get() + 1;
        self.instructions.set(spent);
        if spent > INSTRUCTION_BUDGET {
            self.stopped.set(true);
        }
        !self.stopped.get()
    }
}

/// The count hook: counts, and once the budget is spent stops the script
/// every time it fires (see `prelude.lua` for why once is not enough).
fn count(state: &RunState) -> mlua::Result<VmState> {
    let spent = state.instructions.get() + u64::from(HOOK_EVERY);
    state.instructions.set(spent);
    if spent > INSTRUCTION_BUDGET {
        state.stopped.set(true);
    }
    if state.stopped.get() {
        return Err(mlua::Error::runtime("the script was stopped"));
    }
    Ok(VmState::Continue)
}

/// One `redis.call` or `redis.pcall`: the reply as a Lua value, or the
/// text of the error table.
fn call(
    lua: &Lua,
    calls: &mut Calls,
    host: &mut impl Host,
    state: &RunState,
    failure: &RefCell<Option<String>>,
    args: &[Value],
) -> mlua::Result<Result<Value, String>> {
    if state.stopped.get() {
        return Ok(Err("ERR the script was stopped".into()));
    }
    let words = match words_of(args) {
        Ok(words) => words,
        Err(message) => return Ok(Err(message)),
    };
    Ok(match calls.run(host, &words) {
        Ok(Reply::Error(text)) => Err(convert::error_text(&format!("-{text}"))),
        Ok(reply) => Ok(reply_to_lua(lua, reply, state.resp3.get())?),
        Err(storage) => {
            state.stopped.set(true);
            *failure.borrow_mut() = Some(storage);
            Err("ERR the store failed".into())
        }
    })
}

fn error_table(lua: &Lua, text: &str) -> mlua::Result<Value> {
    let table = lua.create_table()?;
    table.raw_set("err", text)?;
    Ok(Value::Table(table))
}

/// A failed script's answer, from the error table the handler made:
/// `<error> script: <sha>, on @user_script:<line>.`, as Redis words it.
fn script_error(value: &Value, sha: &str) -> Reply {
    let Value::Table(table) = value else {
        let text = match value {
            Value::String(text) => String::from_utf8_lossy(&text.as_bytes()).into_owned(),
            _ => "execution failure".to_string(),
        };
        return Reply::Error(one_line(&format!("ERR Error running script {sha}, {text}")));
    };
    let text = |field: &str| match table.raw_get::<Value>(field) {
        Ok(Value::String(text)) => Some(String::from_utf8_lossy(&text.as_bytes()).into_owned()),
        Ok(Value::Integer(n)) => Some(n.to_string()),
        Ok(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut message = text("err").unwrap_or_else(|| "ERR unknown error".to_string());
    if let (Some(source), Some(line)) = (text("source"), text("line")) {
        message.push_str(&format!(" script: {sha}, on {source}:{line}."));
    }
    Reply::Error(one_line(&message))
}

/// mlua's error as a person should read it: the cause, without mlua's
/// wrapping and traceback.
fn mlua_error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => mlua_error_text(cause),
        mlua::Error::RuntimeError(message) | mlua::Error::MemoryError(message) => message.clone(),
        other => other.to_string(),
    }
}

/// The Rust half of the sandbox, handed to the prelude.
fn natives(lua: &Lua, state: &Rc<RunState>, eval: &Eval) -> mlua::Result<Table> {
    let native = lua.create_table()?;
    let array = |items: &[Vec<u8>]| -> mlua::Result<Table> {
        let table = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.iter().enumerate() {
            table.raw_set(i + 1, lua.create_string(item)?)?;
        }
        Ok(table)
    };
    native.raw_set("keys", array(&eval.keys)?)?;
    native.raw_set("args", array(&eval.args)?)?;
    native.raw_set("redis_version", REDIS_VERSION)?;
    native.raw_set("redis_version_num", redis_version_num())?;
    let settings = Rc::new(libs::Settings::default());
    native.raw_set("bit", libs::bit(lua, &settings)?)?;
    native.raw_set("cjson", libs::cjson(lua, &settings)?)?;
    native.raw_set("cmsgpack", libs::cmsgpack(lua, &settings)?)?;
    native.raw_set("handler", lua.create_function(handler)?)?;
    native.raw_set("as_lua_error", lua.create_function(as_lua_error)?)?;
    native.raw_set("has_tostring", lua.create_function(has_tostring)?)?;
    native.raw_set("sha1hex", lua.create_function(sha1hex)?)?;
    native.raw_set("unpack", lua.create_function(unpack)?)?;
    native.raw_set("log", lua.create_function(log)?)?;
    native.raw_set(
        "error_text",
        lua.create_function(|_, text: mlua::LuaString| {
            Ok(convert::error_text(&String::from_utf8_lossy(
                &text.as_bytes(),
            )))
        })?,
    )?;
    native.raw_set("stop_error", "the script was stopped")?;
    let s = state.clone();
    native.raw_set(
        "stopped",
        lua.create_function(move |_, ()| Ok(s.stopped.get()))?,
    )?;
    let s = state.clone();
    native.raw_set(
        "find",
        lua.create_function(move |lua, args: Variadic<Value>| {
            pattern::find(lua, &*s, &args, true)
        })?,
    )?;
    let s = state.clone();
    native.raw_set(
        "match",
        lua.create_function(move |lua, args: Variadic<Value>| {
            pattern::find(lua, &*s, &args, false)
        })?,
    )?;
    let s = state.clone();
    native.raw_set(
        "gmatch",
        lua.create_function(move |lua, args: Variadic<Value>| {
            pattern::gmatch(lua, s.clone(), &args)
        })?,
    )?;
    let s = state.clone();
    native.raw_set(
        "gsub",
        lua.create_function(move |lua, args: Variadic<Value>| pattern::gsub(lua, &*s, &args))?,
    )?;
    let s = state.clone();
    native.raw_set(
        "setresp",
        lua.create_function(move |_, args: Variadic<Value>| setresp(&s, &args))?,
    )?;
    let s = state.clone();
    native.raw_set(
        "random",
        lua.create_function(move |lua, args: Variadic<Value>| random(lua, &s, &args))?,
    )?;
    let s = state.clone();
    native.raw_set(
        "randomseed",
        lua.create_function(move |lua, args: Variadic<Value>| {
            s.random.set(Rand48::seeded(checkint(
                lua,
                args.first(),
                1,
                "randomseed",
            )?));
            Ok(())
        })?,
    )?;
    Ok(native)
}

/// REDIS_VERSION_NUM: 0x00MMmmpp.
fn redis_version_num() -> u32 {
    REDIS_VERSION
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0))
        .fold(0, |num, part| (num << 8) | part)
}

/// The error handler: turns any error into Redis's error table
/// (`{err=...}`), with the place in the script where it happened.
fn handler(lua: &Lua, err: Value) -> mlua::Result<Table> {
    let table = match as_lua_error(lua, err)? {
        Value::Table(table) => table,
        other => {
            let table = lua.create_table()?;
            table.raw_set("err", format!("ERR {}", describe(lua, &other)))?;
            table
        }
    };
    // The innermost frame of the script itself: an error inside redis.call
    // or a library function is reported where the script called it.
    for level in 1..200 {
        let frame = lua.inspect_stack(level, |debug| {
            let source = debug.source().source.map(|s| s.into_owned());
            (source, debug.current_line())
        });
        match frame {
            None => break,
            Some((Some(source), Some(line))) if source == SCRIPT_NAME => {
                table.raw_set("source", source)?;
                table.raw_set("line", line)?;
                break;
            }
            Some(_) => {}
        }
    }
    Ok(table)
}

/// An error raised by a Rust function, as Redis would have raised it: a
/// redis.call error as its table, another as its message. Any other value
/// is left as it is.
fn as_lua_error(lua: &Lua, err: Value) -> mlua::Result<Value> {
    let Value::Error(e) = &err else {
        return Ok(err);
    };
    Ok(match Raised::within(e) {
        Some(Raised::Table(text)) => error_table(lua, text)?,
        Some(Raised::Message(text)) => Value::String(lua.create_string(text)?),
        None => Value::String(lua.create_string(mlua_error_text(e))?),
    })
}

/// An error value as text, as Lua's tostring would give it.
fn describe(lua: &Lua, value: &Value) -> String {
    match value {
        Value::String(text) => String::from_utf8_lossy(&text.as_bytes()).into_owned(),
        Value::Integer(_) | Value::Number(_) => lua
            .coerce_string(value.clone())
            .ok()
            .flatten()
            .map(|s| String::from_utf8_lossy(&s.as_bytes()).into_owned())
            .unwrap_or_default(),
        Value::Boolean(b) => b.to_string(),
        Value::Nil => "nil".into(),
        Value::Error(e) => mlua_error_text(e),
        other => other.type_name().to_string(),
    }
}

/// Whether tostring() of `value` runs its own `__tostring` (read from the
/// raw metatable, which `__metatable` cannot hide).
fn has_tostring(_: &Lua, value: Value) -> mlua::Result<bool> {
    Ok(match value {
        Value::Table(table) => table
            .metatable()
            .is_some_and(|meta| !matches!(meta.raw_get::<Value>("__tostring"), Ok(Value::Nil))),
        _ => false,
    })
}

fn sha1hex(lua: &Lua, args: Variadic<Value>) -> mlua::Result<String> {
    let [value] = &args[..] else {
        return Err(Raised::table("ERR wrong number of arguments"));
    };
    let bytes = match value {
        Value::String(text) => text.as_bytes().to_vec(),
        Value::Integer(_) | Value::Number(_) => describe(lua, value).into_bytes(),
        _ => return Err(Raised::table("ERR wrong number or type of arguments")),
    };
    Ok(super::sha1_hex(&bytes))
}

/// redis.log: to this replica's log (every replica logs it once).
fn log(lua: &Lua, args: Variadic<Value>) -> mlua::Result<()> {
    if args.len() < 2 {
        return Err(Raised::table(
            "ERR redis.log() requires two arguments or more.",
        ));
    }
    let level = match &args[0] {
        Value::Integer(n) => *n,
        Value::Number(n) => *n as i64,
        _ => {
            return Err(Raised::table(
                "ERR First argument must be a number (log level).",
            ))
        }
    };
    let words: Vec<String> = args[1..]
        .iter()
        .filter(|arg| matches!(arg, Value::String(_) | Value::Integer(_) | Value::Number(_)))
        .map(|arg| describe(lua, arg))
        .collect();
    let text = words.join(" ");
    match level {
        0 => tracing::debug!(target: "script", "{text}"),
        1 | 2 => tracing::info!(target: "script", "{text}"),
        3 => tracing::warn!(target: "script", "{text}"),
        _ => return Err(Raised::table("ERR Invalid debug level.")),
    }
    Ok(())
}

fn setresp(state: &RunState, args: &[Value]) -> mlua::Result<()> {
    if args.len() != 1 {
        return Err(Raised::table("ERR redis.setresp() requires one argument."));
    }
    let version = match &args[0] {
        Value::Integer(n) => *n,
        Value::Number(n) => *n as i64,
        _ => 0,
    };
    match version {
        2 => state.resp3.set(false),
        3 => state.resp3.set(true),
        _ => return Err(Raised::table("ERR RESP version must be 2 or 3.")),
    }
    Ok(())
}

/// Lua 5.1's `luaL_checkint`: a number, or a string that reads as one,
/// truncated to a C int.
fn checkint(lua: &Lua, value: Option<&Value>, position: usize, name: &str) -> mlua::Result<i32> {
    let number = match value {
        Some(value) => lua.coerce_number(value.clone()).ok().flatten(),
        None => None,
    };
    match number {
        Some(n) => Ok(n as i64 as i32),
        None => {
            let got = value.map_or("no value", Value::type_name);
            Err(Raised::message(format!(
                "bad argument #{position} to '{name}' (number expected, got {got})"
            )))
        }
    }
}

/// Values one call may hold, arguments and results: Lua's `LUAI_MAXCSTACK`,
/// less the slot mlua keeps for itself.
const MAX_RESULTS: i64 = 7999;

/// `unpack(t [, i [, j]])`, in place of Lua 5.1's, whose count of results
/// overflows a C int for extreme ranges (`unpack({}, -2, 2^31-1)`) and then
/// writes past the stack (CVE-2025-46817): every replica would crash at the
/// same entry.
fn unpack(lua: &Lua, args: Variadic<Value>) -> mlua::Result<Variadic<Value>> {
    let Some(Value::Table(table)) = args.first() else {
        let got = args.first().map_or("no value", Value::type_name);
        return Err(Raised::message(format!(
            "bad argument #1 to 'unpack' (table expected, got {got})"
        )));
    };
    let first = match args.get(1) {
        None | Some(Value::Nil) => 1,
        value => i64::from(checkint(lua, value, 2, "unpack")?),
    };
    let last = match args.get(2) {
        None | Some(Value::Nil) => table.raw_len() as i64,
        value => i64::from(checkint(lua, value, 3, "unpack")?),
    };
    if first > last {
        return Ok(Variadic::new());
    }
    if last - first + 1 + args.len() as i64 > MAX_RESULTS {
        return Err(Raised::message("too many results to unpack"));
    }
    (first..=last).map(|i| table.raw_get::<Value>(i)).collect()
}

/// math.random, as Lua 5.1 defines it, drawing from Redis's rand48.
fn random(lua: &Lua, state: &RunState, args: &[Value]) -> mlua::Result<f64> {
    let mut generator = state.random.get();
    let r = generator.unit();
    state.random.set(generator);
    let empty = |position: usize| {
        Raised::message(format!(
            "bad argument #{position} to 'random' (interval is empty)"
        ))
    };
    match args {
        [] => Ok(r),
        [upper] => {
            let upper = checkint(lua, Some(upper), 1, "random")?;
            if upper < 1 {
                return Err(empty(1));
            }
            Ok((r * f64::from(upper)).floor() + 1.0)
        }
        [lower, upper] => {
            let lower = checkint(lua, Some(lower), 1, "random")?;
            let upper = checkint(lua, Some(upper), 2, "random")?;
            if lower > upper {
                return Err(empty(2));
            }
            Ok((r * (f64::from(upper) - f64::from(lower) + 1.0)).floor() + f64::from(lower))
        }
        _ => Err(Raised::message("wrong number of arguments")),
    }
}
