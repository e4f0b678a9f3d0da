#!/usr/bin/env bash
# Redis's own Tcl test suite, in external-server mode, against a fresh
# three-replica example-ondisk cluster and against Debian's redis-server, with
# the same flags; prints one table of passed / failed / skipped per unit.
#
#   scripts/redis-suite.sh                       the five units below; builds with cargo
#   scripts/redis-suite.sh --units "unit/type/incr unit/multi"
#   scripts/redis-suite.sh --binary PATH         use that example-ondisk binary, no build
#   scripts/redis-suite.sh --redis-only          only redis-server (no build, no cluster)
#   scripts/redis-suite.sh --failures FILE       where the cluster's failing tests go
#   scripts/redis-suite.sh --unit-timeout SECS   wall-clock limit of one unit (default 120)
#   scripts/redis-suite.sh --skip-test NAME      skip tests of that name on both servers (repeatable)
#
# Default units: unit/type/string unit/type/incr unit/expire unit/keyspace
# unit/multi. The suite is the `tests/` folder of Debian's `redis` source
# package of the installed redis-server's version, fetched once with
# `apt-get source` (deb-src lines derived from this machine's Debian deb lines,
# in a private apt folder: /etc/apt is not touched) into
# ${XDG_CACHE_HOME:-~/.cache}/example-ondisk/redis-src. Each unit gets a fresh
# cluster (the suite is pointed at replica 1's client port, leader or follower)
# and a fresh redis-server. Installs redis-server, redis-tools, tcl and (for
# the fetch) dpkg-dev if missing. Failing tests of the cluster, each with its
# reason, go to FILE (default ~/.cache/example-ondisk/redis-suite-failures.txt).
# KEEP_WORK=1 keeps the raw suite logs and the replicas' logs.
set -euo pipefail
caller_dir="$PWD"
cd "$(dirname "$0")/.."

units="unit/type/string unit/type/incr unit/expire unit/keyspace unit/multi"
binary=""
redis_only=""
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/example-ondisk"
failures="$cache_root/redis-suite-failures.txt"
unit_limit=120
skip_tests=()
while [ $# -gt 0 ]; do
  case "$1" in
    --units) units="${2:?--units needs a list such as \"unit/type/incr unit/multi\"}"; shift ;;
    --binary) binary="${2:?--binary needs a path}"; shift ;;
    --redis-only) redis_only=yes ;;
    --failures) failures="${2:?--failures needs a file}"; shift ;;
    --unit-timeout) unit_limit="${2:?--unit-timeout needs seconds}"; shift ;;
    --skip-test) skip_tests+=(--skiptest "${2:?--skip-test needs a test name}"); shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$unit_limit" in ''|*[!0-9]*|0) echo "error: --unit-timeout must be a whole number of seconds" >&2; exit 2 ;; esac
