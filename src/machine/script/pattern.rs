//! Lua 5.1's string patterns (`string.find`, `match`, `gmatch`, `gsub`) in
//! Rust, with every step of the matcher counted against the script's
//! instruction budget.
//!
//! Why not Lua's own: its matcher runs inside one C call, which the count
//! hook never sees. `string.find(s, "a.-b")` on a long string without a `b`
//! takes time quadratic in its length, a pattern with a few more quantifiers
//! exponential time, and a pattern of many thousand items exhausts the C
//! stack: on every replica at once, and again after each restart, since the
//! entry is still in the log. Here a step costs one instruction, so such a
//! call ends like a runaway loop, at the same step on every replica.
//!
//! The semantics are lstrlib.c's (Lua 5.1), in its order of checks, with one
//! difference: matching nested deeper than [`MAX_DEPTH`] is refused with Lua
//! 5.2's "pattern too complex" instead of overflowing the stack.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Lua, MultiValue, Value, Variadic};

use super::convert::format_g;
use super::raised::Raised;
use super::COPY_LIMIT;

/// Lua's `LUA_MAXCAPTURES`.
const MAX_CAPTURES: usize = 32;
/// How deep the matcher may recurse (one level per quantified item or capture).
const MAX_DEPTH: usize = 200;

/// Where a matcher step is charged: the run's instruction budget.
pub trait Meter {
    /// Charges one step; false once the budget is spent.
    fn step(&self) -> bool;
}

/// Why matching ended without an answer.
enum Failure {
    /// The budget is spent.
    Stopped,
    /// A malformed pattern: Lua's error message.
    Pattern(&'static str),
}

type Step<T> = Result<T, Failure>;

#[derive(Clone, Copy)]
enum Capture {
    Unfinished,
    Position,
    Len(usize),
}

struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    captures: [(usize, Capture); MAX_CAPTURES],
    depth: usize,
    meter: &'a dyn Meter,
}

fn class_matches(c: u8, class: u8) -> bool {
    let result = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !result
    } else {
        result
    }
}

