#!/usr/bin/env bash
# Runs one replica of a cluster that spans several hosts, one replica per host.
# Run it on every host with the same --hosts list and --cluster-id; replica N
# is the Nth host of the list.
#
#   scripts/run-on-host.sh --hosts 10.0.0.1,10.0.0.2,10.0.0.3 --id 2 --cluster-id shop
#   scripts/run-on-host.sh --id 4 --host 10.0.0.4 --join 10.0.0.1 --cluster-id shop
#
# The second form starts a new replica that joins the running cluster through any
# member (HOST or HOST:PORT), is caught up, and then becomes a voter.
#
# To admit only members on the Raft port, make one secret and copy it to every host
# (the same file everywhere, readable only by the user that runs the replica):
#   head -c 32 /dev/urandom | base64 > cluster.secret && chmod 600 cluster.secret
#   scripts/run-on-host.sh ... --cluster-secret-file cluster.secret
# (or export EXAMPLE_ONDISK_CLUSTER_SECRET). It authenticates each connection's
# opening; the Raft traffic itself is not encrypted.
#
# Options:
#   --hosts H1,H2,...    hosts of the founding members, replica N on the Nth
#   --id N               this replica's id (required)
#   --cluster-id NAME    the cluster's name, the same on every host (required)
#   --host ADDR          this host's address (default: the Nth of --hosts)
#   --join HOST[:PORT]   join a running cluster through this member
#   --raft-port PORT     Raft port, the same on every host (default 63001)
#   --client-port PORT   Redis port of this replica (default 6379)
#   --client-host ADDR   where the Redis port listens (default: --host)
#   --http-port PORT     HTTP port for /metrics, /health and /ready, on the
#                        client host (default 64001, the same on every host)
#   --no-http            serve no HTTP port
#   --data-dir DIR       (default example-data)
#   --cluster-secret-file FILE  the cluster secret, the same file on every host
#   --binary PATH        (default target/release/example-ondisk, built if missing)
#   --no-prompt          run without a prompt until SIGINT or SIGTERM
#   --dry-run            print the command instead of running it
#   -- ARGS...           passed to example-ondisk as they are (--log-level debug, ...)
set -euo pipefail

fail() {
  echo "error: $*" >&2
  exit 2
}
is_number() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac }
# Hostnames and IPv4 addresses as they are; an IPv6 address needs brackets.
check_host() {
  case "$1" in
    '') fail "$2 is empty" ;;
    \[*\]) ;;
    *:*) fail "$2 '$1' has a ':'; give the host alone (ports are --raft-port and --client-port), IPv6 in brackets" ;;
    *[[:space:],=]*) fail "$2 '$1' is not a host name or address" ;;
  esac
}
check_port() {
  is_number "$1" && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || fail "$2 must be a port from 1 to 65535, not '$1'"
}

hosts=""
id=""
cluster_id=""
host=""
join=""
raft_port=63001
client_port=6379
client_host=""
http_port=64001
data_dir=example-data
secret_file=""
binary=""
dry_run=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts="${2?--hosts needs a list of hosts}"; shift ;;
    --id) id="${2?--id needs a number}"; shift ;;
    --cluster-id) cluster_id="${2?--cluster-id needs a name}"; shift ;;
    --host) host="${2?--host needs an address}"; shift ;;
    --join) join="${2?--join needs HOST or HOST:PORT}"; shift ;;
    --raft-port) raft_port="${2?--raft-port needs a port}"; shift ;;
    --client-port) client_port="${2?--client-port needs a port}"; shift ;;
    --client-host) client_host="${2?--client-host needs an address}"; shift ;;
    --http-port) http_port="${2?--http-port needs a port}"; shift ;;
    --no-http) http_port="" ;;
    --data-dir) data_dir="${2?--data-dir needs a folder}"; shift ;;
    --binary) binary="${2?--binary needs a path}"; shift ;;
    --no-prompt) extra+=(--no-prompt) ;;
    --dry-run) dry_run=yes ;;
    --) shift; extra+=("$@"); break ;;
    --cluster-secret-file) secret_file="${2?--cluster-secret-file needs a file}"; shift ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1' (try --help)" ;;
  esac
  shift
