//! Scripts run through the whole machine (`apply_entry`), without a disk.
//! The expected error lines are redis-server 7.0.15's, byte for byte, where
//! this server answers the same.

use crate::machine::testing::Machine;
use crate::machine::Reply;

fn eval(m: &mut Machine, script: &str, keys: &[&str], args: &[&str]) -> Reply {
    let numkeys = keys.len().to_string();
    let mut words = vec!["EVAL", script, &numkeys];
    words.extend(keys);
    words.extend(args);
    m.run(1_700_000_000_123, &words)
}

fn run(script: &str) -> Reply {
    eval(&mut Machine::new(), script, &[], &[])
}

fn bulk(text: &str) -> Reply {
    Reply::bulk(text.as_bytes())
}

fn error_of(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

const SHA_OF_RETURN_A: &str = "bbfcd1ececc90deec823f7fb730e4bfb2a4ba625";

#[test]
fn lua_values_become_redis_replies() {
    assert_eq!(run("return 'hello'"), bulk("hello"));
    assert_eq!(run("return 100.5"), Reply::Int(100));
    assert_eq!(run("return -3.99"), Reply::Int(-3));
    assert_eq!(run("return true"), Reply::Int(1));
    assert_eq!(run("return false"), Reply::Nil);
    assert_eq!(run("return nil"), Reply::Nil);
    assert_eq!(run("return {ok='fine'}"), Reply::Status("fine".into()));
    assert_eq!(
        run("return {err='My Error'}"),
        Reply::Error("My Error".into())
    );
    assert_eq!(
        run("return {1,2,3,'ciao',{1,2}}"),
        Reply::Array(vec![
            Reply::Int(1),
            Reply::Int(2),
            Reply::Int(3),
            bulk("ciao"),
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)])
        ])
    );
    // An array stops at its first nil.
    assert_eq!(
        run("return {1,2,nil,4}"),
        Reply::Array(vec![Reply::Int(1), Reply::Int(2)])
    );
    assert_eq!(run("return _G"), Reply::Array(vec![]));
    // A metatable runs no code while the answer is read.
    assert_eq!(
        run("local a = {}; setmetatable(a,{__index=function() foo() end}) return a"),
        Reply::Array(vec![])
    );
}

#[test]
fn redis_replies_become_lua_values() {
    let mut m = Machine::new();
    m.run(0, &["set", "mykey", "myval"]);
    let shape = |m: &mut Machine, script: &str| eval(m, script, &["mykey"], &[]);
    assert_eq!(
        shape(
            &mut m,
            "local v = redis.call('get', KEYS[1]); return {type(v), v}"
        ),
        Reply::Array(vec![bulk("string"), bulk("myval")])
    );
    assert_eq!(
        shape(
            &mut m,
            "local v = redis.pcall('incr', KEYS[1]); return {type(v), v['err']}"
        ),
        Reply::Array(vec![
            bulk("table"),
            bulk("ERR value is not an integer or out of range")
        ])
    );
    assert_eq!(
        shape(
            &mut m,
            "local v = redis.call('set', KEYS[1], 'x'); return {type(v), v['ok']}"
        ),
        Reply::Array(vec![bulk("table"), bulk("OK")])
    );
    assert_eq!(
        shape(
            &mut m,
            "local v = redis.call('get', 'nothing'); return {type(v), v == false}"
        ),
        Reply::Array(vec![bulk("boolean"), Reply::Int(1)])
    );
    assert_eq!(
        shape(
            &mut m,
            "local v = redis.call('incr', 'n'); return {type(v), v}"
        ),
        Reply::Array(vec![bulk("number"), Reply::Int(1)])
    );
    assert_eq!(
        shape(
            &mut m,
            "redis.setresp(3); return redis.call('get', 'nothing') == nil"
        ),
        Reply::Int(1)
    );
}

