#!/usr/bin/env bash
# A long run of the linearizability-checked fault-injection test (tests/chaos.rs).
#
#   scripts/chaos.sh --minutes 30      (default 5)
#   scripts/chaos.sh --seed N          replay one schedule of faults
#
# Six clients send GET, SET, SET NX, DEL, INCR and MULTI/EXEC transactions
# through the client ports, on two groups of keys (a counter and two
# registers each; a transaction stays in one group) that change every 10 s,
# so each group's history stays short enough to check. Meanwhile a nemesis
# kills the leader, a follower and all three (SIGKILL), freezes one (SIGSTOP)
# and cuts the leader or a follower off the network. At the end the history
# is checked for linearizability and the replicas' checksums must agree; on
# failure the data folder and logs are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="${2:?--minutes needs a number}"; shift ;;
    --seed) seed="${2:?--seed needs a number}"; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$minutes" in ''|*[!0-9]*) echo "error: --minutes must be a whole number" >&2; exit 2 ;; esac
export CHAOS_SECONDS=$((minutes * 60))
[ -z "$seed" ] || export CHAOS_SEED="$seed"
exec cargo test --release --test chaos the_history_stays_linearizable -- --nocapture
