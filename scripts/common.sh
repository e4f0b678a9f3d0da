# Shared by the benchmark scripts (sourced, not run): Debian packages, a
# release build, a temporary work folder cleaned up at exit with every
# process started (kept, with the replicas' logs, if KEEP_WORK is set), free
# loopback ports, waiting for a port to answer, stopping processes, and
# starting a three-replica cluster.

# Installs Debian packages that provide the given commands, if any is missing:
#   need_packages "redis-server redis-tools" redis-server redis-benchmark
need_packages() {
  local packages="$1" missing=""
  shift
  for command in "$@"; do command -v "$command" >/dev/null 2>&1 || missing=yes; done
  [ -z "$missing" ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # shellcheck disable=SC2086 # the package list is meant to split
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages >/dev/null; } ||
    { echo "error: cannot install $packages (apt-get)" >&2; exit 1; }
}

# EXAMPLE_ONDISK_BINARY=PATH runs that binary instead of building this tree
# (to compare two builds in one sitting, say).
if [ -n "${EXAMPLE_ONDISK_BINARY:-}" ]; then
  bin="$EXAMPLE_ONDISK_BINARY"
  [ -x "$bin" ] || { echo "error: $bin is not an executable file" >&2; exit 2; }
else
  cargo build --release --quiet
  bin="$PWD/target/release/example-ondisk"
fi
# Scripts that need no monitoring pass "${no_http[@]}" to each replica, so
# that they never meet another cluster on the default HTTP ports (empty for
# a build from before the HTTP port).
no_http=()
if "$bin" --help | grep -q -- --no-http; then no_http=(--no-http); fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work (KEEP_WORK is set)" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints N loopback ports that were free a moment ago.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}

# Waits up to 30 s until something answers PING on port $1.
wait_for_port() {
  local deadline=$((SECONDS + 30))
  until redis-cli -p "$1" PING >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "error: nothing answers on port $1" >&2; exit 1; }
    sleep 0.1
  done
}

# Stops the given processes: SIGTERM, then SIGKILL after 10 s.
stop() {
  local deadline=$((SECONDS + 10)) pid alive
  kill "$@" 2>/dev/null || true
  while :; do
    alive=""
    for pid in "$@"; do if kill -0 "$pid" 2>/dev/null; then alive=yes; fi; done
    if [ -z "$alive" ] || [ $SECONDS -ge $deadline ]; then break; fi
    sleep 0.1
  done
  [ -z "$alive" ] || kill -9 "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

# Starts three replicas with data in folder $1 and waits for a leader; sets
# client_ports, http_ports (empty for a build without the HTTP port),
# replica_pids and leader. Up to 3 tries, as for redis-server.
start_cluster() {
  local dir="$1" attempt deadline id p1 p2 p3 c1 c2 c3 h1 h2 h3 peers dead http
  for attempt in 1 2 3; do
    rm -rf "$dir"
    mkdir -p "$dir"
    read -r p1 p2 p3 c1 c2 c3 h1 h2 h3 < <(free_ports 9)
    peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
    client_ports=("$c1" "$c2" "$c3")
    http_ports=()
    # Older builds (an A/B run) have no HTTP port and refuse the flag.
    if "$bin" --help | grep -q -- --http-addr; then http_ports=("$h1" "$h2" "$h3"); fi
    replica_pids=()
    for id in 1 2 3; do
      http=()
      [ ${#http_ports[@]} -eq 0 ] || http=(--http-addr "127.0.0.1:${http_ports[$((id - 1))]}")
      "$bin" --replica-id "$id" --data-dir "$dir/data" --peers "$peers" \
        --client-addr "127.0.0.1:${client_ports[$((id - 1))]}" "${http[@]}" --no-prompt 2> "$dir/err$id" &
      pids+=($!); replica_pids+=($!)
    done
    leader=""
    dead=""
    deadline=$((SECONDS + 30))
    while [ -z "$leader" ] && [ -z "$dead" ] && [ $SECONDS -lt $deadline ]; do
      sleep 0.2
      for id in 1 2 3; do
        kill -0 "${replica_pids[$((id - 1))]}" 2>/dev/null || dead=$id
        if redis-cli -p "${client_ports[$((id - 1))]}" INFO raft 2>/dev/null | grep -q '^role:leader'; then
          leader=$id
        fi
      done
    done
    [ -n "$leader" ] && [ -z "$dead" ] && return 0
    if [ -n "$dead" ]; then
      echo "warning: replica $dead exited at start (try $attempt): $(grep -v '^[[:space:]]*$' "$dir/err$dead" | tail -n 1 | cut -c1-300)" >&2
    else
      echo "warning: no leader within 30 s (try $attempt)" >&2
    fi
    stop "${replica_pids[@]}"
  done
  echo "error: the cluster did not start in 3 tries; last replica logs:" >&2
  tail -n 5 "$dir"/err* >&2
  exit 1
}