#[test]
fn numbers_passed_to_redis_call_are_written_exactly() {
    let mut m = Machine::new();
    eval(&mut m, "redis.call('set', 'a', 9007199254740991)", &[], &[]);
    assert_eq!(m.read(0, &["get", "a"]), bulk("9007199254740991"));
    eval(&mut m, "redis.call('set', 'b', 1.5)", &[], &[]);
    assert_eq!(m.read(0, &["get", "b"]), bulk("1.5"));
    assert_eq!(
        error_of(run("return redis.call('get', {})")),
        "ERR Lua redis lib command arguments must be strings or integers script: \
         4368e88f98d93af9caf358186e5fbf273374ee91, on @user_script:1."
    );
}

#[test]
fn errors_say_what_redis_says() {
    assert_eq!(
        error_of(run("return a")),
        format!(
            "ERR user_script:1: Script attempted to access nonexistent global variable 'a' \
             script: {SHA_OF_RETURN_A}, on @user_script:1."
        )
    );
    assert_eq!(
        error_of(run("a=1")),
        "ERR user_script:1: Attempt to modify a readonly table script: \
         86eda770a6060824b090dd4df091e3bd4121279c, on @user_script:1."
    );
    assert_eq!(
        error_of(run("return redis.call('nosuch')")),
        "ERR Unknown Redis command called from script script: \
         206396248e12c6e742fd7296250433c8d7343b74, on @user_script:1."
    );
    assert_eq!(
        error_of(run("return redis.call('get')")),
        "ERR Wrong number of args calling Redis command from script script: \
         f187dee77f607f7cff00bbabc9df38507582c78d, on @user_script:1."
    );
    assert_eq!(
        error_of(run("return redis.call('multi')")),
        "ERR This Redis command is not allowed from script script: \
         c329a1a294be6bf95b44144f7502610661ae925a, on @user_script:1."
    );
    assert_eq!(
        error_of(run("error('x')")),
        "ERR user_script:1: x script: 9851144f39f03a0d597a980c5aa79c80cb696891, on @user_script:1."
    );
    assert_eq!(
        error_of(run("error({err='MY x'})")),
        "MY x script: 892d3143709ed90870061a291d50ce1f009cd7bf, on @user_script:1."
    );
    assert_eq!(
        error_of(run("return 1 +")),
        "ERR Error compiling script (new function): user_script:1: unexpected symbol near '<eof>'"
    );
    assert_eq!(
        error_of(run("return redis.call()")),
        "ERR Please specify at least one argument for this redis lib call script: \
         0a907e1429221a4d85516cab7fd219a82a9439d8, on @user_script:1."
    );
    assert_eq!(
        error_of(run("return redis.sha1hex()")),
        "ERR wrong number of arguments script: 3c7ce947ae74a835cc575b6ee87fb27503cb7ba4, \
         on @user_script:1."
    );
    assert_eq!(
        run("return redis.error_reply('boom')"),
        Reply::Error("ERR boom".into())
    );
    assert_eq!(
        run("return redis.error_reply('MY_CODE custom')"),
        Reply::Error("MY_CODE custom".into())
    );
    // The line is the script's, not the library's.
    let e = error_of(run("local x = 1\n\nredis.call('incr', 'x', 'y')"));
    assert!(e.ends_with("on @user_script:3."), "{e}");
}

#[test]
fn pcall_gives_the_text_of_a_redis_error() {
    let mut m = Machine::new();
    m.run(0, &["set", "s", "x"]);
    assert_eq!(
        eval(
            &mut m,
            "local ok, e = pcall(function() redis.call('incr','s') end) return {tostring(ok), e}",
            &[],
            &[]
        ),
        Reply::Array(vec![
            bulk("false"),
            bulk("ERR value is not an integer or out of range")
        ])
    );
    let reply = run("local ok, e = pcall(function() return foo end); return e");
    let Reply::Bulk(text) = reply else { panic!() };
    assert!(String::from_utf8_lossy(&text)
        .ends_with("Script attempted to access nonexistent global variable 'foo'"));
}

#[test]
fn writes_before_an_error_stay() {
    let mut m = Machine::new();
    let reply = eval(
        &mut m,
        "redis.call('set', KEYS[1], 'written'); redis.call('incr', KEYS[1])",
        &["k"],
        &[],
    );
    assert!(error_of(reply).starts_with("ERR value is not an integer"));
    assert_eq!(m.read(0, &["get", "k"]), bulk("written"));
}

