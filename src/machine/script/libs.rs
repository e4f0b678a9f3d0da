//! The libraries Redis gives scripts beyond Lua's own, written in Rust:
//! `bit` (LuaBitOp's functions on 32-bit integers), `cjson` (JSON) and
//! `cmsgpack` (MessagePack), and the rand48 generator behind `math.random`.
//! Their decoders bound how deep they nest: the C originals recurse once per
//! level of the input, and a few megabytes of `[[[[...` would overflow the
//! stack of every replica.
//!
//! A function's error is a Lua error message, as the C libraries raise it.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, Table, Value, Variadic};

use super::convert::format_g;
use super::raised::Raised;
use super::COPY_LIMIT;

/// A library function: its arguments, and a value or the error to raise.
type Native = fn(&Lua, &[Value], &Settings) -> Result<Value, String>;

/// Builds a table of library functions for one run.
fn library(
    lua: &Lua,
    settings: &Rc<Settings>,
    functions: &[(&str, Native)],
) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    for &(name, function) in functions {
        let settings = settings.clone();
        let native = lua.create_function(move |lua, args: Variadic<Value>| {
            function(lua, &args, &settings).map_err(Raised::message)
        })?;
        table.raw_set(name, native)?;
    }
    Ok(table)
}

/// A library function with several results.
type NativeMany = fn(&Lua, &[Value], &Settings) -> Result<Vec<Value>, String>;

