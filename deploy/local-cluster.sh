#!/usr/bin/env bash
# Runs a Keel cluster on 127.0.0.1 for development and demos
# (docs/operations.md, "Running a cluster").
#
#   ./deploy/local-cluster.sh up [N]    start nodes n1..nN (default: the existing cluster's size, 3 for a new one)
#   ./deploy/local-cluster.sh status    keel cluster status, asked of the first running node
#   ./deploy/local-cluster.sh kill K    SIGKILL node K (a crash)
#   ./deploy/local-cluster.sh stop K    SIGTERM node K and wait until it exits
#   ./deploy/local-cluster.sh start K   start node K again, with the flags it had; waits until the
#                                       others see it and have delivered what they queued for it
#   ./deploy/local-cluster.sh add K     start node K with --join, then add it to the cluster
#   ./deploy/local-cluster.sh wipe K    SIGKILL node K, delete its data directory, start it empty
#   ./deploy/local-cluster.sh down      SIGTERM every node and wait until all exit
#   ./deploy/local-cluster.sh clean     down, then delete the cluster directory (every node's data)
#
# Node K listens for HTTP on 127.0.0.1:707K and for its peers on 127.0.0.1:717K
# (K from 1 to 99: 7070+K and 7170+K). Under the cluster directory: cluster.json
# (written on the first `up`, with a random secret), admin.token (the members'
# admin token, also made on the first `up`; requests without it may read and
# send), and per node nK/data (the store), nK/keeld.pid, nK/keeld.log.
#
# Environment: KEEL_BIN_DIR (default ./build), KEEL_CLUSTER_DIR (default
# ./cluster-data), KEEL_AGENTS (a directory of agent types, passed as --agents;
# none by default), KEEL_TOKEN (passed on to keeld and keel when set),
# KEEL_REPLICATION (written into a new cluster.json as "replication": every
# agent kept on that many nodes, docs/operations.md "Replicated groups";
# unset: each agent on one node).
set -euo pipefail

bin_dir=${KEEL_BIN_DIR:-./build}
cluster_dir=${KEEL_CLUSTER_DIR:-./cluster-data}
config=$cluster_dir/cluster.json
admin_token=$cluster_dir/admin.token
start_timeout_s=20
stop_timeout_s=30

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

usage() {
  grep '^#   \./deploy/local-cluster\.sh' "$0" | cut -c3- >&2
  exit 2
}

node_index() {
  [[ $1 =~ ^[1-9][0-9]?$ ]] || die "node number must be 1 to 99, got '$1'"
  echo "$1"
}

http_port() { echo $((7070 + $1)); }
cluster_port() { echo $((7170 + $1)); }
node_dir() { echo "$cluster_dir/n$1"; }
pid_file() { echo "$(node_dir "$1")/keeld.pid"; }