#[test]
fn a_runaway_script_is_stopped_and_its_earlier_writes_stay() {
    let mut m = Machine::new();
    for script in [
        "redis.call('set', 'before', '1') while true do end",
        "local f = function() while true do end end while true do pcall(f) end",
        "while true do pcall(error) end",
        "local co = coroutine.create(function() while true do end end) \
         while true do coroutine.resume(co) end",
        "local f = coroutine.wrap(function() while true do end end) f()",
        "while true do xpcall(function() while true do end end, function() return 1 end) end",
    ] {
        let e = error_of(eval(&mut m, script, &[], &[]));
        assert!(
            e.contains("was stopped after 10000000 Lua instructions"),
            "{script}: {e}"
        );
    }
    assert_eq!(m.read(0, &["get", "before"]), bulk("1"));
}

#[test]
fn a_script_that_allocates_too_much_fails_and_lua_can_catch_it() {
    let e = error_of(run("local t = {} for i = 1, 1e9 do t[i] = i end"));
    assert!(e.contains("not enough memory"), "{e}");
    assert_eq!(
        run("local ok = pcall(string.rep, 'x', 1e9) return tostring(ok)"),
        bulk("false")
    );
}

#[test]
fn the_same_script_gives_the_same_answer_on_every_run() {
    let script = "return {tostring(math.random()), math.random(100), \
                  tostring({}), tostring(rawget(_G, 'print')), redis.call('time')[1]}";
    let first = run(script);
    assert_eq!(run(script), first);
    let Reply::Array(parts) = &first else {
        panic!()
    };
    assert_eq!(parts[2], bulk("table: 0x00000001"));
    // TIME is the entry's time.
    assert_eq!(parts[4], bulk("1700000000"));
    // Seeded as redis-server 7.0.15 answers `math.randomseed(10)`.
    assert_eq!(
        run("math.randomseed(10); return tostring(math.random())"),
        bulk("0.87885112309775")
    );
}

#[test]
fn what_the_sandbox_leaves_out_is_absent() {
    for name in [
        "os", "io", "debug", "loadfile", "dofile", "print", "require", "package",
    ] {
        let e = error_of(run(&format!("return {name}")));
        assert!(e.contains("nonexistent global variable"), "{name}: {e}");
    }
    let e = error_of(run(
        "return loadstring(string.dump(function() return 1 end))()",
    ));
    assert!(e.contains("attempt to call a nil value"), "{e}");
    assert_eq!(run("return loadstring('return 5')()"), Reply::Int(5));
    for script in [
        "setmetatable(_G, {})",
        "local g = getmetatable(_G); g.__index = {}",
        "redis = function() return 1 end",
        "_G = {}",
        "redis.call = function() return 1 end",
        "cjson.encode = function() return 1 end",
        "bit.lshift = function() return 1 end",
        "getmetatable('').__index = function() return 1 end",
    ] {
        let e = error_of(run(script));
        assert!(
            e.contains("Attempt to modify a readonly table"),
            "{script}: {e}"
        );
    }
}

#[test]
fn read_only_scripts_refuse_writes() {
    let mut m = Machine::new();
    let e = error_of(m.run(0, &["EVAL_RO", "return redis.call('set','k','v')", "0"]));
    assert!(
        e.starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{e}"
    );
    let e = error_of(m.run(
        0,
        &[
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('set','k','v')",
            "0",
        ],
    ));
    assert!(e.ends_with("on @user_script:2."), "{e}");
    assert_eq!(m.read(0, &["exists", "k"]), Reply::Int(0));
    m.run(0, &["set", "k", "v"]);
    assert_eq!(
        m.read(
            0,
            &["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"]
        ),
        bulk("v")
    );
}

#[test]
fn select_inside_a_script_changes_its_database_only() {
    let mut m = Machine::new();
    eval(
        &mut m,
        "redis.call('select', 9); redis.call('set', 'k', 'nine')",
        &[],
        &[],
    );
    assert_eq!(m.read(0, &["get", "k"]), Reply::Nil);
    let script = "return redis.call('select', 99)";
    assert_eq!(
        error_of(run(script)),
        format!(
            "ERR DB index is out of range script: {}, on @user_script:1.",
            super::sha1_hex(script.as_bytes())
        )
    );
}

