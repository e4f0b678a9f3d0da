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
            e.contains("was stopped after 100000000 Lua instructions"),
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
