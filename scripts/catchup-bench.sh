#!/usr/bin/env bash
# How long a replica that missed KEYS writes takes to catch up by snapshot,
# and the peak memory (VmHWM) of each replica meanwhile.
#
#   scripts/catchup-bench.sh [KEYS]      (default 100000; values are 100 bytes)
#
# Replicas 1 and 2 form a quorum and take KEYS keys through replica 1's client
# port (MSETs of 100 pairs, pipelined with `redis-cli --pipe`). Replica 3 then
# starts with an empty folder and must catch up from the leader's snapshot.
# Needs redis-cli (Debian's redis-tools; installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-100000}"
case "$keys" in ''|*[!0-9]*) echo "error: KEYS must be a number, not '$keys'" >&2; exit 2 ;; esac

# shellcheck source=scripts/common.sh
. scripts/common.sh
need_packages redis-tools redis-cli
read -r p1 p2 p3 c1 c2 c3 < <(free_ports 6)
peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
start_replica() {
  local id="$1" port="$2"
  "$bin" --replica-id "$id" --data-dir "$work/data" --peers "$peers" \
    --client-addr "127.0.0.1:$port" "${no_http[@]}" --no-prompt 2> "$work/err$id" &
  pids+=($!)
}
# INFO field of the replica serving clients on port $1.
info_field() { redis-cli -p "$1" INFO 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }
start_replica 1 "$c1"
start_replica 2 "$c2"
wait_for_port "$c1"

echo "loading $keys keys of 100 bytes through replica 1's client port..."
load_start=$(date +%s.%N)
python3 - "$keys" > "$work/load.resp" <<'EOF'
import sys
keys = int(sys.argv[1])
value = b"v" * 100
out = sys.stdout.buffer
for first in range(0, keys, 100):
    batch = range(first, min(first + 100, keys))
    out.write(b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * len(batch)))
    for i in batch:
        key = b"key%010d" % i
        out.write(b"$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(key), key, value))
EOF
redis-cli -p "$c1" --pipe < "$work/load.resp" | tail -n 1
load_end=$(date +%s.%N)
loaded=$(info_field "$c1" db0 | sed 's/keys=\([0-9]*\).*/\1/')
[ "$loaded" = "$keys" ] || { echo "error: replica 1 holds $loaded keys, not $keys" >&2; exit 1; }
target=$(info_field "$c1" applied_index)

term_before=$(info_field "$c1" term)

start_replica 3 "$c3"
catch_start=$(date +%s.%N)
wait_for_port "$c3"
until applied=$(info_field "$c3" applied_index) && [ -n "$applied" ] && [ "$applied" -ge "$target" ]; do
  sleep 0.1
done
catch_end=$(date +%s.%N)

sum1=$(redis-cli -p "$c1" CHECKSUM); sum3=$(redis-cli -p "$c3" CHECKSUM)
seconds() { python3 -c "print(f'{$2 - $1:.2f}')"; }
printf '\n| measure | value |\n|---|---|\n'
printf '| keys written while replica 3 was absent | %s |\n' "$keys"
printf '| load time through the client port | %s s |\n' "$(seconds "$load_start" "$load_end")"
printf '| replica 3 catch-up (start to applied >= %s) | %s s |\n' "$target" "$(seconds "$catch_start" "$catch_end")"
printf '| snapshots installed by replica 3 | %s |\n' "$(info_field "$c3" snapshots_installed)"
printf '| snapshot size | %s bytes |\n' "$(info_field "$c3" snapshot_bytes)"
printf '| elections during catch-up (term before -> after) | %s -> %s |\n' "$term_before" "$(info_field "$c1" term)"
for i in 0 1 2; do
  hwm=$(sed -n 's/^VmHWM:\s*//p' "/proc/${pids[$i]}/status")
  printf '| peak RSS of replica %s | %s |\n' "$((i + 1))" "$hwm"
done
# Replica 1 may have applied a few more entries (none are written now, but the
# checksum line names its index): compare only when both name the same one.
if [ "$sum1" = "$sum3" ]; then echo "checksums match: $sum1"; else echo "checksums differ: 1: $sum1 / 3: $sum3"; exit 1; fi