done

is_number "$id" && [ "$id" -ge 1 ] || fail "--id must be a replica id of 1 or more, not '${id}'"
[ -n "$cluster_id" ] || fail "--cluster-id NAME is required: choose one name and give it on every host"
check_port "$raft_port" --raft-port
if [ -n "$secret_file" ]; then
  [ -f "$secret_file" ] && [ -r "$secret_file" ] ||
    fail "cannot read --cluster-secret-file '$secret_file'"
  [ -s "$secret_file" ] || fail "--cluster-secret-file '$secret_file' is empty (make one with: head -c 32 /dev/urandom | base64)"
fi
check_port "$client_port" --client-port
[ -z "$http_port" ] || check_port "$http_port" --http-port

IFS=, read -r -a host_list <<< "$hosts"
for h in "${host_list[@]}"; do check_host "$h" "a host in --hosts"; done
if [ -z "$host" ]; then
  [ "$id" -le "${#host_list[@]}" ] ||
    fail "replica $id is not in --hosts (${#host_list[@]} hosts); say where it runs with --host ADDR"
  host="${host_list[$((id - 1))]}"
fi
check_host "$host" --host
[ -n "$client_host" ] || client_host="$host"
check_host "$client_host" --client-host

if [ -n "$join" ]; then
  # A joining replica names only itself; the cluster tells it the rest.
  case "$join" in
    \[*\]:* | [!\[]*:*) ;;
    *) join="$join:$raft_port" ;;
  esac
  peers="$id=$host:$raft_port"
else
  [ "${#host_list[@]}" -gt 0 ] || fail "--hosts is required to found a cluster (or --join a running one)"
  [ "$id" -le "${#host_list[@]}" ] ||
    fail "replica $id is not in --hosts (${#host_list[@]} hosts); a new replica needs --join HOST"
  [ "$host" = "${host_list[$((id - 1))]}" ] ||
    fail "--host $host differs from entry $id of --hosts (${host_list[$((id - 1))]})"
  peers=""
  n=0
  for h in "${host_list[@]}"; do
    n=$((n + 1))
    peers="${peers:+$peers,}$n=$h:$raft_port"
  done
  [ "$(printf '%s\n' "${host_list[@]}" | sort | uniq -d)" = "" ] ||
    fail "--hosts names a host twice; this script runs one replica per host"
fi

command=(--replica-id "$id" --peers "$peers" --cluster-id "$cluster_id"
  --client-addr "$client_host:$client_port" --data-dir "$data_dir")
if [ -n "$http_port" ]; then command+=(--http-addr "$client_host:$http_port"); else command+=(--no-http); fi
[ -z "$join" ] || command+=(--join "$join")
[ -z "$secret_file" ] || command+=(--cluster-secret-file "$secret_file")
command+=("${extra[@]}")

if [ -z "$binary" ]; then
  binary="$(cd "$(dirname "$0")/.." && pwd)/target/release/example-ondisk"
  if [ -z "$dry_run" ] && [ ! -x "$binary" ]; then
    (cd "$(dirname "$0")/.." && cargo build --release --quiet)
  fi
fi
if [ -n "$dry_run" ]; then
  # One line a shell can run; words that need no quoting are left bare.
  line=""
  for word in "$binary" "${command[@]}"; do
    case "$word" in
      *[!A-Za-z0-9_./:=,@+-]* | '') word="$(printf '%q' "$word")" ;;
    esac
    line="${line:+$line }$word"
  done
  echo "$line"
  exit 0
fi
[ -x "$binary" ] || fail "cannot run '$binary' (build it with cargo build --release, or give --binary)"
exec "$binary" "${command[@]}"
