//! Replies into Lua values and back, by the rules Redis documents for EVAL.
//!
//! Into Lua (what `redis.call` returns): an integer is a number, a bulk string
//! a string, an array a table, a status `{ok=...}`, an error `{err=...}`, and
//! a missing value `false` (`nil` after `redis.setresp(3)`, which also turns a
//! map into `{map={...}}`).
//!
//! Out of Lua (what the script returns): a number is an integer (truncated),
//! a string a bulk string, `true` is 1 and `false` or `nil` a missing value,
//! `{ok=...}` a status, `{err=...}` an error, `{map=...}` a map, `{set=...}`
//! an array of its keys, `{double=...}` and `{big_number=...}` a bulk string
//! (the RESP2 forms), and any other table an array that stops at its first
//! nil. Tables are read raw: a metatable runs no code here.

use mlua::{Lua, Table, Value};

use super::COPY_LIMIT;
use crate::machine::Reply;

/// Tables nested deeper than this in a script's answer end in Redis's
/// "reached lua stack limit" error, so a table that contains itself is
/// answered, not followed forever. A reply travels to a follower that
/// forwarded the command as JSON, which serde_json reads to a depth of 128.
const REPLY_DEPTH: usize = 32;

/// A redis.call reply as the script sees it.
pub fn reply_to_lua(lua: &Lua, reply: Reply, resp3: bool) -> mlua::Result<Value> {
    let single = |field: &str, text: &str| -> mlua::Result<Value> {
        let table = lua.create_table()?;
        table.raw_set(field, text)?;
        Ok(Value::Table(table))
    };
    Ok(match reply {
        Reply::Ok => single("ok", "OK")?,
        Reply::Status(text) => single("ok", &text)?,
        Reply::Nil | Reply::NilArray if resp3 => Value::Nil,
        Reply::Nil | Reply::NilArray => Value::Boolean(false),
        Reply::Int(n) => Value::Number(n as f64),
        Reply::Bulk(bytes) => Value::String(lua.create_string(&bytes.0)?),
        Reply::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                table.raw_set(i + 1, reply_to_lua(lua, item, resp3)?)?;
            }
            Value::Table(table)
        }
        Reply::Map(pairs) if resp3 => {
            let map = lua.create_table()?;
            for (key, value) in pairs {
                map.raw_set(
                    reply_to_lua(lua, key, resp3)?,
                    reply_to_lua(lua, value, resp3)?,
                )?;
            }
            let table = lua.create_table()?;
            table.raw_set("map", map)?;
            Value::Table(table)
        }
        Reply::Map(pairs) => {
            let flat = pairs.into_iter().flat_map(|(key, value)| [key, value]);
            reply_to_lua(lua, Reply::Array(flat.collect()), resp3)?
        }
        Reply::Error(text) => single("err", &error_text(&format!("-{text}")))?,
    })
}

/// An error line as a script's error table holds it (Redis's rule): `-CODE
/// message` becomes `CODE message`, and a text without a code gets `ERR`.
pub fn error_text(raw: &str) -> String {
    let (code, message) = match raw.strip_prefix('-') {
        Some(rest) => rest.split_once(' ').unwrap_or(("ERR", rest)),
        None => ("ERR", raw),
    };
    format!("{code} {}", message.trim_matches(['\r', '\n']))
}

/// A text for a one-line reply: no line breaks inside, none at the ends.
pub fn one_line(text: &str) -> String {
    text.trim_matches(['\r', '\n']).replace(['\r', '\n'], " ")
}

/// What a reply element costs besides its bytes, for [`COPY_LIMIT`].
const ELEMENT_COST: usize = 32;

/// The script's answer; an error if it would be larger than [`COPY_LIMIT`].
pub fn lua_to_reply(value: &Value) -> Reply {
    let mut left = COPY_LIMIT;
    let reply = to_reply(value, 0, &mut left);
    if left == 0 {
        return Reply::Error(format!(
            "ERR the script's answer is larger than {} MiB",
            COPY_LIMIT >> 20
        ));
    }
    reply
}

/// Takes `cost` from `left`; false (and `left` 0) when it does not fit.
fn charge(left: &mut usize, cost: usize) -> bool {
    match left.checked_sub(cost) {
        Some(rest) if rest > 0 => {
            *left = rest;
            true
        }
        _ => {
            *left = 0;
            false
        }
    }
}

fn to_reply(value: &Value, depth: usize, left: &mut usize) -> Reply {
    let size = match value {
        Value::String(text) => text.as_bytes().len(),
        _ => 0,
    };
    if !charge(left, ELEMENT_COST + size) {
        return Reply::Nil;
    }
    match value {
        Value::String(text) => Reply::bulk(text.as_bytes().to_vec()),
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(n) => Reply::Int(*n),
        Value::Number(n) => Reply::Int(truncate(*n)),
        Value::Table(_) if depth >= REPLY_DEPTH => {
            Reply::Error("ERR reached lua stack limit".into())
        }
        Value::Table(table) => table_to_reply(table, depth, left),
        _ => Reply::Nil,
    }
}

