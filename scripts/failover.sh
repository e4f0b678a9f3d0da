#!/usr/bin/env bash
# How long writes stop when the leader is lost: the leader is killed (SIGKILL)
# or frozen (SIGSTOP) again and again while a client writes through the other
# two replicas, and each time the gap is measured from the client's side.
#
#   scripts/failover.sh                 20 kills (the default)
#   scripts/failover.sh --rounds 30 --freeze
#   scripts/failover.sh --flags "--election-timeout 300"   (passed to each replica)
#   scripts/failover.sh --rolling --rounds 5   rolling restarts instead
#
# --rolling: each round stops every replica in turn with SIGTERM (the way a
# rolling upgrade does), starts it again and lets it catch up, while the
# client writes through all three; a round's gap is the longest wait between
# two acknowledged writes during the whole round.
#
# A writer sends one SET at a time, alternating between the two replicas that
# were followers when the round began, and logs when each was acknowledged.
# The gap of a round is the longest time between two acknowledged writes
# that ends after the leader was lost. A killed leader is started again
# (a frozen one continued) and allowed to catch up before the next round.
# Prints each round, then the median, 90th percentile and largest gap.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=20
mode=kill
flags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="${2:?--rounds needs a number}"; shift ;;
    --freeze) mode=freeze ;;
    --rolling) mode=rolling ;;
    --flags) flags="${2?--flags needs a value}"; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$rounds" in ''|*[!0-9]*|0) echo "error: --rounds must be a whole number above 0" >&2; exit 2 ;; esac

source scripts/common.sh
need_packages redis-tools redis-cli

read -r p1 p2 p3 c1 c2 c3 < <(free_ports 6)
peers="1=127.0.0.1:$p1,2=127.0.0.1:$p2,3=127.0.0.1:$p3"
client_ports=("$c1" "$c2" "$c3")
replica_pids=(0 0 0)

start_replica() {
  local id="$1"
  # shellcheck disable=SC2086 # the extra flags are meant to split
  "$bin" --replica-id "$id" --data-dir "$work/data" --peers "$peers" \
    --client-addr "127.0.0.1:${client_ports[$((id - 1))]}" "${no_http[@]}" --no-prompt $flags \
    2>> "$work/err$id" &
  pids+=($!)
  replica_pids[$((id - 1))]=$!
}

# The id of the replica that says it leads, or nothing.
leader_now() {
  local id
  for id in 1 2 3; do
    if redis-cli -p "${client_ports[$((id - 1))]}" INFO raft 2>/dev/null | grep -q '^role:leader'; then
      echo "$id"; return
    fi
  done
}

applied_at() {
  redis-cli -p "${client_ports[$(($1 - 1))]}" INFO raft 2>/dev/null |
    sed -n 's/^applied_index:\([0-9]*\).*/\1/p'
}

wait_for_leader() {
  local deadline=$((SECONDS + 30)) id=""
  while [ -z "$id" ]; do
    [ $SECONDS -lt $deadline ] || { echo "error: no leader within 30 s" >&2; exit 1; }
    sleep 0.1
    id="$(leader_now)"
  done
  echo "$id"
}

for id in 1 2 3; do start_replica "$id"; done
for id in 1 2 3; do wait_for_port "${client_ports[$((id - 1))]}"; done

# The writer: SETs one at a time on a raw RESP connection per port, turn about
# between the given ports; each acknowledged write's time goes to stdout.
cat > "$work/writer.py" <<'EOF'
import socket, sys, time
ports = [int(p) for p in sys.argv[1:]]
conns = {}
def send(port, n):
    c = conns.get(port)
    if c is None:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        conns[port] = c
    key, value = b"failover", str(n).encode()
    c.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
    reply = c.recv(1024)
    if not reply.startswith(b"+OK"):
        raise IOError(reply[:100])
n = 0
while True:
    port = ports[n % len(ports)]
    n += 1
    try:
        send(port, n)
        print("%.4f" % time.time(), flush=True)
    except (OSError, IOError):
        old = conns.pop(port, None)
        if old is not None:
            old.close()
        time.sleep(0.005)
EOF

