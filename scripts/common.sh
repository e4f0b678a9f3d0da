# Shared by the benchmark scripts (sourced, not run): Debian packages, a
# release build, a temporary work folder cleaned up at exit with every
# process started (kept, with the replicas' logs, if KEEP_WORK is set), free
# loopback ports, and waiting for a port to answer.

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