impl Matcher<'_> {
    fn tick(&self) -> Step<()> {
        if self.meter.step() {
            Ok(())
        } else {
            Err(Failure::Stopped)
        }
    }

    /// The index just past the single-character class starting at `p`.
    fn class_end(&self, mut p: usize) -> Step<usize> {
        let c = self.pat[p];
        p += 1;
        if c == b'%' {
            if p >= self.pat.len() {
                return Err(Failure::Pattern("malformed pattern (ends with '%')"));
            }
            return Ok(p + 1);
        }
        if c == b'[' {
            if self.pat.get(p) == Some(&b'^') {
                p += 1;
            }
            // The first character is in the set even if it is `]`.
            loop {
                if p >= self.pat.len() {
                    return Err(Failure::Pattern("malformed pattern (missing ']')"));
                }
                let escaped = self.pat[p] == b'%';
                p += 1;
                if escaped && p < self.pat.len() {
                    p += 1;
                }
                if self.pat.get(p) == Some(&b']') {
                    return Ok(p + 1);
                }
            }
        }
        Ok(p)
    }

    /// `c` against the set `[...]` from `p` (its `[`) to `end` (its `]`).
    fn bracket_matches(&self, c: u8, mut p: usize, end: usize) -> bool {
        let mut found = true;
        if self.pat[p + 1] == b'^' {
            found = false;
            p += 1;
        }
        p += 1;
        while p < end {
            if self.pat[p] == b'%' {
                p += 1;
                if p < end && class_matches(c, self.pat[p]) {
                    return found;
                }
            } else if self.pat.get(p + 1) == Some(&b'-') && p + 2 < end {
                if self.pat[p] <= c && c <= self.pat[p + 2] {
                    return found;
                }
                p += 2;
            } else if self.pat[p] == c {
                return found;
            }
            p += 1;
        }
        !found
    }

    fn single_matches(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            b'%' => class_matches(c, self.pat[p + 1]),
            b'[' => self.bracket_matches(c, p, ep - 1),
            literal => literal == c,
        }
    }

    /// Where a match of the pattern from `p` on, against the subject from
    /// `s` on, ends (`None`: no match).
    fn find_end(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        self.depth += 1;
        let result = if self.depth > MAX_DEPTH {
            Err(Failure::Pattern("pattern too complex"))
        } else {
            self.find_end_at(s, p)
        };
        self.depth -= 1;
        result
    }

    fn find_end_at(&mut self, mut s: usize, mut p: usize) -> Step<Option<usize>> {
        loop {
            self.tick()?;
            let Some(&c) = self.pat.get(p) else {
                return Ok(Some(s));
            };
            match (c, self.pat.get(p + 1).copied()) {
                (b'(', Some(b')')) => return self.start_capture(s, p + 2, Capture::Position),
                (b'(', _) => return self.start_capture(s, p + 1, Capture::Unfinished),
                (b')', _) => return self.end_capture(s, p + 1),
                (b'%', Some(b'b')) => match self.balance(s, p + 2)? {
                    Some(end) => {
                        s = end;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                (b'%', Some(b'f')) => {
                    p += 2;
                    if self.pat.get(p) != Some(&b'[') {
                        return Err(Failure::Pattern("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = self.src.get(s).copied().unwrap_or(0);
                    if !self.bracket_matches(previous, p, ep - 1)
                        && self.bracket_matches(current, p, ep - 1)
                    {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                (b'%', Some(digit)) if digit.is_ascii_digit() => {
                    match self.back_reference(s, digit)? {
                        Some(end) => {
                            s = end;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                (b'$', None) => return Ok((s == self.src.len()).then_some(s)),
                _ => {}
            }
            let ep = self.class_end(p)?;
            let matched = self.single_matches(s, p, ep);
            match self.pat.get(ep) {
                Some(b'?') => {
                    if matched {
                        if let Some(end) = self.find_end(s + 1, ep + 1)? {
                            return Ok(Some(end));
                        }
                    }
                    p = ep + 1;
                }
                Some(b'*') => return self.max_expand(s, p, ep),
                Some(b'+') if matched => return self.max_expand(s + 1, p, ep),
                Some(b'+') => return Ok(None),
                Some(b'-') => return self.min_expand(s, p, ep),
                _ if matched => {
                    s += 1;
                    p = ep;
                }
                _ => return Ok(None),
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        let mut count = 0;
        while self.single_matches(s + count, p, ep) {
            self.tick()?;
            count += 1;
        }
        loop {
            if let Some(end) = self.find_end(s + count, ep + 1)? {
                return Ok(Some(end));
            }
            if count == 0 {
                return Ok(None);
            }
            count -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Step<Option<usize>> {
        loop {
            if let Some(end) = self.find_end(s, ep + 1)? {
                return Ok(Some(end));
            }
            if !self.single_matches(s, p, ep) {
                return Ok(None);
            }
            s += 1;
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: Capture) -> Step<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return Err(Failure::Pattern("too many captures"));
        }
        self.captures[self.level] = (s, what);
        self.level += 1;
        let end = self.find_end(s, p)?;
        if end.is_none() {
            self.level -= 1;
        }
        Ok(end)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Step<Option<usize>> {
        let Some(open) = (0..self.level)
            .rev()
            .find(|&l| matches!(self.captures[l].1, Capture::Unfinished))
        else {
            return Err(Failure::Pattern("invalid pattern capture"));
        };
        self.captures[open].1 = Capture::Len(s - self.captures[open].0);
        let end = self.find_end(s, p)?;
        if end.is_none() {
            self.captures[open].1 = Capture::Unfinished;
        }
        Ok(end)
    }

    /// `%bxy` from `s`: where the balanced run ends.
    fn balance(&self, s: usize, p: usize) -> Step<Option<usize>> {
        let (Some(&open), Some(&close)) = (self.pat.get(p), self.pat.get(p + 1)) else {
            return Err(Failure::Pattern("unbalanced pattern"));
        };
        if self.src.get(s) != Some(&open) {
            return Ok(None);
        }
        let mut depth = 1;
        for i in s + 1..self.src.len() {
            self.tick()?;
            if self.src[i] == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if self.src[i] == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    /// `%1`..`%9`: the subject from `s` repeats that capture.
    fn back_reference(&self, s: usize, digit: u8) -> Step<Option<usize>> {
        let l = usize::from(digit).wrapping_sub(usize::from(b'1'));
        let (start, what) = match self.captures.get(l) {
            Some(&capture) if l < self.level => capture,
            _ => return Err(Failure::Pattern("invalid capture index")),
        };
        let Capture::Len(len) = what else {
            if matches!(what, Capture::Unfinished) {
                return Err(Failure::Pattern("invalid capture index"));
            }
            return Ok(None);
        };
        let repeated = &self.src[start..start + len];
        Ok(self.src[s..].starts_with(repeated).then_some(s + len))
    }

    /// Capture `i` of a match from `s` to `e` (the whole match if there is
    /// no capture and `i` is 0).
    fn capture(&self, lua: &Lua, i: usize, s: usize, e: usize) -> mlua::Result<Value> {
        if i >= self.level {
            if i == 0 {
                return Ok(Value::String(lua.create_string(&self.src[s..e])?));
            }
            return Err(Raised::message("invalid capture index"));
        }
        let (start, what) = self.captures[i];
        match what {
            Capture::Unfinished => Err(Raised::message("unfinished capture")),
            Capture::Position => Ok(Value::Number((start + 1) as f64)),
            Capture::Len(len) => Ok(Value::String(
                lua.create_string(&self.src[start..start + len])?,
            )),
        }
    }

    fn captures(&self, lua: &Lua, s: usize, e: usize) -> mlua::Result<Vec<Value>> {
        let count = if self.level == 0 { 1 } else { self.level };
        (0..count).map(|i| self.capture(lua, i, s, e)).collect()
    }
}

fn failure(f: Failure) -> mlua::Error {
    match f {
        Failure::Stopped => Raised::message("the script was stopped"),
        Failure::Pattern(message) => Raised::message(message),
    }
}

/// The subject or the pattern: a string, or a number as Lua writes it.
fn text_arg(args: &[Value], i: usize, name: &str) -> mlua::Result<Vec<u8>> {
    match args.get(i) {
        Some(Value::String(text)) => Ok(text.as_bytes().to_vec()),
        Some(Value::Integer(n)) => Ok(format_g(*n as f64, 14).into_bytes()),
        Some(Value::Number(n)) => Ok(format_g(*n, 14).into_bytes()),
        other => Err(Raised::message(format!(
            "bad argument #{} to '{name}' (string expected, got {})",
            i + 1,
            other.map_or("no value", Value::type_name)
        ))),
    }
}

/// An optional integer argument (`luaL_optinteger`).
fn int_arg(lua: &Lua, args: &[Value], i: usize, name: &str, default: i64) -> mlua::Result<i64> {
    match args.get(i) {
        None | Some(Value::Nil) => Ok(default),
        Some(value) => match lua.coerce_number(value.clone()) {
            Ok(Some(n)) => Ok(n as i64),
            _ => Err(Raised::message(format!(
                "bad argument #{} to '{name}' (number expected, got {})",
                i + 1,
                value.type_name()
            ))),
        },
    }
}

/// A 1-based, possibly negative position as a 0-based index (`posrelat`).
fn start_index(init: i64, len: usize) -> usize {
    let init = if init < 0 {
        init + len as i64 + 1
    } else {
        init
    };
    (init.max(1) as usize - 1).min(len)
}

/// Lua 5.1 stops reading a pattern at its first NUL (`%z` matches one).
fn pattern_of(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())]
}

fn new_matcher<'a>(src: &'a [u8], pat: &'a [u8], meter: &'a dyn Meter) -> Matcher<'a> {
    Matcher {
        src,
        pat,
        level: 0,
        captures: [(0, Capture::Unfinished); MAX_CAPTURES],
        depth: 0,
        meter,
    }
}

/// `string.find` (`find` true) and `string.match`.
pub fn find(lua: &Lua, meter: &dyn Meter, args: &[Value], find: bool) -> mlua::Result<MultiValue> {
    let name = if find { "find" } else { "match" };
    let src = text_arg(args, 0, name)?;
    let pattern = text_arg(args, 1, name)?;
    let init = start_index(int_arg(lua, args, 2, name, 1)?, src.len());
    let plain = find
        && args
            .get(3)
            .is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    let pat = pattern_of(&pattern);
    let nil = || MultiValue::from_iter([Value::Nil]);
    if find && (plain || !pat.iter().any(|c| b"^$*+?.([%-".contains(c))) {
        // A linear-time search: Lua's is quadratic at worst, in one C call.
        return Ok(match memchr::memmem::find(&src[init..], pat) {
            Some(at) => {
                let start = init + at;
                MultiValue::from_iter([
                    Value::Number((start + 1) as f64),
                    Value::Number((start + pat.len()) as f64),
                ])
            }
            None => nil(),
        });
    }
    let (anchored, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, pat),
    };
    let mut m = new_matcher(&src, pat, meter);
    let mut s = init;
    loop {
        m.level = 0;
        if let Some(e) = m.find_end(s, 0).map_err(failure)? {
            let mut values = Vec::new();
            if find {
                values.push(Value::Number((s + 1) as f64));
                values.push(Value::Number(e as f64));
                if m.level > 0 {
                    values.extend(m.captures(lua, s, e)?);
                }
            } else {
                values.extend(m.captures(lua, s, e)?);
            }
            return Ok(MultiValue::from_iter(values));
        }
        s += 1;
        if anchored || s > src.len() {
            return Ok(nil());
        }
    }
}

/// `string.gmatch`: an iterator over the matches (a `^` is an ordinary
/// character here, as in Lua 5.1).
pub fn gmatch(
    lua: &Lua,
    meter: Rc<impl Meter + 'static>,
    args: &[Value],
) -> mlua::Result<mlua::Function> {
    let src = text_arg(args, 0, "gmatch")?;
    let pattern = pattern_of(&text_arg(args, 1, "gmatch")?).to_vec();
    let next = Cell::new(0usize);
    lua.create_function(move |lua, ()| {
        let mut m = new_matcher(&src, &pattern, &*meter);
        let mut s = next.get();
        while s <= src.len() {
            m.level = 0;
            if let Some(e) = m.find_end(s, 0).map_err(failure)? {
                // An empty match moves on by one, or it would repeat forever.
                next.set(if e == s { e + 1 } else { e });
                return Ok(MultiValue::from_iter(m.captures(lua, s, e)?));
            }
            s += 1;
        }
        next.set(s);
        Ok(MultiValue::from_iter([Value::Nil]))
    })
}

/// `string.gsub`.
pub fn gsub(lua: &Lua, meter: &dyn Meter, args: &[Value]) -> mlua::Result<(mlua::LuaString, f64)> {
    let src = text_arg(args, 0, "gsub")?;
    let pattern = text_arg(args, 1, "gsub")?;
    let repl = args.get(2).cloned().unwrap_or(Value::Nil);
    if !matches!(
        repl,
        Value::String(_)
            | Value::Integer(_)
            | Value::Number(_)
            | Value::Table(_)
            | Value::Function(_)
    ) {
        return Err(Raised::message(
            "bad argument #3 to 'gsub' (string/function/table expected)",
        ));
    }
    let max = int_arg(lua, args, 3, "gsub", src.len() as i64 + 1)?;
    let pat = pattern_of(&pattern);
    let (anchored, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, pat),
    };
    let mut m = new_matcher(&src, pat, meter);
    let mut out = Vec::with_capacity(src.len());
    let (mut s, mut count) = (0usize, 0i64);
    while count < max {
        m.level = 0;
        let end = m.find_end(s, 0).map_err(failure)?;
        if let Some(e) = end {
            count += 1;
            replace(lua, &m, &repl, s, e, &mut out)?;
            if out.len() > COPY_LIMIT {
                return Err(Raised::message("not enough memory"));
            }
        }
        match end {
            Some(e) if e > s => s = e,
            _ if s < src.len() => {
                out.push(src[s]);
                s += 1;
            }
            _ => break,
        }
        if anchored {
            break;
        }
    }
    out.extend_from_slice(&src[s.min(src.len())..]);
    Ok((lua.create_string(&out)?, count as f64))
}

/// Appends the replacement of the match from `s` to `e`.
fn replace(
    lua: &Lua,
    m: &Matcher,
    repl: &Value,
    s: usize,
    e: usize,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let value = match repl {
        Value::Table(table) => table.get::<Value>(m.capture(lua, 0, s, e)?)?,
        Value::Function(function) => function
            .call::<MultiValue>(Variadic::from_iter(m.captures(lua, s, e)?))?
            .into_iter()
            .next()
            .unwrap_or(Value::Nil),
        template => {
            let template = match template {
                Value::String(text) => text.as_bytes().to_vec(),
                Value::Integer(n) => format_g(*n as f64, 14).into_bytes(),
                Value::Number(n) => format_g(*n, 14).into_bytes(),
                _ => Vec::new(),
            };
            let mut i = 0;
            while i < template.len() {
                let c = template[i];
                i += 1;
                if c != b'%' {
                    out.push(c);
                    continue;
                }
                // A `%` at the very end adds the NUL after it, as in C.
                let Some(&d) = template.get(i) else {
                    out.push(0);
                    break;
                };
                i += 1;
                match d {
                    b'0' => out.extend_from_slice(&m.src[s..e]),
                    b'1'..=b'9' => push_value(out, &m.capture(lua, usize::from(d - b'1'), s, e)?),
                    other => out.push(other),
                }
            }
            return Ok(());
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(&m.src[s..e]),
        Value::String(_) | Value::Integer(_) | Value::Number(_) => push_value(out, &value),
        other => {
            return Err(Raised::message(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )))
        }
    }
    Ok(())
}

fn push_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => out.extend_from_slice(&text.as_bytes()),
        Value::Integer(n) => out.extend_from_slice(format_g(*n as f64, 14).as_bytes()),
        Value::Number(n) => out.extend_from_slice(format_g(*n, 14).as_bytes()),
        _ => {}
    }
}
