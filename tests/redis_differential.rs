//! The same random string commands, one at a time, to a real `redis-server`
//! and to the leader of a real three-replica cluster, through the `redis`
//! crate: every reply and, at the end, every key and value must be the same.
//!
//! The commands are drawn over five keys, so they meet each other's keys, with
//! the arguments where Redis's answers are fussy: missing and repeated
//! options, conflicting options, integers at and past the 64-bit limits,
//! zero and negative times, offsets out of range, words that are not
//! numbers. Skipped without `redis-server` on the PATH (`.ci/run` installs
//! it). What is left out on purpose, each a difference the README gives:
//! `INCRBYFLOAT` (Redis adds in the C compiler's `long double`, 80 bits on
//! x86, and prints 17 decimals of it; here `f64` and the shortest form),
//! `DBSIZE` (both count a key past its expiry until it is reaped, at moments
//! of their own), a `TTL` other than -1 and -2 (time passes between the
//! two), and option words that are not text or longer than 40 characters
//! (an error line here quotes a word in one line of at most 40 characters;
//! Redis's quotes it whole, and stops at a zero byte).

mod harness;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{free_port, Cluster, ELECTION_TIMEOUT};
use redis::{Connection, Value};

const SETTLE: Duration = Duration::from_secs(30);
const COMMANDS: usize = 3000;

/// A `redis-server` without persistence on a free port, stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        harness::wait_listening(port, SETTLE);
        Some(RedisServer { child, port })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small, seeded generator: the same seed draws the same commands.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }

    fn key(&mut self) -> &'static str {
        self.pick(&["a", "b", "c", "k1", "{x}y"])
    }

    fn value(&mut self) -> &'static str {
        self.pick(&[
            "",
            "v",
            "hello",
            "123",
            "-7",
            "3.5",
            "a longer value, for GETRANGE and LCS",
            "12345678901234567890",
        ])
    }

    fn integer(&mut self) -> &'static str {
        self.pick(&[
            "0",
            "1",
            "-1",
            "10",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "abc",
            "1.5",
            "",
            " 1",
            "+1",
            "007",
            "-0",
        ])
    }

    /// A relative time: fine, zero, negative, not a number, or past what
    /// milliseconds can hold.
    fn time(&mut self) -> &'static str {
        self.pick(&[
            "100000",
            "200000",
            "0",
            "-5",
            "abc",
            "9223372036854775807",
            "1000000000000000",
        ])
    }

    /// An absolute time: far ahead, in the past, or not a number.
    fn at(&mut self) -> &'static str {
        self.pick(&["4102444800", "4102444801", "1", "0", "-1", "abc"])
    }

    fn set_options(&mut self) -> Vec<&'static str> {
        let mut words = Vec::new();
        for _ in 0..self.below(4) {
            match self.below(8) {
                0 => words.push(self.pick(&["NX", "nx"])),
                1 => words.push("XX"),
                2 => words.push("GET"),
                3 => words.push("KEEPTTL"),
                4 => words.extend(["EX", self.time()]),
                5 => words.extend(["PX", self.time()]),
                6 => words.extend(["EXAT", self.at()]),
                _ => words.extend(["PXAT", self.at()]),
            }
        }
        words
    }

    fn getex_options(&mut self) -> Vec<&'static str> {
        let mut words = Vec::new();
        for _ in 0..self.below(3) {
            match self.below(5) {
                0 => words.push("PERSIST"),
                1 => words.extend(["EX", self.time()]),
                2 => words.extend(["PX", self.time()]),
                3 => words.extend(["EXAT", self.at()]),
                _ => words.push(self.pick(&["KEEPTTL", "EX"])),
            }
        }
        words
    }

    fn expire_options(&mut self) -> Vec<&'static str> {
        match self.below(9) {
            0..=2 => vec![],
            3 => vec!["NX"],
            4 => vec!["XX"],
            5 => vec!["GT"],
            6 => vec!["LT"],
            7 => vec!["NX", "XX"],
            _ => vec!["GT", "LT"],
        }
    }

    fn keys(&mut self, at_most: usize) -> Vec<&'static str> {
        (0..self.below(at_most + 1)).map(|_| self.key()).collect()
    }

    fn command(&mut self) -> Vec<&'static str> {
        let mut words = match self.below(30) {
            0 | 1 => vec!["SET", self.key(), self.value()],
            2 => vec!["GET", self.key()],
            3 => vec!["APPEND", self.key(), self.value()],
            4 => vec![self.pick(&["INCR", "DECR"]), self.key()],
            5 => vec![self.pick(&["INCRBY", "DECRBY"]), self.key(), self.integer()],
            6 => vec![
                self.pick(&["GETRANGE", "SUBSTR"]),
                self.key(),
                self.integer(),
                self.integer(),
            ],
            7 => vec![
                "SETRANGE",
                self.key(),
                self.pick(&["0", "3", "-1", "abc", "10"]),
                self.value(),
            ],
            8 => vec!["STRLEN", self.key()],
            9 => vec![
                "GETBIT",
                self.key(),
                self.pick(&["0", "7", "100", "-1", "abc", "4294967296"]),
            ],
            10 => vec![
                "SETBIT",
                self.key(),
                self.pick(&["0", "7", "100", "-1", "abc"]),
                self.pick(&["0", "1", "2", "x"]),
            ],
            11 | 12 => {
                let mut words = vec![self.pick(&["MSET", "MSETNX"])];
                for _ in 0..self.below(4) {
                    words.extend([self.key(), self.value()]);
                }
                if self.below(10) == 0 {
                    words.push(self.key());
                }
                words
            }
            13 => [vec!["MGET"], self.keys(3)].concat(),
            14 => [
                vec![self.pick(&["DEL", "EXISTS", "TOUCH", "UNLINK"])],
                self.keys(3),
            ]
            .concat(),
            15 => vec![self.pick(&["RENAME", "RENAMENX"]), self.key(), self.key()],
            16 => {
                let option = match self.below(4) {
                    0 => vec![],
                    1 => vec!["REPLACE"],
                    2 => vec!["DB", "0"],
                    _ => vec!["bogus"],
                };
                [vec!["COPY", self.key(), self.key()], option].concat()
            }
            17 => vec![self.pick(&["GETDEL", "PERSIST", "TYPE"]), self.key()],
            18 => vec!["GETSET", self.key(), self.value()],
            19 => [vec!["GETEX", self.key()], self.getex_options()].concat(),
            20 => [
                vec![self.pick(&["EXPIRE", "PEXPIRE"]), self.key(), self.time()],
                self.expire_options(),
            ]
            .concat(),
            21 => [
                vec![self.pick(&["EXPIREAT", "PEXPIREAT"]), self.key(), self.at()],
                self.expire_options(),
            ]
            .concat(),
            22 => [
                vec!["LCS", self.key(), self.key()],
                match self.below(5) {
                    0 => vec![],
                    1 => vec!["LEN"],
                    2 => vec!["IDX"],
                    3 => vec!["IDX", "MINMATCHLEN", "2"],
                    _ => vec!["IDX", "WITHMATCHLEN"],
                },
            ]
            .concat(),
            23 => vec!["SETNX", self.key(), self.value()],
            24 => vec![
                self.pick(&["SETEX", "PSETEX"]),
                self.key(),
                self.time(),
                self.value(),
            ],
            25 => vec![
                "KEYS",
                self.pick(&["*", "k*", "?", "[ab]", "[^a]", "*[", "{x}*"]),
            ],
            26 => vec![
                self.pick(&["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"]),
                self.key(),
            ],
            27 => vec!["EXPIRE", self.key(), self.time(), "bogus"],
            // Any of these with too few or too many words.
            _ => {
                let name = self.pick(&[
                    "GET", "SET", "INCR", "MGET", "DEL", "EXPIRE", "GETRANGE", "LCS", "APPEND",
                ]);
                [
                    vec![name],
                    (0..self.below(5)).map(|_| self.value()).collect(),
                ]
                .concat()
            }
        };
        if words[0] == "SET" && words.len() == 3 {
            words.extend(self.set_options());
        }
        words
    }
}