# The pid of node K's keeld if it runs, else nothing (exit 1). Checks the
# command line too, so a reused pid is not taken for the node.
node_pid() {
  local f pid
  f=$(pid_file "$1")
  [ -f "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--node-id n$1 " || return 1
  echo "$pid"
}

# Node numbers that have a directory, ascending.
known_nodes() {
  local d
  for d in "$cluster_dir"/n*/; do
    d=${d%/}
    d=${d##*/n}
    [[ $d =~ ^[0-9]+$ ]] && echo "$d"
  done | sort -n
}

member_line() {
  printf '    {"id": "n%s", "host": "127.0.0.1", "cluster_port": %s, "http_host": "127.0.0.1", "http_port": %s}' \
    "$1" "$(cluster_port "$1")" "$(http_port "$1")"
}

has_member() {
  grep -q "\"id\": \"n$1\"" "$config"
}

write_config() {
  local n=$1 k secret
  [[ -z ${KEEL_REPLICATION:-} || $KEEL_REPLICATION =~ ^[0-7]$ ]] ||
    die "KEEL_REPLICATION must be a number from 0 to 7, got '$KEEL_REPLICATION'"
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  mkdir -p "$cluster_dir"
  if [ ! -f "$admin_token" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$admin_token" && echo >>"$admin_token")
  fi
  {
    echo '{'
    echo '  "cluster_id": "local",'
    echo "  \"secret\": \"$secret\","
    # Quick reconnects after a node restarts (a development cluster).
    echo '  "reconnect_max_ms": 1000,'
    [ -n "${KEEL_REPLICATION:-}" ] && echo "  \"replication\": $KEEL_REPLICATION,"
    echo '  "members": ['
    for ((k = 1; k <= n; k++)); do
      member_line "$k"
      if ((k < n)); then echo ','; else echo; fi
    done
    echo '  ]'
    echo '}'
  } >"$config.tmp"
  chmod 600 "$config.tmp"
  mv "$config.tmp" "$config"
  echo "local-cluster: wrote $config ($n members)"
}

# Appends node K after the last member line of a cluster.json in the layout
# write_config produces.
add_member() {
  local k=$1 last
  last=$(grep -n '^ *{"id": "' "$config" | tail -n 1 | cut -d: -f1)
  [ -n "$last" ] || die "cannot find the members in $config; add n$k by hand"
  awk -v last="$last" -v line="$(member_line "$k")" '
    NR == last { sub(/,?[ \t]*$/, ","); print; print line; next }
    { print }' "$config" >"$config.tmp"
  chmod 600 "$config.tmp"
  mv "$config.tmp" "$config"
  echo "local-cluster: added n$k to $config"
}

# Starts node K in the background with the flags recorded for it, and waits
# until its HTTP API answers.
start_node() {
  local k=$1 dir pid args
  dir=$(node_dir "$k")
  if pid=$(node_pid "$k"); then
    echo "local-cluster: n$k already runs (pid $pid)"
    return 0
  fi
  [ -f "$config" ] || die "no $config: run 'up' first"
  has_member "$k" || die "n$k is not a member in $config (grow a running cluster with 'add $k')"
  mkdir -p "$dir"
  args=(--data "$dir/data" --cluster "$config" --node-id "n$k")
  # One admin token for every member (KEEL_TOKEN, when set, wins); without
  # a token, requests may read and send.
  [ -z "${KEEL_TOKEN:-}" ] && [ -f "$admin_token" ] &&
    args+=(--token-file "$admin_token" --anonymous read,send)
  [ -n "${KEEL_AGENTS:-}" ] && args+=(--agents "$KEEL_AGENTS")
  # A node added with --join keeps the flag: until the cluster has handed it
  # its shards, it must not place agents on its own.
  [ -f "$dir/join" ] && args+=(--join)
  echo "--- $(date -u +%FT%TZ) keeld ${args[*]}" >>"$dir/keeld.log"
  nohup "$bin_dir/keeld" "${args[@]}" </dev/null >>"$dir/keeld.log" 2>&1 &
  pid=$!
  echo "$pid" >"$(pid_file "$k")"
  wait_healthy "$k" "$pid"
}

wait_healthy() {
  local k=$1 pid=$2 url i
  url="http://127.0.0.1:$(http_port "$k")"
  for ((i = 0; i < start_timeout_s * 10; i++)); do
    if ! alive "$pid"; then
      tail -n 20 "$(node_dir "$k")/keeld.log" >&2
      die "n$k exited while starting; log: $(node_dir "$k")/keeld.log"
    fi
    # Asked again every 0.1 s here, so keel itself must not wait.
    if KEEL_CONNECT_WAIT_MS=0 "$bin_dir/keel" --server "$url" health >/dev/null 2>&1; then
      echo "local-cluster: n$k up (pid $pid, $url)"
      return 0
    fi
    sleep 0.1
  done
  die "n$k does not answer on $url after ${start_timeout_s}s; log: $(node_dir "$k")/keeld.log"
}

# Whether a process runs: exists and is not a zombie (nodes started by an
# earlier run of this script are reaped by init, maybe not at once).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Waits until each given pid has exited; fails after stop_timeout_s.
wait_exit() {
  local i pid alive
  for ((i = 0; i < stop_timeout_s * 10; i++)); do
    alive=0
    for pid in "$@"; do
      if alive "$pid"; then alive=1; fi
    done
    ((alive)) || return 0
    sleep 0.1
  done
  return 1
}

signal_node() {
  local sig=$1 k=$2 pid
  if ! pid=$(node_pid "$k"); then
    echo "local-cluster: n$k is not running"
    rm -f "$(pid_file "$k")"
    return 0
  fi
  kill "-$sig" "$pid"
  wait_exit "$pid" || die "n$k (pid $pid) still runs ${stop_timeout_s}s after SIG$sig; try 'kill $k'"
  rm -f "$(pid_file "$k")"
  echo "local-cluster: n$k stopped (SIG$sig)"
}

member_count() {
  grep -c '^ *{"id": "n' "$config"
}

# up [N]: without N, the cluster the directory holds (3 members for a new
# one); with N, a cluster of N members, refusing data of another size.
cmd_up() {
  local n=${1:-} k have
  if [ ! -x "$bin_dir/keeld" ] || [ ! -x "$bin_dir/keel" ]; then
    die "no keeld/keel in $bin_dir: run ./deploy/setup.sh (or set KEEL_BIN_DIR)"
  fi
  if [ -f "$config" ]; then
    have=$(member_count)
    if [ -n "$n" ] && [ "$n" != "$have" ]; then
      die "$cluster_dir holds a cluster of $have members (its data and config), not $n: run 'up $have' to start it again, or '$0 clean' to delete it and start afresh"
    fi
    n=$have
  fi
  n=${n:-3}
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "up takes a node count from 1 to 99, got '$n'"
  [ -f "$config" ] || write_config "$n"
  for ((k = 1; k <= n; k++)); do
    has_member "$k" || die "n$k is not a member in $config; use 'add $k' to grow a running cluster, or '$0 clean' to start afresh"
  done
  for ((k = 1; k <= n; k++)); do
    start_node "$k"
  done
  wait_connected "$n"
}

# Node K's `keel cluster status` as compact JSON; nothing when it does not
# answer (asked once: the callers poll).
cluster_status() {
  KEEL_CONNECT_WAIT_MS=0 "$bin_dir/keel" --server "http://127.0.0.1:$(http_port "$1")" \
    --json cluster status 2>/dev/null | tr -d ' \n'
}

# Waits until every other running node sees node K up again (they
# reconnect with backoff) and has delivered what its outbox held for K, so
# calls through any node reach K's agents, and queued messages have
# arrived, right away.
wait_seen() {
  local k=$1 i j status ready
  for ((i = 0; i < start_timeout_s * 10; i++)); do
    ready=1
    for j in $(known_nodes); do
      [ "$j" = "$k" ] && continue
      node_pid "$j" >/dev/null || continue
      status=$(cluster_status "$j")
      if ! grep -q "\"id\":\"n$k\"[^}]*\"up\":true" <<<"$status" ||
        sed -n 's/.*"by_node":{\([^}]*\)}.*/\1/p' <<<"$status" | grep -q "\"n$k\":[1-9]"; then
        ready=0
        break
      fi
    done
    if ((ready)); then
      echo "local-cluster: n$k connected"
      return 0
    fi
    sleep 0.1
  done
  die "n$k did not reconnect within ${start_timeout_s}s; see $(node_dir "$k")/keeld.log"
}

# Waits until every node sees every member up: nodes answer HTTP before
# they have found each other, and a call through a node not yet connected
# to the agent's owner would be answered 503 (or queued).
wait_connected() {
  local n=$1 i k ready
  for ((i = 0; i < start_timeout_s * 10; i++)); do
    ready=1
    for ((k = 1; k <= n; k++)); do
      if [ "$(cluster_status "$k" | grep -o '"up":true' | wc -l)" -lt "$n" ]; then
        ready=0
        break
      fi
    done
    if ((ready)); then
      echo "local-cluster: all $n nodes connected"
      return 0
    fi
    sleep 0.1
  done
  die "the nodes did not all connect within ${start_timeout_s}s; see $cluster_dir/n*/keeld.log"
}

cmd_down() {
  local k pid pids=()
  for k in $(known_nodes); do
    if pid=$(node_pid "$k"); then
      kill -TERM "$pid"
      pids+=("$pid")
    fi
  done
  ((${#pids[@]})) || {
    echo "local-cluster: no node is running"
    return 0
  }
  wait_exit "${pids[@]}" || die "some nodes still run ${stop_timeout_s}s after SIGTERM; try 'kill K'"
  for k in $(known_nodes); do
    node_pid "$k" >/dev/null || rm -f "$(pid_file "$k")"
  done
  echo "local-cluster: stopped ${#pids[@]} node(s)"
}

cmd_clean() {
  cmd_down
  if [ -d "$cluster_dir" ]; then
    rm -rf -- "$cluster_dir"
    echo "local-cluster: deleted $cluster_dir"
  else
    echo "local-cluster: no $cluster_dir to delete"
  fi
}

# The HTTP URL of the first running node other than $1 (if given).
any_running_url() {
  local k
  for k in $(known_nodes); do
    [ "$k" = "${1:-}" ] && continue
    node_pid "$k" >/dev/null && {
      echo "http://127.0.0.1:$(http_port "$k")"
      return 0
    }
  done
  return 1
}

cmd_status() {
  local url
  url=$(any_running_url) || die "no node is running"
  "$bin_dir/keel" --server "$url" cluster status
}

cmd_add() {
  local k=$1 url
  [ -f "$config" ] || die "no $config: run 'up' first"
  url=$(any_running_url "$k") || die "no running member to add n$k through"
  has_member "$k" || add_member "$k"
  mkdir -p "$(node_dir "$k")"
  touch "$(node_dir "$k")/join"
  start_node "$k"
  KEEL_TOKEN_FILE=${KEEL_TOKEN_FILE:-$admin_token} "$bin_dir/keel" --server "$url" cluster add-node "n$k" \
    --cluster "127.0.0.1:$(cluster_port "$k")" --http "127.0.0.1:$(http_port "$k")"
}

# wipe K: the loss of a node's disk. Its store is deleted and it starts
# empty; in a replicated cluster it gets its groups back from the others.
cmd_wipe() {
  local k=$1
  [ -f "$config" ] || die "no $config: run 'up' first"
  signal_node KILL "$k"
  rm -rf -- "$(node_dir "$k")/data"
  echo "local-cluster: deleted $(node_dir "$k")/data"
  start_node "$k"
  wait_seen "$k"
}

main() {
  local cmd=${1:-} k
  case $cmd in
    up | down | status | clean) ;;
    kill | stop | start | add | wipe) k=$(node_index "${2:-}") ;;
    *) usage ;;
  esac
  case $cmd in
    up) cmd_up "${2:-}" ;;
    down) cmd_down ;;
    clean) cmd_clean ;;
    status) cmd_status ;;
    kill) signal_node KILL "$k" ;;
    stop) signal_node TERM "$k" ;;
    start)
      start_node "$k"
      wait_seen "$k"
      ;;
    add) cmd_add "$k" ;;
    wipe) cmd_wipe "$k" ;;
  esac
}

main "$@"
