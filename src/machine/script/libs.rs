//! The libraries Redis gives scripts beyond Lua's own, written in Rust:
//! `bit` (LuaBitOp's functions on 32-bit integers) and `cjson` (JSON), and
//! the rand48 generator behind `math.random`.
//!
//! A function's error is a Lua error message, as the C libraries raise it.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, Table, Value, Variadic};

use super::convert::format_g;
use super::sandbox::Raised;

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

fn encode(value: &Value, depth: usize, s: &Settings, out: &mut Vec<u8>) -> Result<(), String> {
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
