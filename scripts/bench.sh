#!/usr/bin/env bash
# Client-port throughput and latency of a fresh three-replica cluster, beside a
# single fsync-always Redis server and the raw fsync rate of this disk.
#
#   scripts/bench.sh                the loads of issue 3 (-n 200000; 20000 for one client),
#                                   200 clients, p99 latencies, and CPU seconds per
#                                   100,000 SETs and GETs (all processes of each side)
#   scripts/bench.sh --quick        a smoke run with smaller -n
#   scripts/bench.sh --binary PATH  measure that build instead of building this tree
#
# Everything runs on this machine over loopback: the three replicas, the Redis
# server and redis-benchmark share its cores and its one disk. Installs
# redis-server and redis-tools from Debian's packages if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=200000
single_client_requests=20000
load_limit=600 # seconds for one redis-benchmark run
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) requests=20000; single_client_requests=2000 ;;
    --binary)
      export EXAMPLE_ONDISK_BINARY="${2:?--binary needs a path}"
      case "$EXAMPLE_ONDISK_BINARY" in /*) ;; *) EXAMPLE_ONDISK_BINARY="$PWD/$EXAMPLE_ONDISK_BINARY" ;; esac
      shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=scripts/common.sh
. scripts/common.sh
need_packages "redis-server redis-tools" redis-server redis-cli redis-benchmark
read -r redis_port < <(free_ports 1)
ticks_per_second=$(getconf CLK_TCK)

# CPU time (user + system) used so far by the processes in server_pids, in
# clock ticks, from /proc/PID/stat (fields 14 and 15).
server_pids=()
cpu_ticks() {
  local pid total=0 fields
  for pid in "${server_pids[@]}"; do
    # The command name (field 2) may hold spaces: read after its ')'.
    fields=$(sed 's/^.*) //' "/proc/$pid/stat")
    total=$((total + $(echo "$fields" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}

# One redis-benchmark run against port $1 (the rest are its options, -t set,get
# unless given), in the foreground so Ctrl-C reaches it, and bounded in time: it
# never returns if its server goes away. Writes "TEST rps p50 p99" lines for SET
# and GET to $work/load, and the CPU ticks the servers used to $work/cpu; on an
# error reply or a time-out says what redis-benchmark said, and stops.
load() {
  local port="$1" status=0 tests="-t set,get" before; shift
  case " $* " in *" -t "*) tests="" ;; esac
  before=$(cpu_ticks)
  # shellcheck disable=SC2086 # $tests is two words or none
  timeout --foreground "$load_limit" redis-benchmark -p "$port" $tests -r 100000 -d 100 \
    --csv "$@" > "$work/load.csv" 2> "$work/load.err" || status=$?
  echo $(($(cpu_ticks) - before)) > "$work/cpu"
  # Columns by name: redis-benchmark 7 has latencies, 6 has none.
  tr -d '"\r' < "$work/load.csv" | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $1 == "SET" || $1 == "GET" {
      print $1, $col["rps"], (col["p50_latency_ms"] ? $col["p50_latency_ms"] : "n/a"),
        (col["p99_latency_ms"] ? $col["p99_latency_ms"] : "n/a")
    }
  ' > "$work/load"
  local expected=2
  [ -n "$tests" ] || expected=1
  if [ "$status" -ne 0 ] || [ "$(wc -l < "$work/load")" -ne "$expected" ]; then
    [ "$status" -ne 124 ] || echo "redis-benchmark did not finish within $load_limit s" >> "$work/load.err"
    echo "error: redis-benchmark -p $port $* failed (exit $status): $(tr '\r' '\n' < "$work/load.err" | grep -v '^[[:space:]]*$' | tail -n 3 | paste -sd '|')" >&2
    for log in "$work"/cluster/err* "$work"/cluster/data/replica-*/replica.log; do
      [ -s "$log" ] || continue
      echo "--- ${log#"$work"/}, last warnings:" >&2
      { grep -E ' (WARN|ERROR) |^error' "$log" || true; } | tail -n 3 | cut -c1-300 >&2
    done
    exit 1
  fi
}
# Runs the loads against a port; fills results[LABEL:case:TEST] with rates,
# latencies (cases c1p50, c1p99, c50p99) and CPU seconds per 100,000 requests
# (case cpu). SET and GET at 50 clients run apart, so each has its own CPU.
declare -A results
run_loads() {
  local label="$1" port="$2" test rps p50 p99
  load "$port" -c 1 -n "$single_client_requests"
  while read -r test rps p50 p99; do
    results[$label:c1:$test]=$rps; results[$label:c1p50:$test]=$p50; results[$label:c1p99:$test]=$p99
  done < "$work/load"
  for name in set get; do
    load "$port" -c 50 -n "$requests" -t "$name"
    read -r test rps p50 p99 < "$work/load"
    results[$label:c50:$test]=$rps; results[$label:c50p99:$test]=$p99
    results[$label:cpu:$test]=$(awk -v t="$(cat "$work/cpu")" -v hz="$ticks_per_second" -v n="$requests" \
      'BEGIN { printf "%.2f", t / hz / n * 100000 }')
  done
  load "$port" -c 200 -n "$requests"
  while read -r test rps p50 p99; do results[$label:c200:$test]=$rps; done < "$work/load"
  load "$port" -c 50 -P 16 -n "$requests"
  while read -r test rps p50 p99; do results[$label:p16:$test]=$rps; done < "$work/load"
  results[$label:c50:INCR]=$(load_one "$port" -c 50 -n "$requests" -t incr)
  results[$label:c50:SETNXEX]=$(load_one "$port" -c 50 -n "$requests" \
    SET 'lock:__rand_int__' token NX EX 60)
}

