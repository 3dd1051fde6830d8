#!/usr/bin/env bash
# Runs the shell blocks of the README and of docs/ quick starts exactly as
# written, in order, in a fresh temporary directory that looks like the
# repository root (examples/ and deploy/ copied, build/ linked to the build
# under test), with real keeld processes.
#
#   tests/docs/run_doc_blocks.sh BUILD_DIR FILE.md...
#
# In a ```sh block:
#   - every command must exit 0, unless its comment says otherwise;
#   - a trailing comment "# => TEXT" promises what the command prints: the
#     output (stdout and stderr, runs of blanks as one) must contain TEXT,
#     where "..." stands for anything; "# => exit N: TEXT" also promises
#     exit code N;
#   - a command ending in "&" runs in the background, as typed;
#   - other comments are prose.
# A block preceded by "<!-- doc-test: skip (why) -->" is not run; every
# other sh block is. A block must stop what it starts: processes left
# running when it ends fail it (and are killed).
#
# Each block runs in its own bash, as a newcomer pasting it into a fresh
# terminal would. Exit 0 when every block kept its promises; 1 otherwise,
# with the failing step, its output and the block's log.
set -uo pipefail

if (($# < 2)); then
  echo "usage: $0 BUILD_DIR FILE.md..." >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd) || exit 2
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/docs/processes.sh
. "$repo/tests/docs/processes.sh"
block_timeout_s=${DOC_BLOCK_TIMEOUT_S:-300}

# The blocks use fixed ports, as a newcomer would; something already
# listening on one of them would answer in their place.
busy=()
for port in ${DOC_BLOCK_PORTS:-7070 7071 7072 7073 7074 7075 7076 7171 7172 7173 7174}; do
  if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then busy+=("$port"); fi
done
if ((${#busy[@]})); then
  echo "doc-blocks: something already listens on 127.0.0.1 port(s) ${busy[*]}, which the blocks use; stop it first" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-doc-blocks.XXXXXX")
cleanup() {
  [ -n "${block_pid:-}" ] && kill -KILL -- "-$block_pid" 2>/dev/null
  rm -rf -- "$work"
}
trap cleanup EXIT

root=$work/root
mkdir -p "$root"
cp -r "$repo/examples" "$repo/deploy" "$root/"
ln -s "$build_dir" "$root/build"

# Splits FILE.md into blocks/NNN.sh (+ NNN.where: "FILE:LINE"), skipping
# marked ones.
extract() {
  awk -v out="$work/blocks" -v file="$1" -v start="$2" '
    BEGIN { n = start; inblock = 0; skip = 0 }
    /^<!-- doc-test: skip/ { skip = 1; next }
    /^```sh[ \t]*$/ && !inblock {
      inblock = 1
      if (skip) { skipping = 1 } else {
        n++; f = sprintf("%s/%03d.sh", out, n)
        printf "%s:%d\n", file, NR > sprintf("%s/%03d.where", out, n)
        printf "" > f
        skipping = 0
      }
      skip = 0
      next
    }
    /^```/ && inblock { inblock = 0; if (!skipping) close(f); next }
    inblock && !skipping { print >> f; next }
    /[^ \t]/ { skip = skip && /^<!--/ }
    END { print n }
  ' "$1"
}

mkdir -p "$work/blocks"
count=0
for md in "$@"; do
  [ -f "$repo/$md" ] || { echo "doc-blocks: no $md" >&2; exit 2; }
  count=$(extract "$repo/$md" "$count")
done

# The steps of one block: logical lines (continuations joined); each
# foreground command becomes "doc_step N EXIT TEXT" over steps/N.sh.
translate() {
  local block=$1 dir=$2 line="" raw cmd expect code n=0
  mkdir -p "$dir/steps"
  {
    cat "$repo/tests/docs/doc_step.sh"
    while IFS= read -r raw || [ -n "$raw" ]; do
      if [[ $raw =~ \\$ ]]; then
        line+="${raw%\\} "
        continue
      fi
      line+=$raw
      cmd=$line
      line=""
      expect=""
      code=0
      # The promise: everything after " # => ".
      if [[ $cmd == *" # => "* ]]; then
        expect=${cmd#*" # => "}
        cmd=${cmd%%" # => "*}
        if [[ $expect =~ ^exit\ ([0-9]+):\ ?(.*)$ ]]; then
          code=${BASH_REMATCH[1]}
          expect=${BASH_REMATCH[2]}
        fi
      fi
      local bare=${cmd%%" #"*}
      bare=${bare%"${bare##*[![:space:]]}"}
      [[ -z ${bare//[[:space:]]/} || $bare =~ ^[[:space:]]*# ]] && continue
      if [[ $bare == *"&" && $bare != *"&&" ]]; then
        printf '%s\n' "$cmd"
        continue
      fi
      n=$((n + 1))
      printf '%s\n' "$cmd" >"$dir/steps/$n.sh"
      printf 'doc_step %d %d %q\n' "$n" "$code" "$expect"
    done <"$block"
    echo "doc_end"
  } >"$dir/run.sh"
}


# Processes of a session, but its leader.
session_members() {
  ps -eo pid=,sid= | awk -v s="$1" '$2 == s && $1 != s { print $1 }'
}

failed=0
for ((b = 1; b <= count; b++)); do
  id=$(printf '%03d' "$b")
  where=$(<"$work/blocks/$id.where")
  dir=$work/run/$id
  mkdir -p "$dir"
  translate "$work/blocks/$id.sh" "$dir"
  echo "doc-blocks: block $b of $count ($where)"
  (cd "$root" && DOC_STEPS="$dir/steps" exec setsid bash "$dir/run.sh" >"$dir/log" 2>&1 </dev/null) &
  block_pid=$!
  timed_out=0
  for ((t = 0; t < block_timeout_s * 10; t++)); do
    alive "$block_pid" || break
    sleep 0.1
  done
  if alive "$block_pid"; then
    timed_out=1
    kill -KILL -- "-$block_pid" 2>/dev/null
  fi
  wait "$block_pid"
  rc=$?
  # What the block stopped may take a moment to exit (keeld finishing its
  # writes after SIGTERM).
  for ((t = 0; t < 300; t++)); do
    left=$(session_members "$block_pid")
    [ -z "$left" ] && break
    sleep 0.1
  done
  if [ -n "$left" ]; then
    ps -o pid=,args= -p "$(echo $left | tr ' ' ',')" >>"$dir/log" 2>/dev/null
    kill -KILL $left 2>/dev/null
  fi
  if ((timed_out)); then
    echo "doc-blocks: FAILED block $b ($where): still running after ${block_timeout_s}s"
  elif ((rc != 0)); then
    echo "doc-blocks: FAILED block $b ($where)"
  elif [ -n "$left" ]; then
    echo "doc-blocks: FAILED block $b ($where): it left processes running (stop what a block starts)"
    rc=1
  else
    echo "doc-blocks: ok"
    continue
  fi
  failed=$((failed + 1))
  sed 's/^/    /' "$dir/log"
done
block_pid=
echo "doc-blocks: $count blocks, $failed failed"
((failed == 0))
