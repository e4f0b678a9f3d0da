#!/usr/bin/env bash
# How long a replica that missed KEYS writes takes to catch up by snapshot,
# and the peak memory (VmHWM) of each replica meanwhile.
#
#   scripts/catchup-bench.sh [KEYS]      (default 100000; values are 100 bytes)
#
# Replicas 1 and 2 form a quorum and take KEYS puts through replica 1's prompt
# (sequential: about 600/s here, so 1,000,000 keys take ~30 minutes to load;
# the client port of issue 3 will load faster). Replica 3 then starts with an
# empty folder and must catch up from the leader's snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-100000}"
cargo build --release --quiet
bin="$PWD/target/release/example-ondisk"
work="$(mktemp -d)"
pids=()
cleanup() {
  exec 3>&- 4>&- 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r p1 p2 p3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
common=(--data-dir "$work/data" --peers "$peers")

mkfifo "$work/in1" "$work/in3"
"$bin" --replica-id 1 "${common[@]}" < "$work/in1" > "$work/out1" 2> "$work/err1" & pids+=($!)
exec 3> "$work/in1"
"$bin" --replica-id 2 "${common[@]}" --no-prompt 2> "$work/err2" & pids+=($!)

# Ask replica N (fd F, output file O) for its status; print the applied index.
applied_of() {
  local fd="$1" out="$2" before
  before=$(wc -l < "$out")
  echo status >&"$fd"
  while [ "$(wc -l < "$out")" -le "$before" ]; do sleep 0.05; done
  tail -n 1 "$out" | tr ' ' '\n' | sed -n 's/^applied=//p'
}
field_of() { tail -n 1 "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo "loading $keys keys of 100 bytes through replica 1's prompt..."
load_start=$(date +%s.%N)
python3 -c "
v = 'v' * 100
for i in range($keys):
    print(f'put key{i:010d} {v}')
" >&3
while [ "$(wc -l < "$work/out1")" -lt "$keys" ]; do sleep 0.5; done
load_end=$(date +%s.%N)
oks=$(grep -c '^OK$' "$work/out1" || true)
[ "$oks" -eq "$keys" ] || { echo "error: only $oks of $keys puts answered OK" >&2; exit 1; }
target=$(applied_of 3 "$work/out1")

"$bin" --replica-id 3 "${common[@]}" < "$work/in3" > "$work/out3" 2> "$work/err3" & pids+=($!)
exec 4> "$work/in3"
catch_start=$(date +%s.%N)
while :; do
  applied=$(applied_of 4 "$work/out3")
  [ -n "$applied" ] && [ "$applied" -ge "$target" ] && break
  sleep 0.2
done
catch_end=$(date +%s.%N)
installed=$(field_of "$work/out3" snapshots_installed)
snapshot_bytes=$(field_of "$work/out3" snapshot_bytes)

echo "checksum" >&3; echo "checksum" >&4; sleep 1
sum1=$(tail -n 1 "$work/out1"); sum3=$(tail -n 1 "$work/out3")

printf '\n| measure | value |\n|---|---|\n'
printf '| keys written while replica 3 was absent | %s |\n' "$keys"
printf '| load time through the prompt | %.1f s |\n' "$(python3 -c "print($load_end - $load_start)")"
printf '| replica 3 catch-up (start to applied >= %s) | %.2f s |\n' "$target" "$(python3 -c "print($catch_end - $catch_start)")"
printf '| snapshots installed by replica 3 | %s |\n' "$installed"
printf '| snapshot size | %s bytes |\n' "$snapshot_bytes"
for i in 0 1 2; do
  hwm=$(sed -n 's/^VmHWM:\s*//p' "/proc/${pids[$i]}/status")
  printf '| peak RSS of replica %s | %s |\n' "$((i + 1))" "$hwm"
done
if [ "$sum1" = "$sum3" ]; then echo "checksums match: $sum1"; else echo "checksums differ: 1: $sum1 / 3: $sum3"; exit 1; fi
