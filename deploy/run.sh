#!/usr/bin/env bash
# From nothing to a running node: sets up what is missing (the Debian
# packages and the build, as deploy/setup.sh does), then runs one keeld in
# the foreground with the defaults a first try wants: its data in
# ./data/node under the repository, the example agent types
# (examples/agents/) loaded, HTTP on 127.0.0.1:7070. Prints where it
# listens and what to try next. Ctrl-C (or SIGTERM) stops it cleanly; run
# it again and the node goes on with the same data.
#
#   ./deploy/run.sh                          the defaults
#   ./deploy/run.sh --http 127.0.0.1:7080    any other keeld flags are passed on
#
# Environment: BUILD_DIR (default build), KEEL_RUN_DATA (default
# ./data/node), KEEL_RUN_HTTP (default 127.0.0.1:7070), KEEL_RUN_SETUP=0
# to skip the set-up step (the build must exist).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-build}
data=${KEEL_RUN_DATA:-$root/data/node}
http=${KEEL_RUN_HTTP:-127.0.0.1:7070}

if [ "${KEEL_RUN_SETUP:-1}" != 0 ]; then
  "$root/deploy/setup.sh"
fi
case $build_dir in
  /*) bin=$build_dir ;;
  *) bin=$root/$build_dir ;;
esac
keeld=$bin/keeld
[ -x "$keeld" ] || {
  echo "run: no $keeld: run ./deploy/setup.sh first" >&2
  exit 1
}
mkdir -p "$data"

# What to try, once the node listens at $1 (http://HOST:PORT).
next_steps() {
  local url=$1 server=""
  [ "$url" = "http://127.0.0.1:7070" ] || server=" --server $url"
  local k="$bin/keel$server"
  [ "$bin" = "$root/$build_dir" ] && k="./$build_dir/keel$server"
  cat <<EOF

run: a Keel node is up at $url (data in $data).
run: in another terminal, from $root:
  $k spawn refund-desk ticket/1
  $k send ticket/1 '"Customer 42 wants a refund for order 9"' --wait 5000
  $k ls --waiting                   # what waits for a human
  KEEL_TOKEN_FILE=$data/admin.token $k signal ticket/1 approve
  $k ledger ticket/1                # every step, in order
run: more in README.md; Ctrl-C stops the node (nothing acknowledged is lost).

EOF
}

cd "$root"
# keeld's stdout carries the line that says where it listens; everything
# else it logs goes to stderr, straight to the terminal.
"$keeld" --data "$data" --agents "$root/examples/agents" --http "$http" "$@" > >(
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ $line == "keeld listening on "* ]]; then
      url=${line#keeld listening on }
      next_steps "${url%% *}"
    fi
  done
) &
pid=$!
stopping=0
stop() {
  stopping=1
  kill -TERM "$pid" 2>/dev/null || true
}
trap stop INT TERM
# A trapped signal ends the first wait early; the second waits for keeld's
# own exit code.
status=0
wait "$pid" || status=$?
if ((stopping)); then
  status=0
  wait "$pid" || status=$?
fi
exit "$status"
