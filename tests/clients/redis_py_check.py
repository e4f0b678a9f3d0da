#!/usr/bin/env python3
"""Drives a Redis-protocol server with redis-py, as an application would: with
redis-py's DEFAULTS (in redis-py 8.x that means RESP3, so every connection opens
with `HELLO 3`).

    python3 tests/clients/redis_py_check.py --port 6380 --follower-port 6381

One line per check on stdout: `ok   ...` for a pass, `gap  ...` for something
this server is known not to do (printed, never hidden), and on the first failure
`FAIL ...` with what was expected and what came back; the exit code is then 1.
Every key starts with a fresh random prefix, so the script can be rerun against
the same server. `tests/redis_py.rs` runs it against a real 3-replica cluster;
run it against a real `redis-server` to check the script itself (with
`--follower-port` equal to `--port`).
"""

import argparse
import sys
import traceback
import uuid

try:
    import redis
except ImportError:
    print("FAIL import: redis-py is not installed (pip install redis)")
    sys.exit(2)


class CheckFailed(Exception):
    """A check saw something other than what it expected."""


def expect(what, got, wanted):
    if got != wanted:
        raise CheckFailed(f"{what}: expected {wanted!r}, got {got!r}")


def expect_true(what, condition, detail):
    if not condition:
        raise CheckFailed(f"{what}: {detail}")


def text(value):
    return value.decode() if isinstance(value, bytes) else value


GAPS = []


def gap(message):
    """Something the server is known not to do: printed, counted, never hidden."""
    GAPS.append(message)
    print(f"gap  {message}", flush=True)


def run(name, check):
    """Runs one check; on failure prints why and stops the script."""
    try:
        detail = check()
    except CheckFailed as failure:
        print(f"FAIL {name}: {failure}", flush=True)
        sys.exit(1)
    except Exception as error:  # anything redis-py raised is a failure too
        print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(file=sys.stderr)
        sys.exit(1)
    print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)