# Waits until replica $1 has applied what the leader has.
# (What the leader had applied when the wait began: writes may go on.)
wait_caught_up() {
  local id="$1" target deadline=$((SECONDS + 30))
  target="$(applied_at "$(wait_for_leader)")"
  until [ -n "$(applied_at "$id")" ] && [ "$(applied_at "$id")" -ge "${target:-0}" ]; do
    [ $SECONDS -lt $deadline ] || { echo "error: replica $id did not catch up in 30 s" >&2; exit 1; }
    sleep 0.2
  done
}

gaps=()
if [ "$mode" = rolling ]; then
  for round in $(seq 1 "$rounds"); do
    wait_for_leader >/dev/null
    python3 "$work/writer.py" "${client_ports[@]}" > "$work/acks" &
    writer=$!
    pids+=("$writer")
    sleep 1
    leaders=""
    for id in 1 2 3; do
      leaders="$leaders$(leader_now)"
      kill -TERM "${replica_pids[$((id - 1))]}"
      wait "${replica_pids[$((id - 1))]}" 2>/dev/null || true
      start_replica "$id"
      wait_for_port "${client_ports[$((id - 1))]}"
      wait_caught_up "$id"
      sleep 0.5
    done
    kill "$writer" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
    gap="$(awk 'NR > 1 && $1 - previous > longest { longest = $1 - previous } { previous = $1 }
      END { printf "%.3f", longest }' "$work/acks")"
    gaps+=("$gap")
    echo "round $round: restarted 1, 2, 3 (leaders before each stop: $leaders), longest write pause $gap s"
  done
  rounds=0
fi
round=0
while [ "$round" -lt "$rounds" ]; do
  leader="$(wait_for_leader)"
  others=()
  for id in 1 2 3; do [ "$id" = "$leader" ] || others+=("${client_ports[$((id - 1))]}"); done
  python3 "$work/writer.py" "${others[@]}" > "$work/acks" &
  writer=$!
  pids+=("$writer")
  sleep 1.5
  if [ "$(leader_now)" != "$leader" ]; then
    # Leadership moved by itself meanwhile: this round would measure nothing.
    kill "$writer" 2>/dev/null || true
    wait "$writer" 2>/dev/null || true
    continue
  fi
  round=$((round + 1))
  lost_at="$(date +%s.%N)"
  if [ "$mode" = kill ]; then
    kill -9 "${replica_pids[$((leader - 1))]}"
    wait "${replica_pids[$((leader - 1))]}" 2>/dev/null || true
  else
    kill -STOP "${replica_pids[$((leader - 1))]}"
  fi
  # Wait for the first acknowledgement after the loss (30 s at most).
  deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ] &&
    ! awk -v t="$lost_at" '$1 > t + 0.05 { found = 1 } END { exit !found }' "$work/acks"; do
    sleep 0.1
  done
  sleep 0.3
  kill "$writer" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
  # The longest wait between two acknowledgements that ends after the loss
  # (a write in flight may still be acknowledged just after it).
  gap="$(awk -v t="$lost_at" '
    NR > 1 && $1 > t && $1 - previous > longest { longest = $1 - previous; seen = 1 }
    { previous = $1 }
    END { if (!seen) print "none"; else printf "%.3f", longest }' "$work/acks")"
  [ "$gap" = none ] && { echo "error: round $round: no write before or after the loss" >&2; exit 1; }
  gaps+=("$gap")
  [ "$mode" = kill ] && what=killed || what=frozen
  echo "round $round: leader $leader $what, writes stopped for $gap s"
  if [ "$mode" = kill ]; then
    start_replica "$leader"
  else
    kill -CONT "${replica_pids[$((leader - 1))]}"
  fi
  # Let the old leader catch up before the next round.
  wait_caught_up "$leader"
  sleep 1
done

printf '%s\n' "${gaps[@]}" | sort -n | awk -v mode="$mode" '
  { g[NR] = $1 }
  END {
    p90 = int(NR * 0.9 + 0.999); if (p90 > NR) p90 = NR
    printf "%d rounds (%s): median %.3f s, p90 %.3f s, largest %.3f s, smallest %.3f s\n",
      NR, mode, (NR % 2 ? g[(NR + 1) / 2] : (g[NR / 2] + g[NR / 2 + 1]) / 2), g[p90], g[NR], g[1]
  }'
