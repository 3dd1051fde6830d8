#!/usr/bin/env bash
# tools/check_layers.sh on small trees: it passes a tree whose includes
# follow its links and fails, naming the cause, an include its folder's
# libraries do not link, a cycle, and a folder without its README.
set -euo pipefail
check=$(cd "$(dirname "$0")/../.." && pwd)/tools/check_layers.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tree() {  # a fresh tree: low/ and high/ (high links low), each documented
  rm -rf "$tmp/src"
  mkdir -p "$tmp/src/low" "$tmp/src/high/sub"
  for d in low high high/sub; do touch "$tmp/src/$d/CMakeLists.txt" "$tmp/src/$d/README.md"; done
  printf '#include "low/a.hpp"\n' >"$tmp/src/low/a.cpp"
  printf '#include "low/a.hpp"\n#include <vector>\n' >"$tmp/src/high/b.cpp"
  printf '#include "high/b.hpp"\n' >"$tmp/src/high/sub/c.cpp"
  printf 'low keel_low\nhigh keel_high keel_low\nhigh/sub keel_sub keel_high\n' >"$tmp/graph.txt"
}
expect() {  # expect EXIT PATTERN: the check's exit code and a line it prints
  local want=$1 pattern=$2 out rc=0
  out=$("$check" "$tmp/graph.txt" "$tmp/src" 2>&1) || rc=$?
  if [ "$rc" -ne "$want" ] || ! grep -qE "$pattern" <<<"$out"; then
    echo "FAIL: wanted exit $want and /$pattern/, got exit $rc:"
    echo "$out"
    exit 1
  fi
}

tree
expect 0 'layering: ok \(3 folders, 3 includes'

tree
printf '#include "high/b.hpp"\n' >>"$tmp/src/low/a.cpp"
expect 1 'low/a.cpp:2 includes high/b.hpp, but low.s libraries do not link high.s'

tree
printf '#include "high/sub/c.hpp"\n' >>"$tmp/src/high/b.cpp"
expect 1 'high/b.cpp:3 includes high/sub/c.hpp'

tree
printf 'low keel_low keel_high\nhigh keel_high keel_low\n' >"$tmp/graph.txt"
expect 1 'high and low link each other'

tree
rm "$tmp/src/high/README.md"
expect 1 'high has no README.md'

tree
mkdir "$tmp/src/stray" && touch "$tmp/src/stray/x.cpp"
expect 1 'stray has sources but the build adds no targets'
echo "check_layers: 6 cases passed"