/// A number as C's cast to `long long` gives it on x86-64, as Redis answers:
/// the fraction dropped; NaN and numbers out of range become the smallest
/// integer.
fn truncate(n: f64) -> i64 {
    if n.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

fn text_field(table: &Table, field: &str) -> Option<String> {
    match table.raw_get::<Value>(field) {
        Ok(Value::String(text)) => Some(String::from_utf8_lossy(&text.as_bytes()).into_owned()),
        _ => None,
    }
}

fn table_to_reply(table: &Table, depth: usize, left: &mut usize) -> Reply {
    if let Some(text) = text_field(table, "err") {
        return Reply::Error(one_line(&text));
    }
    if let Some(text) = text_field(table, "ok") {
        return Reply::Status(one_line(&text));
    }
    match table.raw_get::<Value>("double") {
        Ok(Value::Number(n)) => return Reply::bulk(format_g(n, 17)),
        Ok(Value::Integer(n)) => return Reply::bulk(format_g(n as f64, 17)),
        _ => {}
    }
    if let Some(text) = text_field(table, "big_number") {
        return Reply::bulk(one_line(&text));
    }
    if let Ok(Value::Table(verbatim)) = table.raw_get::<Value>("verbatim_string") {
        if let (Some(_), Ok(Value::String(text))) = (
            text_field(&verbatim, "format"),
            verbatim.raw_get::<Value>("string"),
        ) {
            return Reply::bulk(text.as_bytes().to_vec());
        }
    }
    if let Ok(Value::Table(map)) = table.raw_get::<Value>("map") {
        let pairs = map
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(key, value)| {
                (
                    to_reply(&key, depth + 1, left),
                    to_reply(&value, depth + 1, left),
                )
            })
            .collect();
        return Reply::Map(pairs);
    }
    if let Ok(Value::Table(set)) = table.raw_get::<Value>("set") {
        let members = set
            .pairs::<Value, Value>()
            .filter_map(Result::ok)
            .map(|(member, _)| to_reply(&member, depth + 1, left))
            .collect();
        return Reply::Array(members);
    }
    let mut items = Vec::new();
    for i in 1.. {
        if *left == 0 {
            break;
        }
        match table.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(item) => items.push(to_reply(&item, depth + 1, left)),
        }
    }
    Reply::Array(items)
}

/// The words of a redis.call: strings as they are, numbers as C's `%.17g`
/// writes them (so 2^53 is "9007199254740992" and 0.1 "0.10000000000000001"),
/// anything else refused with Redis's error.
pub fn words_of(args: &[Value]) -> Result<Vec<Vec<u8>>, String> {
    if args.is_empty() {
        return Err("ERR Please specify at least one argument for this redis lib call".into());
    }
    let size: usize = args
        .iter()
        .map(|arg| match arg {
            Value::String(text) => text.as_bytes().len(),
            _ => 24,
        })
        .sum();
    if size > COPY_LIMIT {
        return Err(format!(
            "ERR the arguments of this call are {size} bytes; a call from a script may pass at most {} MiB",
            COPY_LIMIT >> 20
        ));
    }
    args.iter()
        .map(|arg| match arg {
            Value::String(text) => Ok(text.as_bytes().to_vec()),
            Value::Integer(n) => Ok(format_g(*n as f64, 17).into_bytes()),
            Value::Number(n) => Ok(format_g(*n, 17).into_bytes()),
            _ => Err("ERR Lua redis lib command arguments must be strings or integers".into()),
        })
        .collect()
}

/// C's `%.{precision}g`: the shorter of fixed and exponent notation for
/// `precision` significant digits, trailing zeros dropped.
pub fn format_g(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.into();
    }
    let precision = precision.max(1);
    // Rounded to `precision` significant digits, the exponent decides the form.
    let scientific = format!("{:.*e}", precision - 1, x);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if exponent < -4 || exponent >= precision as i32 {
        let mantissa = strip_zeros(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn strip_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_c_writes_them() {
        for (x, expected) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.5, "1.5"),
            (100.0, "100"),
            (9007199254740992.0, "9007199254740992"),
            (0.1, "0.10000000000000001"),
            (1e17, "1e+17"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-5, "1.0000000000000001e-05"),
            (0.0001, "0.0001"),
            (1.25, "1.25"),
        ] {
            assert_eq!(format_g(x, 17), expected, "{x}");
        }
        assert_eq!(format_g(0.1, 14), "0.1");
        assert_eq!(format_g(1e15, 14), "1e+15");
        assert_eq!(format_g(123456.789, 14), "123456.789");
    }

    #[test]
    fn error_lines_get_a_code() {
        assert_eq!(error_text("-ERR no"), "ERR no");
        assert_eq!(error_text("-WRONGTYPE bad"), "WRONGTYPE bad");
        assert_eq!(error_text("-boom"), "ERR boom");
        assert_eq!(error_text("plain words"), "ERR plain words");
        assert_eq!(error_text("-X y\r\n"), "X y");
    }

    #[test]
    fn numbers_truncate_like_redis() {
        assert_eq!(truncate(100.5), 100);
        assert_eq!(truncate(-3.99), -3);
        assert_eq!(truncate(f64::NAN), i64::MIN);
        assert_eq!(truncate(1e300), i64::MIN);
    }
}