# Paths given relative to where the script was started from.
case "$binary" in ''|/*) ;; *) binary="$caller_dir/$binary" ;; esac
case "$failures" in /*) ;; *) failures="$caller_dir/$failures" ;; esac
if [ -n "$binary" ]; then
  [ -x "$binary" ] || { echo "error: --binary $binary is not an executable file" >&2; exit 2; }
  binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
fi
failures_dir="$(dirname "$failures")"
mkdir -p "$failures_dir"
failures="$(cd "$failures_dir" && pwd)/$(basename "$failures")"

# common.sh builds the release binary with cargo when sourced, unless it is
# given one; with --redis-only nothing needs building, so this function
# stands in for cargo.
[ -z "$binary" ] || export EXAMPLE_ONDISK_BINARY="$binary"
if [ -n "$redis_only" ]; then
  cargo() { :; }
fi
# shellcheck source=scripts/common.sh
. scripts/common.sh
need_packages "redis-server redis-tools" redis-server redis-cli
need_packages tcl tclsh
started=$SECONDS

# --- the suite: Debian's source of the installed redis-server's version ----
src_package=$(dpkg-query -W -f='${source:Package}' redis-server)
src_version=$(dpkg-query -W -f='${source:Version}' redis-server)
src_cache="$cache_root/redis-src"
find_suite() { # version: the cached tests/ folder of that version, if any
  local dir
  for dir in "$src_cache/${1#*:}"/*/tests; do
    if [ -f "$dir/test_helper.tcl" ]; then echo "$dir"; break; fi
  done
}
suite_src=$(find_suite "$src_version")
if [ -z "$suite_src" ]; then
  need_packages dpkg-dev dpkg-source
  echo "fetching the Tcl test suite: apt-get source $src_package=$src_version..."
  apt_dir="$work/apt"
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  # deb-src twins of this machine's enabled Debian deb entries (same URIs, suites, keys).
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
      /(^|\n)Types:[^\n]*[ \t]deb([ \t]|\n|$)/ && /(^|\n)URIs:[^\n]*debian/ && !/(^|\n)Enabled:[ \t]*no/ {
        sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print
      }' "$file"
  done > "$apt_dir/sources.list.d/debian-src.sources"
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    { grep -E '^[[:space:]]*deb[[:space:]].*debian' "$file" || true; } | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /'
  done > "$apt_dir/sources.list.d/debian-src.list"
  if [ ! -s "$apt_dir/sources.list.d/debian-src.sources" ] && [ ! -s "$apt_dir/sources.list.d/debian-src.list" ]; then
    echo "error: no enabled Debian 'deb' entry in /etc/apt to derive a deb-src entry from" >&2
    exit 1
  fi
  # A private apt state: its own source list, package lists and cache, so the
  # machine's lists and /etc/apt stay as they are.
  apt_opts=(-q -o "Dir::Etc::SourceList=$apt_dir/none.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
  [ "$(id -u)" -ne 0 ] || apt_opts+=(-o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update > "$work/apt.log" 2>&1 ||
    { echo "error: apt-get update (deb-src) failed:" >&2; tail -n 5 "$work/apt.log" >&2; exit 1; }
  fetch_dir="$work/fetch"
  mkdir -p "$fetch_dir" "$src_cache"
  if ! (cd "$fetch_dir" && apt-get "${apt_opts[@]}" source "$src_package=$src_version") >> "$work/apt.log" 2>&1; then
    echo "warning: $src_package $src_version is not in the deb-src index; fetching its newest source" >&2
    rm -rf "${fetch_dir:?}"/*
    (cd "$fetch_dir" && apt-get "${apt_opts[@]}" source "$src_package") >> "$work/apt.log" 2>&1 ||
      { echo "error: apt-get source $src_package failed:" >&2; tail -n 5 "$work/apt.log" >&2; exit 1; }
  fi
  fetched_version=$(sed -n 's/^Version: //p' "$fetch_dir"/*.dsc | head -n 1)
  # Only the suite is kept: tests/ of the unpacked source (2.8 MB of its 23 MB).
  rm -f "$fetch_dir"/*.dsc "$fetch_dir"/*.tar.*
  find "$fetch_dir" -mindepth 2 -maxdepth 2 ! -name tests -exec rm -rf {} +
  rm -rf "${src_cache:?}/${fetched_version#*:}"
  mv "$fetch_dir" "$src_cache/${fetched_version#*:}"
  suite_src=$(find_suite "$fetched_version")
  [ -n "$suite_src" ] || { echo "error: no tests/ folder in the fetched $src_package source" >&2; exit 1; }
fi
suite_version=$(basename "$(dirname "$suite_src")")
[ -f "$suite_src/test_helper.tcl" ] || { echo "error: $suite_src/test_helper.tcl is missing" >&2; exit 1; }
# A copy per run: the suite writes under tests/tmp, and the cache stays clean.
mkdir -p "$work/suite"
cp -r "$suite_src" "$work/suite/tests"
checked_units=""
for unit in $units; do
  unit="${unit%.tcl}"
  [ -f "$work/suite/tests/$unit.tcl" ] || [ ! -f "$work/suite/tests/unit/$unit.tcl" ] || unit="unit/$unit"
  [ -f "$work/suite/tests/$unit.tcl" ] ||
    { echo "error: no unit '$unit' in $suite_version (see $suite_src/test_helper.tcl, all_tests)" >&2; exit 2; }
  checked_units="$checked_units $unit"
done
units="${checked_units# }"
[ -n "$units" ] || { echo "error: --units is empty" >&2; exit 2; }

# Same flags for both servers. External mode skips external:skip tests (and
# starts one test client); --singledb skips singledb:skip tests and never
# SELECTs; every needs:* capability tag of this suite version is denied (SYNC,
# DEBUG, PFDEBUG, CONFIG SET maxmemory, CONFIG RESETSTAT, RESET, SAVE, ...);
# --ignore-encoding and --ignore-digest drop OBJECT ENCODING and DEBUG DIGEST
# checks; --durable makes an error reply inside a test fail that test instead
# of killing the whole unit; --timeout ends a unit that makes no progress.
deny_tags=$(grep -rhoE 'needs:[a-z-]+' "$work/suite/tests/unit" "$work/suite/tests/integration" | sort -u | sed 's/^/-/' | paste -sd ' ')
progress_limit=$((unit_limit / 2))
suite_flags=(--singledb --ignore-encoding --ignore-digest --durable --timeout "$progress_limit" --tags "$deny_tags" "${skip_tests[@]}")
flags_text="${suite_flags[*]:0:6} --tags \"$deny_tags\""
for ((i = 1; i < ${#skip_tests[@]}; i += 2)); do flags_text="$flags_text --skiptest \"${skip_tests[i]}\""; done

# --- running and reading one unit --------------------------------------------
slug() { echo "${1//\//-}"; }

# Runs unit $3 against port $2; output in $work/$1-<unit>.log. Sets r_passed,
# r_failed, r_skipped, r_end (done, aborted, timeout, killed or ended),
# r_detail, r_seconds; failing tests as "name<TAB>reason" in the log's .failed.
run_unit() {
  local label="$1" port="$2" unit="$3" log pid status=0 start=$SECONDS blocks
  log="$work/$label-$(slug "$unit").log"
  # timeout runs the suite (its server and client tclsh) in a process group of
  # its own and ends the whole group; in the background so Ctrl-C reaches us.
  (cd "$work/suite" && exec env TERM=dumb timeout -k 5 "$unit_limit" tclsh tests/test_helper.tcl \
    --host 127.0.0.1 --port "$port" "${suite_flags[@]}" --single "$unit") > "$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  r_seconds=$((SECONDS - start))
  {
    read -r r_passed r_failed r_skipped blocks r_end
    read -r r_detail
  } < <(awk -v failed_file="$log.failed" '
    function clip(s) { sub(/ \(context: .*$/, "", s); return length(s) > 300 ? substr(s, 1, 300) "..." : s }
    function suffix_of(short, long) { return long != "" && substr(long, length(long) - length(short) + 1) == short }
    # An [err] record: line 1 "NAME in tests/FILE.tcl", line 2 the message
    # (an error reply loses its first 10 characters there), line 3 the first
    # line of errorInfo. An [err] not naming a test is --durable reporting the
    # error that stopped the rest of a start_server block.
    function end_err() {
      if (err_head == "") return
      if (err_head ~ / in tests\/.*\.tcl$/) {
        sub(/ in tests\/.*\.tcl$/, "", err_head)
        failed++
        print err_head "\t" clip(suffix_of(err_msg, err_next) ? err_next : err_msg) > failed_file
      } else {
        blocks++
        print "(the rest of a start_server block)\t" clip(suffix_of(err_head, err_msg) ? err_msg : err_head) > failed_file
      }
      err_head = ""
    }
    /^\[(ok|err|skip|ignore|exception|TIMEOUT)\]: / || /^\[[0-9]+\/[0-9]+ done\]: / || /^Testing / || /^ +The End$/ {
      end_err(); line = 0; in_timeout = 0
    }
    { line++ }
    /^\[ok\]: / { passed++; next }
    /^\[(skip|ignore)\]: / { skipped++; next }
    /^\[err\]: / { err_head = substr($0, 8); err_msg = ""; err_next = ""; next }
    err_head != "" && line == 2 { err_msg = $0; next }
    err_head != "" && line == 3 { err_next = $0; next }
    /^\[exception\]: / { end = "aborted"; m = $0; sub(/^\[exception\]: (Executing test client: )?/, "", m); sub(/\.$/, "", m); detail = m; next }
    /^\[TIMEOUT\]: / { end = "timeout"; in_timeout = 1; next }
    in_timeout && /=> \(IN PROGRESS\) / {
      m = $0; sub(/.*=> \(IN PROGRESS\) /, "", m)
      failed++; print m "\t(no result within --timeout: the suite gave up on the unit here)" > failed_file
      detail = "no progress for a while during \"" m "\" (counted as failed)"
    }
    /^\[[0-9]+\/[0-9]+ done\]: / && end == "" { end = "done" }
    END {
      end_err()
      printf "%d %d %d %d %s\n%s\n", passed, failed, skipped, blocks, (end == "" ? "-" : end), detail
    }' "$log"; touch "$log.failed")
  if [ "$r_end" = "-" ]; then
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
      r_end=killed; r_detail="still running after $unit_limit s, stopped"
    else
      r_end=ended; r_detail="the suite exited ($status) before the unit ended: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-200)"
    fi
  fi
  if [ "$r_end" = aborted ] && [ $((r_passed + r_failed + r_skipped)) -eq 0 ]; then
    r_detail="before its first test: $r_detail"
  fi
  if [ "$blocks" -gt 0 ]; then
    r_detail="${r_detail:+$r_detail; }$blocks start_server block(s) stopped early by an error (see the failures)"
  fi
}

# Starts a redis-server in folder $1; sets redis_port and redis_pid. A port
# that was free a moment ago can be taken by then: up to 3 tries.
start_redis() {
  local dir="$1" attempt deadline
  mkdir -p "$dir"
  for attempt in 1 2 3; do
    read -r redis_port < <(free_ports 1)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
      --daemonize no > "$dir/out.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    deadline=$((SECONDS + 30))
    while kill -0 "$redis_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      if [ "$(redis-cli -p "$redis_port" PING 2>/dev/null)" = PONG ]; then return 0; fi
      sleep 0.1
    done
    echo "warning: redis-server did not start on port $redis_port (try $attempt): $(tail -n 1 "$dir/out.log")" >&2
    stop "$redis_pid"
  done
  echo "error: redis-server did not start in 3 tries" >&2
  exit 1
}

describe() { # label: one progress line for the last run_unit
  local text="$r_passed passed, $r_failed failed, $r_skipped skipped"
  [ "$r_end" = "done" ] || text="$text; $r_end: $r_detail"
  printf '  %s: %s (%s s)\n' "$1" "$text" "$r_seconds"
}

declare -A result
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
echo "suite: $suite_version (Debian source $src_package $src_version), tclsh $(echo 'puts [info patchlevel]' | tclsh)"
echo "flags: --host 127.0.0.1 --port PORT $flags_text --single UNIT"
echo "limits: $unit_limit s per unit (killed after), $progress_limit s without progress (suite's --timeout)"
[ -n "$redis_only" ] || echo "example-ondisk: $bin"
echo "redis-server: $redis_version (Debian $(dpkg-query -W -f='${Version}' redis-server)), no persistence"
echo

roles=()
for unit in $units; do
  echo "$unit"
  dir="$work/redis-$(slug "$unit")"
  start_redis "$dir"
  run_unit redis "$redis_port" "$unit"
  stop "$redis_pid"
  pids=()
  for key in passed failed skipped end detail seconds; do
    var="r_$key"; result[redis:$unit:$key]="${!var}"
  done
  describe redis-server

  [ -z "$redis_only" ] || continue
  dir="$work/ours-$(slug "$unit")"
  start_cluster "$dir"
  if [ "$leader" = 1 ]; then roles+=(leader); else roles+=(follower); fi
  run_unit ours "${client_ports[0]}" "$unit"
  if [ "$r_end" = killed ]; then
    # The suite does not print the test it is in; redis-server's order tells.
    next_test=$(grep -E '^\[(ok|err|skip|ignore)\]: ' "$work/redis-$(slug "$unit").log" |
      sed -n "$((r_passed + r_failed + r_skipped + 1))p" | sed -E 's/^\[[a-z]+\]: //; s/ \([0-9]+ ms\)$//')
    [ -z "$next_test" ] || r_detail="$r_detail, probably in \"$next_test\" (the next test in redis-server's run)"
  fi
  exited=""
  for id in 1 2 3; do
    kill -0 "${replica_pids[$((id - 1))]}" 2>/dev/null || exited="$exited $id"
  done
  [ -z "$exited" ] || r_detail="${r_detail:+$r_detail; }replica(s)$exited exited during the unit"
  stop "${replica_pids[@]}"
  pids=()
  for key in passed failed skipped end detail seconds; do
    var="r_$key"; result[ours:$unit:$key]="${!var}"
  done
  cp "$work/ours-$(slug "$unit").log.failed" "$work/failed-$(slug "$unit")"
  describe "example-ondisk (replica 1, ${roles[-1]})"
done

# --- the table ----------------------------------------------------------------
ratio() { if [ "$2" -gt 0 ]; then echo "$(($1 * 100 / $2))%"; else echo "n/a"; fi; }
echo
if [ -n "$redis_only" ]; then
  echo "| unit | passed | failed | skipped |"
  echo "| --- | ---: | ---: | ---: |"
else
  echo "| unit | passed | failed | skipped | not run | redis passed | redis failed | redis skipped | passed, ours / redis |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
fi
declare -A total=()
for unit in $units; do
  rp=${result[redis:$unit:passed]} rf=${result[redis:$unit:failed]} rs=${result[redis:$unit:skipped]}
  total[rp]=$((${total[rp]:-0} + rp)); total[rf]=$((${total[rf]:-0} + rf)); total[rs]=$((${total[rs]:-0} + rs))
  if [ -n "$redis_only" ]; then
    echo "| $unit | $rp | $rf | $rs |"
    continue
  fi
  op=${result[ours:$unit:passed]} of=${result[ours:$unit:failed]} os=${result[ours:$unit:skipped]}
  # Tests redis-server reported that ours did not (a unit cut short).
  nr=$((rp + rf + rs - op - of - os)); [ "$nr" -ge 0 ] || nr=0
  total[op]=$((${total[op]:-0} + op)); total[of]=$((${total[of]:-0} + of))
  total[os]=$((${total[os]:-0} + os)); total[nr]=$((${total[nr]:-0} + nr))
  result[ours:$unit:notrun]=$nr
  echo "| $unit | $op | $of | $os | $nr | $rp | $rf | $rs | $(ratio "$op" "$rp") |"
done
if [ -n "$redis_only" ]; then
  echo "| total | ${total[rp]} | ${total[rf]} | ${total[rs]} |"
else
  echo "| total | ${total[op]} | ${total[of]} | ${total[os]} | ${total[nr]} | ${total[rp]} | ${total[rf]} | ${total[rs]} | $(ratio "${total[op]}" "${total[rp]}") |"
fi
echo
echo "skipped: tests the flags exclude (tags, external, singledb); a skipped tags block counts once."
[ -n "$redis_only" ] || {
  leader_units=$(printf '%s\n' "${roles[@]}" | grep -c '^leader$' || true)
  echo "example-ondisk: a fresh 3-replica cluster per unit, the suite at replica 1's client port; replica 1 was the leader at the start of $leader_units of ${#roles[@]} units, a follower in the others."
  echo "not run: tests redis-server reported that example-ondisk did not: its unit, or a start_server block in it, stopped early."
}
for unit in $units; do
  for label in redis ours; do
    [ -n "${result[$label:$unit:end]:-}" ] || continue
    name=example-ondisk; [ "$label" = ours ] || name=redis-server
    if [ "${result[$label:$unit:end]}" != "done" ]; then
      echo "note: $unit on $name: ${result[$label:$unit:end]}: ${result[$label:$unit:detail]}"
    elif [ -n "${result[$label:$unit:detail]}" ]; then
      echo "note: $unit on $name: ${result[$label:$unit:detail]}"
    fi
  done
  if [ "${result[redis:$unit:failed]}" -gt 0 ]; then
    echo "note: redis-server itself failed $unit tests: $(cut -f1 "$work/redis-$(slug "$unit").log.failed" | paste -sd ';' | cut -c1-300)"
  fi
done

if [ -z "$redis_only" ]; then
  {
    echo "# Redis test suite ($suite_version) against example-ondisk, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# binary: $bin"
    echo "# flags: $flags_text"
    echo "# per unit: counts, how the unit ended, then one line per failing test: name<TAB>reason"
    for unit in $units; do
      echo
      echo "## $unit: ${result[ours:$unit:passed]} passed, ${result[ours:$unit:failed]} failed, ${result[ours:$unit:skipped]} skipped, ${result[ours:$unit:notrun]} not run (redis-server: ${result[redis:$unit:passed]} passed)"
      if [ "${result[ours:$unit:end]}" != "done" ]; then
        echo "## ended early, ${result[ours:$unit:end]}: ${result[ours:$unit:detail]}"
      elif [ -n "${result[ours:$unit:detail]}" ]; then
        echo "## note: ${result[ours:$unit:detail]}"
      fi
      cat "$work/failed-$(slug "$unit")"
    done
  } > "$failures"
  echo
  echo "failing tests of example-ondisk, with reasons: $failures"
fi
echo "whole run: $((SECONDS - started)) s"
