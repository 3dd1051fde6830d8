#!/usr/bin/env bash
# deploy/local-cluster.sh's guard rails: `up N` refuses data of a cluster of
# another size, saying what to do, and `clean` stops the nodes and deletes
# the cluster directory.
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
echo "local-cluster test: ok"