/// Adds functions with several results to a library table.
fn add_many(
    lua: &Lua,
    table: &Table,
    settings: &Rc<Settings>,
    functions: &[(&str, NativeMany)],
) -> mlua::Result<()> {
    for &(name, function) in functions {
        let settings = settings.clone();
        let native = lua.create_function(move |lua, args: Variadic<Value>| {
            function(lua, &args, &settings)
                .map(Variadic::from_iter)
                .map_err(Raised::message)
        })?;
        table.raw_set(name, native)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// rand48
// ---------------------------------------------------------------------------

/// The 48-bit linear congruential generator of POSIX `lrand48`, which Redis
/// uses for `math.random` so the numbers are the same on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rand48(u64);

const RAND48_MASK: u64 = (1 << 48) - 1;

impl Rand48 {
    /// The state Redis's generator starts in, before any `randomseed`.
    pub fn start() -> Rand48 {
        Rand48(0x1234_ABCD_330E)
    }

    /// `srand48(seed)`: the seed in the high 32 bits, 0x330E below.
    pub fn seeded(seed: i32) -> Rand48 {
        Rand48((u64::from(seed as u32) << 16) | 0x330E)
    }

    /// `lrand48()`: the next 31-bit number.
    pub fn next(&mut self) -> i32 {
        self.0 = (self.0.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & RAND48_MASK;
        (self.0 >> 17) as i32
    }

    /// A number in [0, 1), as Redis's `math.random()` makes it.
    pub fn unit(&mut self) -> f64 {
        f64::from(self.next() % i32::MAX) / f64::from(i32::MAX)
    }
}

// ---------------------------------------------------------------------------
// bit
// ---------------------------------------------------------------------------

/// A number as LuaBitOp reads one: rounded, then taken modulo 2^32.
fn tobit(n: f64) -> i32 {
    let n = n.round_ties_even().rem_euclid(4_294_967_296.0);
    if n.is_finite() {
        n as u32 as i32
    } else {
        0
    }
}

fn bit_arg(args: &[Value], i: usize, name: &str) -> Result<i32, String> {
    let n = match args.get(i) {
        Some(Value::Integer(n)) => *n as f64,
        Some(Value::Number(n)) => *n,
        Some(Value::String(text)) => std::str::from_utf8(&text.as_bytes())
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .ok_or_else(|| bad_argument(i, name, "number expected, got string"))?,
        other => {
            let got = other.map_or("no value", Value::type_name);
            return Err(bad_argument(
                i,
                name,
                &format!("number expected, got {got}"),
            ));
        }
    };
    Ok(tobit(n))
}

fn bad_argument(i: usize, name: &str, why: &str) -> String {
    format!("bad argument #{} to '{name}' ({why})", i + 1)
}

fn bit_value(n: i32) -> Value {
    Value::Number(f64::from(n))
}

fn fold(args: &[Value], name: &str, op: fn(i32, i32) -> i32) -> Result<Value, String> {
    let mut acc = bit_arg(args, 0, name)?;
    for i in 1..args.len() {
        acc = op(acc, bit_arg(args, i, name)?);
    }
    Ok(bit_value(acc))
}

fn shift(args: &[Value], name: &str, op: fn(i32, u32) -> i32) -> Result<Value, String> {
    let x = bit_arg(args, 0, name)?;
    let n = bit_arg(args, 1, name)? as u32 & 31;
    Ok(bit_value(op(x, n)))
}

/// The `bit` library.
pub fn bit(lua: &Lua, settings: &Rc<Settings>) -> mlua::Result<Table> {
    let functions: &[(&str, Native)] = &[
        ("tobit", |_, a, _| Ok(bit_value(bit_arg(a, 0, "tobit")?))),
        ("bnot", |_, a, _| Ok(bit_value(!bit_arg(a, 0, "bnot")?))),
        ("band", |_, a, _| fold(a, "band", |x, y| x & y)),
        ("bor", |_, a, _| fold(a, "bor", |x, y| x | y)),
        ("bxor", |_, a, _| fold(a, "bxor", |x, y| x ^ y)),
        ("lshift", |_, a, _| {
            shift(a, "lshift", |x, n| ((x as u32) << n) as i32)
        }),
        ("rshift", |_, a, _| {
            shift(a, "rshift", |x, n| ((x as u32) >> n) as i32)
        }),
        ("arshift", |_, a, _| shift(a, "arshift", |x, n| x >> n)),
        ("rol", |_, a, _| {
            shift(a, "rol", |x, n| (x as u32).rotate_left(n) as i32)
        }),
        ("ror", |_, a, _| {
            shift(a, "ror", |x, n| (x as u32).rotate_right(n) as i32)
        }),
        ("bswap", |_, a, _| {
            Ok(bit_value(bit_arg(a, 0, "bswap")?.swap_bytes()))
        }),
        ("tohex", |lua, a, _| {
            let x = bit_arg(a, 0, "tohex")?;
            let n = if a.len() > 1 {
                bit_arg(a, 1, "tohex")?
            } else {
                8
            };
            // A negative count means upper case; at most eight digits
            // (i32::MIN included, which LuaBitOp once mishandled).
            let digits = n.unsigned_abs().min(8) as usize;
            let text = if n < 0 {
                format!("{:08X}", x as u32)
            } else {
                format!("{:08x}", x as u32)
            };
            lua.create_string(&text[8 - digits..])
                .map(Value::String)
                .map_err(|e| e.to_string())
        }),
    ];
    library(lua, settings, functions)
}

// ---------------------------------------------------------------------------
// cjson
// ---------------------------------------------------------------------------

/// cjson's settings: per run, so every run starts from the defaults.
pub struct Settings {
    encode_max_depth: Cell<usize>,
    decode_max_depth: Cell<usize>,
    encode_invalid_numbers: Cell<bool>,
    encode_sparse_convert: Cell<bool>,
    encode_sparse_ratio: Cell<usize>,
    encode_sparse_safe: Cell<usize>,
    encode_precision: Cell<usize>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            encode_max_depth: Cell::new(1000),
            decode_max_depth: Cell::new(1000),
            encode_invalid_numbers: Cell::new(false),
            encode_sparse_convert: Cell::new(false),
            encode_sparse_ratio: Cell::new(2),
            encode_sparse_safe: Cell::new(10),
            encode_precision: Cell::new(14),
        }
    }
}

/// `cjson.null`: what JSON's null decodes to, and encodes from.
pub fn json_null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn number_of(value: Option<&Value>) -> Option<f64> {
    match value {
        Some(Value::Integer(n)) => Some(*n as f64),
        Some(Value::Number(n)) => Some(*n),
        _ => None,
    }
}

/// A setting function: with an argument it sets, and it answers the value.
fn depth_setting(cell: &Cell<usize>, args: &[Value], name: &str) -> Result<Value, String> {
    if let Some(arg) = args.first() {
        let n = number_of(Some(arg))
            .filter(|n| (1.0..=2_147_483_647.0).contains(n))
            .ok_or_else(|| bad_argument(0, name, "expected integer between 1 and 2147483647"))?;
        cell.set(n as usize);
    }
    Ok(Value::Number(cell.get() as f64))
}

fn flag_setting(cell: &Cell<bool>, args: &[Value]) -> Result<Value, String> {
    match args.first() {
        Some(Value::Boolean(on)) => cell.set(*on),
        Some(Value::String(text)) if &*text.as_bytes() == b"on" => cell.set(true),
        Some(Value::String(text)) if &*text.as_bytes() == b"off" => cell.set(false),
        _ => {}
    }
    Ok(Value::Boolean(cell.get()))
}

/// The `cjson` library.
pub fn cjson(lua: &Lua, settings: &Rc<Settings>) -> mlua::Result<Table> {
    let functions: &[(&str, Native)] = &[
        ("encode", |lua, a, s| {
            let mut out = Vec::new();
            encode(a.first().unwrap_or(&Value::Nil), 0, s, &mut out)?;
            lua.create_string(&out)
                .map(Value::String)
                .map_err(|e| e.to_string())
        }),
        ("decode", |lua, a, s| match a.first() {
            Some(Value::String(text)) => decode(lua, &text.as_bytes(), s),
            _ => Err(bad_argument(0, "decode", "string expected")),
        }),
        ("encode_max_depth", |_, a, s| {
            depth_setting(&s.encode_max_depth, a, "encode_max_depth")
        }),
        ("decode_max_depth", |_, a, s| {
            depth_setting(&s.decode_max_depth, a, "decode_max_depth")
        }),
        ("encode_invalid_numbers", |_, a, s| {
            flag_setting(&s.encode_invalid_numbers, a)
        }),
        ("decode_invalid_numbers", |_, _, _| {
            Ok(Value::Boolean(false))
        }),
        ("encode_keep_buffer", |_, _, _| Ok(Value::Boolean(true))),
        ("encode_number_precision", |_, a, s| {
            if let Some(n) = number_of(a.first()) {
                if !(1.0..=14.0).contains(&n) {
                    return Err(bad_argument(
                        0,
                        "encode_number_precision",
                        "expected integer between 1 and 14",
                    ));
                }
                s.encode_precision.set(n as usize);
            }
            Ok(Value::Number(s.encode_precision.get() as f64))
        }),
        ("encode_sparse_array", |_, a, s| {
            if let Some(Value::Boolean(convert)) = a.first() {
                s.encode_sparse_convert.set(*convert);
            }
            if let Some(ratio) = number_of(a.get(1)) {
                s.encode_sparse_ratio.set(ratio.max(0.0) as usize);
            }
            if let Some(safe) = number_of(a.get(2)) {
                s.encode_sparse_safe.set(safe.max(0.0) as usize);
            }
            Ok(Value::Boolean(s.encode_sparse_convert.get()))
        }),
    ];
    let table = library(lua, settings, functions)?;
    table.raw_set("null", json_null())?;
    Ok(table)
}

/// Refuses an output growing past [`COPY_LIMIT`] (with Lua's words).
fn within_limit(out: &[u8]) -> Result<(), String> {
    if out.len() > COPY_LIMIT {
        return Err("not enough memory".into());
    }
    Ok(())
}

fn encode(value: &Value, depth: usize, s: &Settings, out: &mut Vec<u8>) -> Result<(), String> {
    within_limit(out)?;
    match value {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(ud) if ud.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => encode_number(*n as f64, s, out)?,
        Value::Number(n) => encode_number(*n, s, out)?,
        Value::String(text) => encode_string(&text.as_bytes(), out),
        Value::Table(table) => {
            if depth + 1 > s.encode_max_depth.get() {
                return Err(format!(
                    "Cannot serialise, excessive nesting ({})",
                    depth + 1
                ));
            }
            encode_table(table, depth + 1, s, out)?;
        }
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ))
        }
    }
    Ok(())
}