# One redis-benchmark run of a single test (-t NAME, or a command given in
# full); prints its requests per second.
load_one() {
  local port="$1" status=0; shift
  timeout --foreground "$load_limit" redis-benchmark -p "$port" -r 100000 -d 100 --csv "$@" \
    > "$work/one.csv" 2> "$work/one.err" || status=$?
  local rps
  rps=$(tr -d '"\r' < "$work/one.csv" | awk -F, '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    NF > 1 { print $col["rps"]; exit }')
  # A build without the command (an older one, in an A/B run) gets n/a.
  if [ "$status" -ne 0 ] || [ -z "$rps" ]; then
    echo "warning: redis-benchmark -p $port $* failed (exit $status): $(tail -n 3 "$work/one.err" | paste -sd '|')" >&2
    rps=n/a
  fi
  echo "$rps"
}

echo "measuring the disk: 100-byte appends, each followed by fdatasync, for 3 s..."
fsync_rate=$(python3 - "$work/fsync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
count, start = 0, time.monotonic()
while time.monotonic() - start < 3:
    os.write(fd, b"x" * 100)
    os.fdatasync(fd)
    count += 1
print(round(count / (time.monotonic() - start)))
EOF
)

echo "redis-server with appendonly yes, appendfsync always..."
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --appendonly yes --appendfsync always \
  --save '' --dir "$work/redis" --daemonize no > "$work/redis/out.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_for_port "$redis_port"
server_pids=("$redis_pid")
run_loads redis "$redis_port"
kill "$redis_pid"
wait "$redis_pid" || true

echo "example-ondisk, three replicas..."
start_cluster "$work/cluster"
server_pids=("${replica_pids[@]}")
follower=$((leader % 3 + 1))
leader_port=${client_ports[$((leader - 1))]}
follower_port=${client_ports[$((follower - 1))]}
run_loads ours "$leader_port"
load "$follower_port" -c 50 -n "$requests"
while read -r test rps p50 p99; do results[follower:c50:$test]=$rps; done < "$work/load"

rss=()
for id in 1 2 3; do
  hwm=$(sed -n 's/^VmHWM:\s*\([0-9]*\).*/\1/p' "/proc/${replica_pids[$((id - 1))]}/status" 2>/dev/null || true)
  [ -n "$hwm" ] || { echo "error: replica $id exited during the run:" >&2; tail -n 5 "$work/cluster/err$id" >&2; exit 1; }
  rss+=("$((hwm / 1024))")