class Checks:
    def __init__(self, host, port, follower_port):
        self.host = host
        self.port = port
        self.follower_port = follower_port
        self.prefix = f"rp:{uuid.uuid4().hex[:10]}:"

    def key(self, name):
        return self.prefix + name

    def client(self, port, **options):
        # Exactly what an application writes: only where the server is (and,
        # for the SELECT check, db=). Everything else is redis-py's default.
        return redis.Redis(host=self.host, port=port, **options)

    # -- connection ---------------------------------------------------------

    def connect_and_ping(self, r):
        expect("ping()", r.ping(), True)
        pool = r.connection_pool
        connection = pool.get_connection()
        try:
            protocol = connection.protocol
            hello = connection.handshake_metadata or {}
        finally:
            pool.release(connection)
        if protocol in (3, "3"):
            proto = hello.get(b"proto", hello.get("proto"))
            expect("HELLO 3 answer's proto field", proto, 3)
            server = text(hello.get(b"server", hello.get("server")))
            return f"RESP{protocol} (HELLO 3 answered proto=3, server={server})"
        return f"RESP{protocol} (no HELLO sent)"

    def client_name_roundtrip(self, r):
        name = "redis-py-check-" + self.prefix.split(":")[1]
        expect("client_setname()", r.client_setname(name), True)
        expect("client_getname()", text(r.client_getname()), name)

    # -- strings, expiry, counters -----------------------------------------

    def set_with_expiry(self, r):
        k = self.key("k")
        expect("set(k, 'v', ex=60)", r.set(k, "v", ex=60), True)
        ttl = r.ttl(k)
        expect_true("ttl(k) after ex=60", 1 <= ttl <= 60, f"expected 1..60, got {ttl!r}")
        expect("get(k)", r.get(k), b"v")
        expect("expire(k, 120)", r.expire(k, 120), True)
        ttl = r.ttl(k)
        expect_true("ttl(k) after expire(k, 120)", 60 < ttl <= 120,
                    f"expected 61..120, got {ttl!r}")
        expect("ttl(missing key)", r.ttl(self.key("missing")), -2)
        return f"ttl={ttl}"

    def counters(self, r):
        c = self.key("counter")
        expect("incr(counter) on a missing key", r.incr(c), 1)
        expect("incrby(counter, 5)", r.incrby(c, 5), 6)
        expect("decr(counter)", r.decr(c), 5)
        expect("get(counter)", r.get(c), b"5")

    def set_nx(self, r):
        k = self.key("nx")
        expect("set(nx=True) on a missing key", r.set(k, "first", nx=True), True)
        second = r.set(k, "second", nx=True)
        expect_true("set(nx=True) on an existing key", not second,
                    f"expected None (falsy), got {second!r}")
        expect("get after the refused set", r.get(k), b"first")
        return f"second set returned {second!r}"

    # -- transactions -------------------------------------------------------

    def transaction_pipeline(self, r):
        a = self.key("a")
        p = r.pipeline()  # transactional by default: MULTI ... EXEC
        p.set(a, "1")
        p.incr(a)
        p.get(a)
        expect("pipeline().execute()", p.execute(), [True, 2, b"2"])

    def watch_with_interference(self, r, other, name="w", where=""):
        """WATCH through `r`, a write through `other`: EXEC must be refused."""
        w = self.key(name)
        r.set(w, "start")
        with r.pipeline() as p:
            p.watch(w)
            expect(f"get(w) while watching{where}", p.get(w), b"start")
            other.set(w, "theirs")
            p.multi()
            p.set(w, "mine")
            try:
                result = p.execute()
            except redis.WatchError:
                pass
            else:
                raise CheckFailed(
                    f"execute(){where} after another client changed the watched key: "
                    f"expected redis.WatchError, got {result!r}")
        expect(f"the watched key after the aborted transaction{where}", r.get(w), b"theirs")
        return "WatchError raised, the other client's value kept"

    def watch_without_interference(self, r):
        w = self.key("w-quiet")
        r.set(w, "start")
        with r.pipeline() as p:
            p.watch(w)
            expect("get(w) while watching", p.get(w), b"start")
            p.multi()
            p.set(w, "mine")
            expect("execute() with nobody else writing", p.execute(), [True])
        expect("the watched key after the transaction", r.get(w), b"mine")

    def error_while_queueing(self, r):
        before, after = self.key("q-before"), self.key("q-after")
        only = self.key("q-onlykey")
        p = r.pipeline()
        p.set(before, "1")
        p.execute_command("SET", only)  # wrong number of arguments
        p.set(after, "2")
        try:
            result = p.execute()
        except redis.ResponseError as error:
            raised = f"{type(error).__name__}: {error}"
        else:
            raise CheckFailed(
                f"execute() with a refused command: expected a ResponseError, got {result!r}")
        expect("keys of the refused transaction that exist (none may)",
               r.exists(before, only, after), 0)
        expect("ping() on the same client afterwards", r.ping(), True)
        return f"raised {raised}"

    # -- Lock ---------------------------------------------------------------

    def lock(self, r, name="lock"):
        """redis-py's Lock: acquire is SET NX PX; release, extend and reacquire
        are Lua scripts (EVALSHA, then SCRIPT LOAD on NOSCRIPT)."""
        name = self.key(name)
        lock = r.lock(name, timeout=5)
        # blocking_timeout only bounds the wait if acquiring never succeeds.
        expect("lock.acquire()", lock.acquire(blocking_timeout=5), True)
        expect("lock.locked() after acquire", lock.locked(), True)
        expect("lock.owned() after acquire", lock.owned(), True)
        ttl = r.ttl(name)
        expect_true("ttl(lock name) after acquire with timeout=5", 1 <= ttl <= 5,
                    f"expected 1..5, got {ttl!r}")
        rival = r.lock(name, timeout=5)
        expect("a second lock's acquire(blocking=False) while held",
               rival.acquire(blocking=False), False)
        expect("lock.extend(10)", lock.extend(10), True)
        pttl = r.pttl(name)
        expect_true("pttl(lock name) after extend(10)", 5000 < pttl <= 15000,
                    f"expected 5001..15000, got {pttl!r}")
        expect("lock.reacquire()", lock.reacquire(), True)
        pttl = r.pttl(name)
        expect_true("pttl(lock name) after reacquire()", 0 < pttl <= 5000,
                    f"expected 1..5000, got {pttl!r}")
        # A rival holding another token may neither release nor extend it
        # (release forgets the rival's token before it asks, so set it again).
        for what, attempt in (("release()", rival.release),
                              ("extend(1)", lambda: rival.extend(1))):
            rival.local.token = b"not-the-owner"
            try:
                attempt()
            except redis.exceptions.LockNotOwnedError:
                pass
            else:
                raise CheckFailed(f"a rival's {what}: expected LockNotOwnedError")
        expect("lock.owned() after the rival's attempts", lock.owned(), True)
        lock.release()
        expect("lock.locked() after release", lock.locked(), False)
        expect("rival.acquire(blocking=False) after release",
               rival.acquire(blocking=False), True)
        rival.release()
        return "acquired, extended, reacquired, a rival's release and extend refused, released"

    # -- keyspace -----------------------------------------------------------

    def scan(self, r):
        wanted = {self.key(f"scan:{i}").encode() for i in range(250)}
        expect("mset of 250 keys", r.mset({k: "x" for k in wanted}), True)
        seen = list(r.scan_iter(match=self.key("scan:*"), count=50))
        missing = wanted - set(seen)
        extra = set(seen) - wanted
        expect_true("scan_iter(match=prefix:*, count=50)", not missing and not extra,
                    f"{len(missing)} of the 250 keys never returned "
                    f"(e.g. {sorted(missing)[:3]}), {len(extra)} keys returned that "
                    f"do not match (e.g. {sorted(extra)[:3]})")
        keys = set(r.keys(self.key("scan:*")))
        expect_true("keys(prefix:*)", keys == wanted,
                    f"expected the 250 keys, got {len(keys)} "
                    f"(missing {len(wanted - keys)}, extra {len(keys - wanted)})")
        return f"{len(seen)} keys returned, {len(seen) - len(set(seen))} twice"

    def select(self, r):
        in0, in1 = self.key("db0-only"), self.key("db1-only")
        r.set(in0, "zero")
        r1 = self.client(self.port, db=1)
        expect("get in db=1 of a key set in db 0", r1.get(in0), None)
        expect("set in db=1", r1.set(in1, "one"), True)
        expect("get in db=1 of its own key", r1.get(in1), b"one")
        expect("get in db 0 of a key set in db 1", r.get(in1), None)
        expect("get in db 0 of its own key", r.get(in0), b"zero")
        r1.delete(in1)
        r1.close()

    # -- through a follower ---------------------------------------------------

    def follower_basics(self, f, leader):
        expect("ping() at the follower", f.ping(), True)
        k = self.key("via-follower")
        expect("set(k, ex=60) at the follower", f.set(k, "v", ex=60), True)
        expect("get(k) at the leader", leader.get(k), b"v")
        expect("get(k) at the follower", f.get(k), b"v")
        ttl = f.ttl(k)
        expect_true("ttl(k) at the follower", 1 <= ttl <= 60, f"expected 1..60, got {ttl!r}")
        expect("get at the follower of a key written at the leader",
               f.get(self.key("k")), b"v")
        c = self.key("follower-counter")
        expect("incr at the follower", f.incr(c), 1)
        expect("incrby at the follower", f.incrby(c, 5), 6)
        nx = self.key("follower-nx")
        expect("set(nx=True) at the follower", f.set(nx, "1", nx=True), True)
        expect_true("set(nx=True) again at the follower", not f.set(nx, "2", nx=True),
                    "expected None (falsy)")
        p = f.pipeline()
        a = self.key("follower-a")
        p.set(a, "1")
        p.incr(a)
        p.get(a)
        expect("transaction pipeline at the follower", p.execute(), [True, 2, b"2"])

    def follower_watch(self, f, leader):
        self.watch_with_interference(f, leader, "follower-w", " at the follower")

    def cleanup(self, r):
        keys = list(r.scan_iter(match=self.prefix + "*", count=500))
        if keys:
            r.delete(*keys)
        return f"{len(keys)} keys deleted"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True,
                        help="client port of the replica to test (the leader)")
    parser.add_argument("--follower-port", type=int, required=True,
                        help="client port of another replica, to test forwarding")
    args = parser.parse_args()

    checks = Checks(args.host, args.port, args.follower_port)
    print(f"redis-py {redis.__version__}, {args.host} port {args.port}, "
          f"follower port {args.follower_port}, key prefix {checks.prefix}", flush=True)

    r = checks.client(args.port)
    other = checks.client(args.port)
    run("connect with redis-py's defaults and ping", lambda: checks.connect_and_ping(r))
    run("client_setname / client_getname", lambda: checks.client_name_roundtrip(r))
    run("set ex=60, ttl, get, expire", lambda: checks.set_with_expiry(r))
    run("incr, incrby, decr", lambda: checks.counters(r))
    run("set nx=True: True, then falsy for an existing key", lambda: checks.set_nx(r))
    run("transaction pipeline: set, incr, get", lambda: checks.transaction_pipeline(r))
    run("watch: another client's write aborts the transaction",
        lambda: checks.watch_with_interference(r, other))
    run("watch: without interference the transaction runs",
        lambda: checks.watch_without_interference(r))
    run("an error while queueing applies nothing", lambda: checks.error_while_queueing(r))
    run("lock: acquire, extend, reacquire, a rival refused, release", lambda: checks.lock(r))
    run("scan_iter and keys return exactly the 250 keys", lambda: checks.scan(r))
    run("select: db=1 and db 0 do not see each other's keys", lambda: checks.select(r))

    f = checks.client(args.follower_port)
    run("follower: connect with redis-py's defaults and ping",
        lambda: checks.connect_and_ping(f))
    run("follower: set, get, ttl, incr, set nx, transaction pipeline",
        lambda: checks.follower_basics(f, r))
    run("follower: a write at the leader aborts a watch at the follower",
        lambda: checks.follower_watch(f, r))
    run("follower: lock (its own script cache, so NOSCRIPT, then SCRIPT LOAD)",
        lambda: checks.lock(f, "follower-lock"))
    run("cleanup", lambda: checks.cleanup(r))
    if GAPS:
        print(f"all checks passed, with {len(GAPS)} gap(s) (the gap lines above)", flush=True)
    else:
        print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
