#!/usr/bin/env bash
# deploy/run.sh from a built tree: it starts a node with the example agent
# types, says where it listens and what to try; the first thing it suggests
# works; SIGTERM stops the node cleanly.
#
#   tests/docs/run_script_test.sh BUILD_DIR
set -uo pipefail
build_dir=$(cd "$1" && pwd) || exit 2
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/docs/processes.sh
. "$repo/tests/docs/processes.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/keel-run-sh.XXXXXX")
pid=
finish() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf -- "$work"
}
trap finish EXIT
fail() {
  echo "run.sh test: $*"
  sed 's/^/    /' "$work/out"
  exit 1
}

KEEL_RUN_SETUP=0 BUILD_DIR=$build_dir KEEL_RUN_DATA=$work/data KEEL_RUN_HTTP=127.0.0.1:0 \
  "$repo/deploy/run.sh" >"$work/out" 2>&1 &
pid=$!
for ((i = 0; i < 300; i++)); do
  grep -q 'Ctrl-C stops the node' "$work/out" && break
  alive "$pid" || fail "run.sh exited before the node was up"
  sleep 0.1
done
grep -q 'Ctrl-C stops the node' "$work/out" || fail "no 'what to try next' within 30 s"
url=$(sed -n 's/^run: a Keel node is up at \(http[^ ]*\) .*/\1/p' "$work/out")
[ -n "$url" ] || fail "it does not say where the node listens"
grep -q "agent type refund-desk" "$work/out" || fail "the example agent types were not loaded"
[ -f "$work/data/admin.token" ] || fail "no admin token in the data directory it names"

keel=("$build_dir/keel" --server "$url")
"${keel[@]}" spawn refund-desk ticket/1 >>"$work/out" 2>&1 || fail "the suggested spawn failed"
"${keel[@]}" send ticket/1 '"Customer 42 wants a refund for order 9"' --wait 5000 >>"$work/out" 2>&1
"${keel[@]}" show ticket/1 >"$work/show" 2>&1 || fail "show failed"
grep -q 'waiting_approval' "$work/show" || fail "the suggested turn does not wait for approval: $(cat "$work/show")"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
((rc == 0)) || fail "run.sh exited $rc after SIGTERM"
grep -Eq ' stopped$' "$work/out" || fail "keeld did not stop cleanly"
echo "run.sh test: ok"