done
leader_after=""
for id in 1 2 3; do
  if redis-cli -p "${client_ports[$((id - 1))]}" INFO raft 2>/dev/null | grep -q '^role:leader'; then
    leader_after=$id
  fi
done

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }
# A rate as a whole number with thousands separators: 12345.67 -> 12,346.
rate() {
  case "$1" in n/a) echo n/a ;; *) printf '%.0f/s' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;; esac
}
echo
echo "redis-benchmark -t set,get -r 100000 -d 100, -n $requests (-n $single_client_requests for one client)"
echo "example-ondisk: the leader (replica $leader) of three replicas; redis: one server, appendfsync always"
echo
row "load" "target" "example-ondisk" "redis-server"
row "---" "---" "---" "---"
row "1 client, SET p50" "< 1.5 ms" "${results[ours:c1p50:SET]} ms" "${results[redis:c1p50:SET]} ms"
row "1 client, SET p99" "" "${results[ours:c1p99:SET]} ms" "${results[redis:c1p99:SET]} ms"
row "1 client, SET" "" "$(rate "${results[ours:c1:SET]}")" "$(rate "${results[redis:c1:SET]}")"
row "1 client, GET" "" "$(rate "${results[ours:c1:GET]}")" "$(rate "${results[redis:c1:GET]}")"
row "1 client, GET p50" "" "${results[ours:c1p50:GET]} ms" "${results[redis:c1p50:GET]} ms"
row "50 clients, SET" ">= 20,000/s" "$(rate "${results[ours:c50:SET]}")" "$(rate "${results[redis:c50:SET]}")"
row "50 clients, SET p99" "" "${results[ours:c50p99:SET]} ms" "${results[redis:c50p99:SET]} ms"
row "50 clients, GET" ">= 50,000/s" "$(rate "${results[ours:c50:GET]}")" "$(rate "${results[redis:c50:GET]}")"
row "50 clients, GET p99" "" "${results[ours:c50p99:GET]} ms" "${results[redis:c50p99:GET]} ms"
row "CPU s per 100,000 SETs (50 clients)" "" "${results[ours:cpu:SET]} s (3 replicas)" "${results[redis:cpu:SET]} s"
row "CPU s per 100,000 GETs (50 clients)" "" "${results[ours:cpu:GET]} s (3 replicas)" "${results[redis:cpu:GET]} s"
row "200 clients, SET" "" "$(rate "${results[ours:c200:SET]}")" "$(rate "${results[redis:c200:SET]}")"
row "200 clients, GET" "" "$(rate "${results[ours:c200:GET]}")" "$(rate "${results[redis:c200:GET]}")"
row "50 clients, INCR" "" "$(rate "${results[ours:c50:INCR]}")" "$(rate "${results[redis:c50:INCR]}")"
row "50 clients, SET NX EX" "" "$(rate "${results[ours:c50:SETNXEX]}")" "$(rate "${results[redis:c50:SETNXEX]}")"
row "50 clients, pipeline 16, SET" ">= 60,000/s" "$(rate "${results[ours:p16:SET]}")" "$(rate "${results[redis:p16:SET]}")"
row "50 clients, pipeline 16, GET" "" "$(rate "${results[ours:p16:GET]}")" "$(rate "${results[redis:p16:GET]}")"
row "50 clients at a follower, SET" "" "$(rate "${results[follower:c50:SET]}")" ""
row "50 clients at a follower, GET" "" "$(rate "${results[follower:c50:GET]}")" ""
echo
echo "disk: $fsync_rate fdatasyncs/s of 100-byte appends"
echo "peak RSS (VmHWM), replicas 1 / 2 / 3: ${rss[0]} / ${rss[1]} / ${rss[2]} MiB (budget 200 MiB each)"
[ "$leader_after" = "$leader" ] ||
  echo "note: the leader changed during the run (replica $leader at the start, ${leader_after:-none} at the end)"
