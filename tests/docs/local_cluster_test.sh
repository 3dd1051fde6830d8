#!/usr/bin/env bash
# deploy/local-cluster.sh's guard rails: `up N` refuses data of a cluster of
# another size, saying what to do, and `clean` stops the nodes and deletes
# the cluster directory. Then a replicated cluster (KEEL_REPLICATION=3) as
# the operations guide walks through it: an agent's node is SIGKILLed and
# another serves it with its state, and a wiped node gets its copy back.
#
#   tests/docs/local_cluster_test.sh BUILD_DIR
set -uo pipefail
build_dir=$(cd "$1" && pwd) || exit 2
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/docs/processes.sh
. "$repo/tests/docs/processes.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/keel-local-cluster.XXXXXX")
export KEEL_BIN_DIR=$build_dir KEEL_CLUSTER_DIR=$work/cluster
lc=$repo/deploy/local-cluster.sh
finish() {
  "$lc" down >/dev/null 2>&1
  rm -rf -- "$work"
}
trap finish EXIT
fail() {
  echo "local-cluster test: $*"
  exit 1
}

# A one-node cluster on port 7171/7071 (the script's fixed layout).
"$lc" up 1 >"$work/up1" 2>&1 || fail "up 1 failed: $(cat "$work/up1")"
pid=$(<"$KEEL_CLUSTER_DIR/n1/keeld.pid")
"$lc" up 2 >"$work/up2" 2>&1 && fail "up 2 started on the data of a 1-member cluster"
grep -q "holds a cluster of 1 members" "$work/up2" || fail "up 2 did not say why: $(cat "$work/up2")"
grep -q "clean" "$work/up2" || fail "up 2 did not say what to do: $(cat "$work/up2")"
[ -d "$KEEL_CLUSTER_DIR/n2" ] && fail "up 2 touched n2 before refusing"
"$lc" up >"$work/up" 2>&1 || fail "up without a count did not start the existing cluster: $(cat "$work/up")"

"$lc" clean >"$work/clean" 2>&1 || fail "clean failed: $(cat "$work/clean")"
alive "$pid" && fail "clean left node n1 (pid $pid) running"
[ -e "$KEEL_CLUSTER_DIR" ] && fail "clean left $KEEL_CLUSTER_DIR"
# A replicated cluster of three.
export KEEL_REPLICATION=3
"$lc" up 3 >"$work/rup" 2>&1 || fail "KEEL_REPLICATION=3 up 3 failed: $(cat "$work/rup")"
grep -q '"replication": 3' "$KEEL_CLUSTER_DIR/cluster.json" || fail "cluster.json has no replication"
keel_at() { KEEL_CONNECT_WAIT_MS=0 "$build_dir/keel" --server "http://127.0.0.1:$((7070 + $1))" "${@:2}"; }
# Calls wait for a group leader while the groups elect theirs.
for ((i = 0; i < 100; i++)); do
  keel_at 1 spawn counter rep/1 >"$work/spawn" 2>&1 && break
  sleep 0.1
done
grep -q "rep/1" "$work/spawn" || fail "spawn in a replicated cluster failed: $(cat "$work/spawn")"
for m in 1 2 3; do
  keel_at "$m" send rep/1 "{\"add\": $m}" --id "r-$m" >"$work/send" 2>&1 ||
    fail "send through n$m failed: $(cat "$work/send")"
done
leader=$(keel_at 1 --json show rep/1 | tr -d ' \n' | sed -n 's/.*"node":"n\([0-9]\)".*/\1/p')
[ -n "$leader" ] || fail "keel show names no node for rep/1"
"$lc" kill "$leader" >/dev/null || fail "kill $leader failed"
other=$((leader % 3 + 1))
total=""
for ((i = 0; i < 200; i++)); do
  total=$(keel_at "$other" --json show rep/1 2>/dev/null | tr -d ' \n' |
    sed -n 's/.*"total":\([0-9]*\).*/\1/p')
  [ "$total" = 6 ] && break
  sleep 0.1
done
[ "$total" = 6 ] || fail "after n$leader died, n$other did not serve rep/1 with total 6 (got '$total')"
"$lc" start "$leader" >"$work/start" 2>&1 || fail "start $leader failed: $(cat "$work/start")"
# The loss of a disk: n$wiped comes back empty and gets rep/1's group again.
wiped=$other
"$lc" wipe "$wiped" >"$work/wipe" 2>&1 || fail "wipe $wiped failed: $(cat "$work/wipe")"
grep -q "deleted" "$work/wipe" || fail "wipe did not say it deleted the data: $(cat "$work/wipe")"
has_copy() {
  local g
  for ((g = 0; g < 32; g++)); do
    curl -fsS "http://127.0.0.1:$((7070 + wiped))/v1/cluster/groups/$g/digest" 2>/dev/null |
      grep -q '"rep/1":{"head":"[0-9a-f]*","seq":[1-9]' && return 0
  done
  return 1
}
for ((i = 0; i < 300; i++)); do
  has_copy && break
  sleep 0.1
done
has_copy || fail "the wiped n$wiped did not get its copy of rep/1 back"
keel_at "$wiped" --json show rep/1 | tr -d ' \n' | grep -q '"total":6' ||
  fail "rep/1 through the wiped n$wiped does not show total 6"
"$lc" clean >/dev/null 2>&1 || fail "clean of the replicated cluster failed"
echo "local-cluster test: ok"