#[test]
fn bit_and_cjson_work_as_in_redis() {
    assert_eq!(
        run("return bit.tohex(65535, -2147483648)"),
        bulk("0000FFFF")
    );
    assert_eq!(run("return bit.bor(1,2,4,8,16,32,64,128)"), Reply::Int(255));
    assert_eq!(run("return bit.bxor(1,2)"), Reply::Int(3));
    assert_eq!(run("return bit.tobit(0xffffffff)"), Reply::Int(-1));
    assert_eq!(
        run("return table.concat(cjson.decode('[0.0, -5e3, -1, 0.3e-3, 1023.2, 0e10]'), ' ')"),
        bulk("0 -5000 -1 0.0003 1023.2 0")
    );
    assert_eq!(
        run("return cjson.encode({1, 'a/b', true, {x=cjson.null}})"),
        bulk(r#"[1,"a\/b",true,{"x":null}]"#)
    );
    let e = error_of(run("return cjson.encode({[false]='x'})"));
    assert!(e.contains("table key must be a number or string"), "{e}");
    assert_eq!(
        run("cjson.decode_max_depth(1); return tostring(pcall(cjson.decode, '[[1]]'))"),
        bulk("false")
    );
}

/// Lua 5.1's string patterns, matched in Rust (`pattern.rs`): each case's
/// answer is redis-server 7.0.15's (its Lua runs lstrlib.c), joined with `|`.
const PATTERN_CASES: &[(&str, &str)] = &[
    (r#"string.find('hello world', 'o w')"#, r#"5|7"#),
    (r#"string.find('hello world', 'o', 6)"#, r#"8|8"#),
    (r#"string.find('hello world', 'l+')"#, r#"3|4"#),
    (r#"string.find('hello', '')"#, r#"1|0"#),
    (r#"string.find('hello', '', 10)"#, r#"6|5"#),
    (r#"string.find('hello', 'l', -2)"#, r#"4|4"#),
    (r#"string.find('a.b', '.', 1, true)"#, r#"2|2"#),
    (r#"string.find('hello', '^h(e)(l+)')"#, r#"1|4|e|ll"#),
    (r#"string.find('hello', '^e')"#, r#""#),
    (
        r#"string.match('key:value', '(%w+):(%w+)')"#,
        r#"key|value"#,
    ),
    (r#"string.match('  trim  ', '^%s*(.-)%s*$')"#, r#"trim"#),
    (r#"string.match('hello', '()ll()')"#, r#"3|5"#),
    (
        r#"string.match('THE (quick) fox', '%((%a+)%)')"#,
        r#"quick"#,
    ),
    (r#"string.match('f(a(b)c)d', '%b()')"#, r#"(a(b)c)"#),
    (
        r#"string.match('THE (quick) fox', '%f[%a]%a+', 5)"#,
        r#"quick"#,
    ),
    (r#"string.match('hello hello', '(h%a+) %1')"#, r#"hello"#),
    (r#"string.match('abc', '[^%a]')"#, r#""#),
    (r#"string.match('a-b', '[a%-]+')"#, r#"a-"#),
    (r#"string.match('x]y', '[]]')"#, r#"]"#),
    (
        r#"string.match('2024-01-05', '(%d+)-(%d+)-(%d+)')"#,
        r#"2024|01|05"#,
    ),
    (r#"string.match('abc', 'b*')"#, r#""#),
    (r#"string.match('abc', 'x?a')"#, r#"a"#),
    (r#"string.match('aaa', 'a-$')"#, r#"aaa"#),
    (r#"string.match('hello', '.-l')"#, r#"hel"#),
    (r#"string.match('\0a', '%za')"#, "\0a"),
    (
        r#"string.gsub('hello world', 'o', '0')"#,
        r#"hell0 w0rld|2"#,
    ),
    (
        r#"string.gsub('hello world', '(%w+)', '<%1>')"#,
        r#"<hello> <world>|2"#,
    ),
    (r#"string.gsub('hello', '', '-')"#, r#"-h-e-l-l-o-|6"#),
    (r#"string.gsub('abc', '%w', '%0%0', 2)"#, r#"aabbc|2"#),
    (
        r#"string.gsub('$name is $age', '%$(%w+)', {name='bob', age=42})"#,
        r#"bob is 42|2"#,
    ),
    (
        r#"string.gsub('abc', '.', function(c) if c == 'b' then return nil end return c:upper() end)"#,
        r#"AbC|3"#,
    ),
    (r#"string.gsub('hello', '^h', 'H')"#, r#"Hello|1"#),
    (r#"string.gsub('a,b,,c', ',', ';')"#, r#"a;b;;c|3"#),
    (r#"string.gsub('x', 'x', '%%')"#, r#"%|1"#),
    (
        r#"(function() local t = {} for w in string.gmatch('one two  three', '%a+') do t[#t+1] = w end return table.concat(t, ',') end)()"#,
        r#"one,two,three"#,
    ),
    (
        r#"(function() local t = {} for k, v in string.gmatch('a=1, b=2', '(%w+)=(%w+)') do t[#t+1] = k .. v end return table.concat(t, ',') end)()"#,
        r#"a1,b2"#,
    ),
    (
        r#"(function() local t = {} for w in string.gmatch('abc', '') do t[#t+1] = '[' .. w .. ']' end return table.concat(t, ',') end)()"#,
        r#"[],[],[],[]"#,
    ),
    (
        r#"(function() local t = {} for w in string.gmatch('^a^a', '^a') do t[#t+1] = w end return table.concat(t, ',') end)()"#,
        r#"^a,^a"#,
    ),
    (r#"("x-y"):find("-", 1, true)"#, r#"2|2"#),
    (r#"("hello"):gsub("l", "L")"#, r#"heLLo|2"#),
    (
        r#"pcall(string.find, 'x', '%')"#,
        r#"false|malformed pattern (ends with '%')"#,
    ),
    (
        r#"pcall(string.find, 'x', '[a')"#,
        r#"false|malformed pattern (missing ']')"#,
    ),
    (
        r#"pcall(string.find, 'x', '(')"#,
        r#"false|unfinished capture"#,
    ),
    (r#"pcall(string.find, 'x', ')')"#, r#"true"#),
    (
        r#"pcall(string.find, 'x', '%b')"#,
        r#"false|unbalanced pattern"#,
    ),
    (
        r#"pcall(string.find, 'x', '%f')"#,
        r#"false|missing '[' after '%f' in pattern"#,
    ),
    (
        r#"pcall(string.match, 'x', '%1')"#,
        r#"false|invalid capture index"#,
    ),
    (
        r#"pcall(string.gsub, 'x', 'x', '%2')"#,
        r#"false|invalid capture index"#,
    ),
    (
        r#"pcall(string.gsub, 'x', 'x', true)"#,
        r#"false|bad argument #3 to 'gsub' (string/function/table expected)"#,
    ),
    (
        r#"pcall(string.gsub, 'x', 'x', function() return {} end)"#,
        r#"false|invalid replacement value (a table)"#,
    ),
    (r#"string.find(12345, 34)"#, r#"3|4"#),
    (r#"string.match('  x', '^%s*()')"#, r#"3"#),
    (r#"string.gsub('abc', 'b', 5)"#, r#"a5c|1"#),
];

#[test]
fn string_patterns_match_as_lua_5_1_does() {
    for (expression, expected) in PATTERN_CASES {
        let script = format!(
            "local r = {{{expression}}} local o = {{}} \
             for i = 1, table.maxn(r) do o[#o+1] = tostring(r[i]) end \
             return table.concat(o, '|')"
        );
        assert_eq!(
            run(&script),
            Reply::bulk(expected.as_bytes()),
            "{expression}"
        );
    }
}

#[test]
fn a_pattern_that_would_backtrack_for_ever_is_stopped_like_a_loop() {
    for script in [
        // Quadratic: every start, every length, no `b` anywhere.
        "return string.find(string.rep('a', 200000), 'a.-b')",
        // Exponential.
        "return string.match(string.rep('a', 40), string.rep('a?', 40) .. string.rep('a', 40) .. 'b')",
        "for w in string.gmatch(string.rep('x', 100000), '.-y') do end",
        "return string.gsub(string.rep('a', 100000), '(a*)*b', '')",
    ] {
        let e = error_of(run(script));
        assert!(e.contains("was stopped after 10000000 Lua instructions"), "{script}: {e}");
    }
    let e = error_of(run(
        "return string.find(string.rep('a', 300), string.rep('a?', 300))",
    ));
    assert!(e.contains("pattern too complex"), "{e}");
}

#[test]
fn cmsgpack_packs_as_redis_and_unpacks_what_it_packed() {
    let hex = "local function hex(s) local h = '' for i = 1, #s do \
               h = h .. string.format('%02x', s:byte(i)) end return h end ";
    for (value, expected) in [
        ("0.1", "cb3fb999999999999a"),
        ("0.5", "ca3f000000"),
        ("-1099511627776", "d3ffffff0000000000"),
        ("-1", "ff"),
        ("200", "cccc8"),
        ("{1, 2, 'x'}", "930102a178"),
        ("{a = true}", "81a161c3"),
        ("nil", "c0"),
    ] {
        let expected = if value == "200" { "ccc8" } else { expected };
        assert_eq!(
            run(&format!("{hex} return hex(cmsgpack.pack({value}))")),
            bulk(expected),
            "{value}"
        );
    }
    assert_eq!(
        run(
            "local t = {s = string.rep('x', 70000), n = -3147483648, a = {1, 2, {3}}, f = 2.5} \
             local back = cmsgpack.unpack(cmsgpack.pack(t)) \
             return {#back.s, back.n, back.a[3][1], tostring(back.f)}"
        ),
        Reply::Array(vec![
            Reply::Int(70000),
            Reply::Int(-3147483648),
            Reply::Int(3),
            bulk("2.5")
        ])
    );
    assert_eq!(
        run("local s = cmsgpack.pack('a', 'b', 3) \
             local o1, v1 = cmsgpack.unpack_one(s) \
             local o2, v2 = cmsgpack.unpack_one(s, o1) \
             local o3, v3 = cmsgpack.unpack_limit(s, 5, o2) \
             return {o1, v1, o2, v2, o3, v3, select('#', cmsgpack.unpack(s))}"),
        Reply::Array(vec![
            Reply::Int(2),
            bulk("a"),
            Reply::Int(4),
            bulk("b"),
            Reply::Int(-1),
            Reply::Int(3),
            Reply::Int(3)
        ])
    );
    // A table that contains itself packs to a depth of 16, as lua-cmsgpack does.
    assert_eq!(
        run(
            "local a = {} a.x = a local back = cmsgpack.unpack(cmsgpack.pack(a)) \
             local depth = 0 while back do depth = depth + 1 back = back.x end return depth"
        ),
        Reply::Int(16)
    );
    let e = error_of(run("return cmsgpack.unpack('\\220\\0\\5')"));
    assert!(e.contains("Missing bytes in input."), "{e}");
    let e = error_of(run("return cmsgpack.unpack(string.rep('\\145', 5000))"));
    assert!(e.contains("nested too deeply"), "{e}");
}

#[test]
fn deep_structures_end_in_errors_not_in_a_stack_overflow() {
    let e = error_of(run(
        "local t = {} local c = t for i = 1, 5000 do c[1] = {} c = c[1] end return cjson.encode(t)",
    ));
    assert!(e.contains("excessive nesting"), "{e}");
    assert_eq!(
        run(
            "local t = {} local c = t for i = 1, 999 do c[1] = {} c = c[1] end \
             return #cjson.encode(t)"
        ),
        Reply::Int(2000)
    );
    let e = error_of(run("return cjson.decode(string.rep('[', 100000))"));
    assert!(e.contains("recursion limit"), "{e}");
    let e = error_of(run(
        "local f f = function(n) return setmetatable({}, {__index = function() return f(n + 1)[1] end}) end \
         return f(0)[1]",
    ));
    assert!(e.contains("stack overflow"), "{e}");
}

#[test]
fn unpack_refuses_ranges_that_crash_lua_5_1() {
    // redis-server 7.0.15 (Debian, with the CVE-2025-46817 fix) answers these.
    for script in [
        "return {unpack({1,2,3}, -2, 2147483647)}",
        "return {unpack({1,2,3}, 0, 2147483647)}",
        "return {unpack({1,2,3}, -2147483648, -2)}",
    ] {
        let e = error_of(run(script));
        assert!(e.contains("too many results to unpack"), "{script}: {e}");
    }
    assert_eq!(
        run("return {unpack({1,2,3}, -1, -2)}"),
        Reply::Array(vec![])
    );
    assert_eq!(
        run("return {unpack({1,2,3}, 2)}"),
        Reply::Array(vec![Reply::Int(2), Reply::Int(3)])
    );
    assert_eq!(
        run(
            "local n, v = select('#', unpack({1,2,3}, -1, 5)), {unpack({1,2,3}, -1, 5)} \
             for i = 1, n do v[i] = v[i] or '_' end return table.concat(v, ' ')"
        ),
        bulk("_ _ 1 2 3 _ _")
    );
    let spread = |n: usize| {
        run(&format!(
            "local a = {{}} for i = 1, {n} do a[i] = i end return select('#', unpack(a))"
        ))
    };
    // Lua's limit is 8000 values a call; mlua keeps one slot for itself.
    assert_eq!(spread(7998), Reply::Int(7998));
    assert!(error_of(spread(7999)).contains("too many results to unpack"));
}

#[test]
fn what_rust_copies_out_of_lua_is_bounded() {
    let big = "local s = string.rep('x', 1000000) local t = {} for i = 1, 100 do t[i] = s end ";
    let e = error_of(run(&format!("{big} return t")));
    assert_eq!(e, "ERR the script's answer is larger than 64 MiB");
    for (call, says) in [
        ("return cjson.encode(t)", "not enough memory"),
        ("return cmsgpack.pack(t)", "not enough memory"),
        (
            "return string.gsub(string.rep('a', 100), 'a', s)",
            "not enough memory",
        ),
        (
            "return redis.call('mset', unpack(t))",
            "a call from a script may pass at most 64 MiB",
        ),
    ] {
        let e = error_of(run(&format!("{big} {call}")));
        assert!(e.contains(says), "{call}: {e}");
    }
    // A plain find is linear, whatever the strings.
    assert_eq!(
        run("return string.find(string.rep('a', 4000000), string.rep('a', 2000000) .. 'b', 1, true)"),
        Reply::Nil
    );
}

#[test]
fn large_tables_pack_and_encode() {
    assert_eq!(
        run(
            "local a, m = {}, {} for i = 1, 100000 do a[i] = 'v' .. i; m['k' .. i] = i end \
             local back = cmsgpack.unpack(cmsgpack.pack({a = a, m = m})) \
             local json = cjson.decode(cjson.encode({a = a, m = m})) \
             return {#back.a, back.m.k99999, #json.a, json.m.k5}"
        ),
        Reply::Array(vec![
            Reply::Int(100000),
            Reply::Int(99999),
            Reply::Int(100000),
            Reply::Int(5)
        ])
    );
}

#[test]
fn a_flush_inside_a_script_removes_what_the_entry_wrote_before_it() {
    let mut m = Machine::new();
    m.run(0, &["set", "old", "1"]);
    assert_eq!(
        eval(
            &mut m,
            "redis.call('set', 'new', '1') redis.call('flushdb') \
             return {redis.call('exists', 'old', 'new'), redis.call('dbsize')}",
            &[],
            &[]
        ),
        Reply::Array(vec![Reply::Int(0), Reply::Int(0)])
    );
    assert_eq!(m.read(0, &["dbsize"]), Reply::Int(0));
    assert_eq!(m.read(0, &["exists", "new"]), Reply::Int(0));
}