/// A reply in a form two servers' can be compared by: errors as their line,
/// KEYS sorted, a TTL that counts down as "counting".
fn reply(connection: &mut Connection, words: &[&str]) -> String {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    match command.query::<Value>(connection) {
        Err(e) => format!("error {:?} {:?}", e.code(), e.detail()),
        Ok(Value::Int(n))
            if n >= 0 && (words[0].ends_with("TTL") || words[0].ends_with("TIME")) =>
        {
            "counting".into()
        }
        Ok(Value::Array(mut keys)) if words[0] == "KEYS" => {
            keys.sort_by_key(|key| format!("{key:?}"));
            format!("{keys:?}")
        }
        Ok(value) => format!("{value:?}"),
    }
}

#[test]
fn string_commands_answer_as_redis_server_does() {
    let Some(reference) = RedisServer::start() else {
        eprintln!("skipped: no redis-server on the PATH (apt-get install redis-server)");
        return;
    };
    let mut redis_server =
        harness::redis_connection(&format!("redis://127.0.0.1:{}/", reference.port), SETTLE);
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let mut ours = cluster.redis(leader, SETTLE);
    // A new cluster moves to this build's newest machine version on its own,
    // within seconds; until then it answers by the older rules.
    let deadline = Instant::now() + SETTLE;
    while harness::raft_info(&mut ours).number("machine_version") < 6 {
        assert!(
            Instant::now() < deadline,
            "the cluster stays below version 6"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let seed = std::env::var("DIFFERENTIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d1ff_u64);
    eprintln!("seed {seed} (DIFFERENTIAL_SEED to repeat)");
    let mut draw = Draw(seed);
    let mut recent: Vec<String> = Vec::new();
    for i in 0..COMMANDS {
        let words = draw.command();
        let expected = reply(&mut redis_server, &words);
        let got = reply(&mut ours, &words);
        recent.push(format!("{words:?} -> {expected}"));
        assert_eq!(
            got,
            expected,
            "command {i}, {words:?}: ours, then redis-server's; the commands before it:\n{}",
            recent[recent.len().saturating_sub(15)..].join("\n")
        );
    }

    // The same keys hold the same values.
    let keys = reply(&mut redis_server, &["KEYS", "*"]);
    assert_eq!(reply(&mut ours, &["KEYS", "*"]), keys);
    for key in ["a", "b", "c", "k1", "{x}y"] {
        assert_eq!(
            reply(&mut ours, &["GET", key]),
            reply(&mut redis_server, &["GET", key]),
            "{key}"
        );
    }
    eprintln!("{COMMANDS} commands, the same answers; keys at the end: {keys}");
}