fn encode_number(n: f64, s: &Settings, out: &mut Vec<u8>) -> Result<(), String> {
    if !n.is_finite() && !s.encode_invalid_numbers.get() {
        return Err("Cannot serialise number: must not be NaN or Inf".into());
    }
    out.extend_from_slice(format_g(n, s.encode_precision.get()).as_bytes());
    Ok(())
}

fn encode_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &byte in text {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{byte:04x}").as_bytes()),
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// How many items a table would be as a JSON array (`None`: an object).
fn array_length(table: &Table, s: &Settings) -> Result<Option<usize>, String> {
    let (mut max, mut items) = (0usize, 0usize);
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        let index = match key {
            Value::Integer(n) if n >= 1 => n as usize,
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 && n < 1e15 => n as usize,
            _ => return Ok(None),
        };
        max = max.max(index);
        items += 1;
    }
    let ratio = s.encode_sparse_ratio.get();
    if ratio > 0 && max > items.saturating_mul(ratio) && max > s.encode_sparse_safe.get() {
        if s.encode_sparse_convert.get() {
            return Ok(None);
        }
        return Err("Cannot serialise table: excessively sparse array".into());
    }
    Ok((max > 0).then_some(max))
}

fn encode_table(
    table: &Table,
    depth: usize,
    s: &Settings,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if let Some(length) = array_length(table, s)? {
        out.push(b'[');
        for i in 1..=length {
            if i > 1 {
                out.push(b',');
            }
            let item = table.raw_get::<Value>(i).map_err(|e| e.to_string())?;
            encode(&item, depth, s, out)?;
        }
        out.push(b']');
        return Ok(());
    }
    out.push(b'{');
    let mut first = true;
    for pair in table.pairs::<Value, Value>() {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        if !first {
            out.push(b',');
        }
        first = false;
        match &key {
            Value::String(text) => encode_string(&text.as_bytes(), out),
            Value::Integer(n) => encode_string(
                format_g(*n as f64, s.encode_precision.get()).as_bytes(),
                out,
            ),
            Value::Number(n) => {
                encode_string(format_g(*n, s.encode_precision.get()).as_bytes(), out)
            }
            _ => return Err("Cannot serialise table: table key must be a number or string".into()),
        }
        out.push(b':');
        encode(&value, depth, s, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn decode(lua: &Lua, text: &[u8], s: &Settings) -> Result<Value, String> {
    let json: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| format!("Expected value but found invalid token: {e}"))?;
    let depth = json_depth(&json);
    if depth > s.decode_max_depth.get() {
        return Err(format!("Found too many nested data structures ({depth})"));
    }
    to_lua(lua, json).map_err(|e| e.to_string())
}

fn json_depth(json: &serde_json::Value) -> usize {
    match json {
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn to_lua(lua: &Lua, json: serde_json::Value) -> mlua::Result<Value> {
    Ok(match json {
        serde_json::Value::Null => json_null(),
        serde_json::Value::Bool(b) => Value::Boolean(b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(text) => Value::String(lua.create_string(&text)?),
        serde_json::Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(table)
        }
        serde_json::Value::Object(map) => {
            let table = lua.create_table_with_capacity(0, map.len())?;
            for (key, value) in map {
                table.raw_set(key, to_lua(lua, value)?)?;
            }
            Value::Table(table)
        }
    })
}

// ---------------------------------------------------------------------------
// cmsgpack
// ---------------------------------------------------------------------------

/// Tables nested deeper than this are packed as nil (lua-cmsgpack's rule, so
/// a table that contains itself can be packed).
const MSGPACK_MAX_NESTING: usize = 16;
/// How deep an input may nest when unpacked.
const MSGPACK_MAX_DEPTH: usize = 1000;
/// Values one unpack call may return (Lua's C stack holds about 8000).
const MSGPACK_MAX_RESULTS: usize = 7000;

/// The `cmsgpack` library.
pub fn cmsgpack(lua: &Lua, settings: &Rc<Settings>) -> mlua::Result<Table> {
    let functions: &[(&str, Native)] = &[("pack", |lua, a, _| {
        if a.is_empty() {
            return Err("bad argument #0 to 'pack' (MessagePack pack needs input.)".into());
        }
        let mut out = Vec::new();
        for value in a {
            pack(value, 0, &mut out)?;
        }
        lua.create_string(&out)
            .map(Value::String)
            .map_err(|e| e.to_string())
    })];
    let table = library(lua, settings, functions)?;
    let unpacking: &[(&str, NativeMany)] = &[
        ("unpack", |lua, a, _| unpack(lua, a, None, 0.0)),
        ("unpack_one", |lua, a, _| {
            let offset = number_of(a.get(1)).unwrap_or(0.0);
            unpack(lua, a, Some(1.0), offset)
        }),
        ("unpack_limit", |lua, a, _| {
            let limit = number_of(a.get(1))
                .ok_or_else(|| bad_argument(1, "unpack_limit", "number expected"))?;
            let offset = number_of(a.get(2)).unwrap_or(0.0);
            unpack(lua, a, Some(limit), offset)
        }),
    ];
    add_many(lua, &table, settings, unpacking)?;
    Ok(table)
}

fn pack(value: &Value, level: usize, out: &mut Vec<u8>) -> Result<(), String> {
    within_limit(out)?;
    match value {
        Value::String(text) => pack_bytes(&text.as_bytes(), out),
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(n) => pack_int(*n, out),
        Value::Number(n) if n.is_finite() && (*n as i64) as f64 == *n => pack_int(*n as i64, out),
        Value::Number(n) => {
            let single = *n as f32;
            if f64::from(single) == *n {
                out.push(0xca);
                out.extend_from_slice(&single.to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::Table(table) if level < MSGPACK_MAX_NESTING => pack_table(table, level, out)?,
        _ => out.push(0xc0),
    }
    Ok(())
}

fn pack_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len();
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, len as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

fn pack_int(n: i64, out: &mut Vec<u8>) {
    match n {
        0..=127 => out.push(n as u8),
        128..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        0x1_0000_0000.. => {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        -32..=-1 => out.push(n as i8 as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, n as i8 as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn pack_header(small: u8, sixteen: u8, len: usize, out: &mut Vec<u8>) {
    match len {
        0..=15 => out.push(small | len as u8),
        16..=0xffff => {
            out.push(sixteen);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(sixteen + 1);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// A table whose keys are exactly 1..n packs as an array, any other as a map.
fn pack_table(table: &Table, level: usize, out: &mut Vec<u8>) -> Result<(), String> {
    // Two passes rather than collecting the pairs: every Lua value Rust
    // holds takes one of about 8000 reference slots (mlua), and a table may
    // have many more entries than that.
    let index = |key: &Value| match key {
        Value::Integer(n) if *n > 0 => Some(*n as usize),
        Value::Number(n) if *n > 0.0 && n.fract() == 0.0 && *n < 2_147_483_648.0 => {
            Some(*n as usize)
        }
        _ => None,
    };
    let (mut count, mut max) = (0usize, Some(0usize));
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair.map_err(|e| e.to_string())?;
        count += 1;
        max = max.zip(index(&key)).map(|(max, i)| max.max(i));
    }
    if max == Some(count) {
        pack_header(0x90, 0xdc, count, out);
        for i in 1..=count {
            let item = table.get::<Value>(i).map_err(|e| e.to_string())?;
            pack(&item, level + 1, out)?;
        }
    } else {
        pack_header(0x80, 0xde, count, out);
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair.map_err(|e| e.to_string())?;
            pack(&key, level + 1, out)?;
            pack(&value, level + 1, out)?;
        }
    }
    Ok(())
}

/// unpack, unpack_one and unpack_limit: `limit` values from `offset` on
/// (all of them without a limit), and for the last two the offset to go on
/// from first (-1 once the input is used up).
fn unpack(
    lua: &Lua,
    args: &[Value],
    limit: Option<f64>,
    offset: f64,
) -> Result<Vec<Value>, String> {
    let Some(Value::String(text)) = args.first() else {
        return Err(bad_argument(0, "unpack", "string expected"));
    };
    let bytes = text.as_bytes();
    if offset < 0.0 || limit.is_some_and(|l| l < 0.0) {
        return Err(format!(
            "Invalid request to unpack with offset of {} and limit of {}.",
            offset as i64,
            bytes.len()
        ));
    }
    let offset = offset as usize;
    if offset > bytes.len() {
        return Err(format!(
            "Start offset {offset} greater than input length {}.",
            bytes.len()
        ));
    }
    let limit = limit.map_or(usize::MAX, |l| l as usize);
    let mut cursor = Cursor {
        bytes: &bytes[offset..],
        at: 0,
    };
    let mut values = Vec::new();
    while cursor.at < cursor.bytes.len() && values.len() < limit {
        if values.len() >= MSGPACK_MAX_RESULTS {
            return Err(
                "too many return values at once; use unpack_one or unpack_limit instead.".into(),
            );
        }
        values.push(cursor.value(lua, 0)?);
    }
    let mut results = Vec::with_capacity(values.len() + 1);
    if limit != usize::MAX {
        let next = if cursor.at == cursor.bytes.len() {
            -1.0
        } else {
            (offset + cursor.at) as f64
        };
        results.push(Value::Number(next));
    }
    results.extend(values);
    Ok(results)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err("Missing bytes in input.".into());
        };
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn number<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(self.take(N)?);
        Ok(bytes)
    }

    fn length(&mut self, size: usize) -> Result<usize, String> {
        Ok(match size {
            1 => usize::from(self.take(1)?[0]),
            2 => usize::from(u16::from_be_bytes(self.number()?)),
            _ => u32::from_be_bytes(self.number()?) as usize,
        })
    }

    fn value(&mut self, lua: &Lua, depth: usize) -> Result<Value, String> {
        if depth > MSGPACK_MAX_DEPTH {
            return Err("Bad data format in input: nested too deeply.".into());
        }
        let string = |lua: &Lua, bytes: &[u8]| {
            lua.create_string(bytes)
                .map(Value::String)
                .map_err(|e| e.to_string())
        };
        let first = self.take(1)?[0];
        Ok(match first {
            0x00..=0x7f => Value::Number(f64::from(first)),
            0xe0..=0xff => Value::Number(f64::from(first as i8)),
            0xa0..=0xbf => {
                let bytes = self.take(usize::from(first & 0x1f))?;
                string(lua, bytes)?
            }
            0x90..=0x9f => self.array(lua, usize::from(first & 0x0f), depth)?,
            0x80..=0x8f => self.map(lua, usize::from(first & 0x0f), depth)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Boolean(false),
            0xc3 => Value::Boolean(true),
            0xcc => Value::Number(f64::from(self.take(1)?[0])),
            0xcd => Value::Number(f64::from(u16::from_be_bytes(self.number()?))),
            0xce => Value::Number(f64::from(u32::from_be_bytes(self.number()?))),
            0xcf => Value::Number(u64::from_be_bytes(self.number()?) as f64),
            0xd0 => Value::Number(f64::from(self.take(1)?[0] as i8)),
            0xd1 => Value::Number(f64::from(i16::from_be_bytes(self.number()?))),
            0xd2 => Value::Number(f64::from(i32::from_be_bytes(self.number()?))),
            0xd3 => Value::Number(i64::from_be_bytes(self.number()?) as f64),
            0xca => Value::Number(f64::from(f32::from_be_bytes(self.number()?))),
            0xcb => Value::Number(f64::from_be_bytes(self.number()?)),
            0xd9..=0xdb => {
                let len = self.length(1 << (first - 0xd9))?;
                let bytes = self.take(len)?;
                string(lua, bytes)?
            }
            0xdc | 0xdd => {
                let len = self.length(if first == 0xdc { 2 } else { 4 })?;
                self.array(lua, len, depth)?
            }
            0xde | 0xdf => {
                let len = self.length(if first == 0xde { 2 } else { 4 })?;
                self.map(lua, len, depth)?
            }
            _ => return Err("Bad data format in input.".into()),
        })
    }

    fn array(&mut self, lua: &Lua, len: usize, depth: usize) -> Result<Value, String> {
        let table = lua.create_table().map_err(|e| e.to_string())?;
        for i in 1..=len {
            let item = self.value(lua, depth + 1)?;
            table.raw_set(i, item).map_err(|e| e.to_string())?;
        }
        Ok(Value::Table(table))
    }

    fn map(&mut self, lua: &Lua, len: usize, depth: usize) -> Result<Value, String> {
        let table = lua.create_table().map_err(|e| e.to_string())?;
        for _ in 0..len {
            let key = self.value(lua, depth + 1)?;
            let value = self.value(lua, depth + 1)?;
            if !matches!(key, Value::Nil) {
                table.raw_set(key, value).map_err(|e| e.to_string())?;
            }
        }
        Ok(Value::Table(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand48_gives_redis_numbers() {
        // `math.randomseed(10); return tostring(math.random())` on redis-server 7.0.15.
        let mut rng = Rand48::seeded(10);
        assert_eq!(format_g(rng.unit(), 14), "0.87885112309775");
    }

    #[test]
    fn tobit_wraps_modulo_two_to_the_32() {
        assert_eq!(tobit(1.0), 1);
        assert_eq!(tobit(4294967295.0), -1);
        assert_eq!(tobit(2147483648.0), i32::MIN);
        assert_eq!(tobit(-1.0), -1);
        assert_eq!(tobit(0.5), 0);
        assert_eq!(tobit(1.5), 2);
        assert_eq!(tobit(f64::NAN), 0);
    }
}
