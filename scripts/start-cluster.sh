#!/usr/bin/env bash
# Starts the three replicas of example-ondisk on this machine.
#
#   scripts/start-cluster.sh               three prompts side by side in a tmux session
#   scripts/start-cluster.sh --background  three replicas without prompts; logs in DIR/replica-N/
#   scripts/start-cluster.sh --stop        stops replicas started with --background
#
# Options: --data-dir DIR (default example-data). The replicas use the default
# addresses 127.0.0.1:63001-63003.
set -euo pipefail

cd "$(dirname "$0")/.."
mode=tmux
data_dir=example-data
while [ $# -gt 0 ]; do
  case "$1" in
    --background) mode=background ;;
    --stop) mode=stop ;;
    --data-dir) data_dir="${2:?--data-dir needs a folder}"; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

pid_file="$data_dir/background.pids"
if [ "$mode" = stop ]; then
  [ -f "$pid_file" ] || { echo "no replicas started with --background under $data_dir"; exit 0; }
  while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done < "$pid_file"
  rm -f "$pid_file"
  echo "stopped"
  exit 0
fi

cargo build --release --quiet
binary="$PWD/target/release/example-ondisk"
mkdir -p "$data_dir"

if [ "$mode" = background ]; then
  : > "$pid_file"
  for id in 1 2 3; do
    mkdir -p "$data_dir/replica-$id"
    "$binary" --replica-id "$id" --data-dir "$data_dir" --no-prompt \
      > "$data_dir/replica-$id/stdout.log" 2>&1 &
    echo $! >> "$pid_file"
  done
  echo "three replicas running in the background (pids in $pid_file)"
  echo "logs: $data_dir/replica-N/replica.log; stop them with: $0 --stop"
  exit 0
fi

if ! command -v tmux >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "tmux is not installed; installing it with apt-get (Ctrl-C to stop)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq tmux >/dev/null; } || true
fi
if ! command -v tmux >/dev/null 2>&1; then
  echo "tmux is not installed (apt-get install -y tmux). Without it, run these in three terminals:" >&2
  for id in 1 2 3; do echo "  $binary --replica-id $id --data-dir $data_dir" >&2; done
  exit 1
fi
session="example-ondisk"
if tmux has-session -t "$session" 2>/dev/null; then
  echo "a tmux session '$session' exists already; attach with: tmux attach -t $session" >&2
  exit 1
fi
tmux new-session -d -s "$session" "$binary --replica-id 1 --data-dir $data_dir"
tmux split-window -t "$session" -h "$binary --replica-id 2 --data-dir $data_dir"
tmux split-window -t "$session" -h "$binary --replica-id 3 --data-dir $data_dir"
tmux select-layout -t "$session" even-horizontal
if [ -t 1 ]; then
  exec tmux attach -t "$session"
else
  echo "started tmux session '$session'; attach with: tmux attach -t $session"
fi
