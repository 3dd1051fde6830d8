#!/usr/bin/env bash
# Checks that the code's layering is the build's: every #include "DIR/..."
# in a source folder names a folder whose library that folder's libraries
# link (directly or through others), the folders link without cycles, and
# each folder has its CMakeLists.txt and README.md.
#
#   tools/check_layers.sh [BUILD_DIR/layer_graph.txt [SOURCE_DIR]]
#
# Without arguments it reads build/layer_graph.txt of this checkout.
# The graph is written at configure time from the CMake targets
# (cmake/LayerGraph.cmake), so the rule cannot drift from the build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
graph=${1:-$root/build/layer_graph.txt}
if [ ! -f "$graph" ]; then
  echo "check_layers: no $graph; configure a build first (./deploy/setup.sh, or cmake -S . -B build)," >&2
  echo "  which writes it, or pass BUILD_DIR/layer_graph.txt" >&2
  exit 2
fi
graph=$(realpath "$graph")
cd "${2:-$root}"

declare -A folder_of deps targets_of
folders=()
while read -r dir target rest; do
  [ -n "$dir" ] || continue
  [[ " ${folders[*]} " == *" $dir "* ]] || folders+=("$dir")
  [ "$target" = "-" ] && continue
  folder_of[$target]=$dir
  deps[$target]=$rest
  targets_of[$dir]+=" $target"
done <"$graph"

# The folders a folder may include: its own and those of every library its
# libraries reach.
declare -A allowed
for dir in "${folders[@]}"; do
  seen=" "
  todo=(${targets_of[$dir]:-})
  while ((${#todo[@]})); do
    t=${todo[0]}
    todo=("${todo[@]:1}")
    [[ "$seen" == *" $t "* ]] && continue
    seen+="$t "
    todo+=(${deps[$t]:-})
  done
  reach=" $dir "
  for t in $seen; do
    f=${folder_of[$t]:-}
    [ -n "$f" ] && [[ "$reach" != *" $f "* ]] && reach+="$f "
  done
  allowed[$dir]=$reach
done

bad=0
# Folders that reach each other form a cycle.
for a in "${folders[@]}"; do
  for b in "${folders[@]}"; do
    [[ "$a" < "$b" ]] || continue
    if [[ "${allowed[$a]}" == *" $b "* && "${allowed[$b]}" == *" $a "* ]]; then
      echo "layering: $a and $b link each other (a cycle)"
      bad=1
    fi
  done
done

# The folder an include path is in: the longest folder of the graph that
# is a prefix of it ("net/api/support.hpp" is in net/api, not net).
folder_of_path() {
  local path=$1 best=""
  for f in "${folders[@]}"; do
    if [[ "$path" == "$f/"* && ${#f} -gt ${#best} ]]; then best=$f; fi
  done
  printf '%s' "$best"
}

checked=0
for dir in "${folders[@]}"; do
  for required in CMakeLists.txt README.md; do
    if [ ! -f "$dir/$required" ]; then
      echo "layering: $dir has no $required"
      bad=1
    fi
  done
  for file in "$dir"/*.cpp "$dir"/*.hpp "$dir"/*.in; do
    [ -f "$file" ] || continue
    while IFS=: read -r line inc; do
      target_folder=$(folder_of_path "$inc")
      [ -n "$target_folder" ] || continue
      checked=$((checked + 1))
      if [[ "${allowed[$dir]}" != *" $target_folder "* ]]; then
        echo "layering: $file:$line includes $inc, but $dir's libraries do not link $target_folder's"
        bad=1
      fi
    done < <(grep -nE '^#include +"' "$file" | sed -E 's/^([0-9]+):#include +"([^"]+)".*/\1:\2/')
  done
done

# A folder of sources the build does not add escapes the check.
for dir in */; do
  dir=${dir%/}
  case $dir in tests | bench | tools | cmake | build* | deploy | docs | examples) continue ;; esac
  if [[ " ${folders[*]} " != *" $dir "* ]] && compgen -G "$dir/*.[ch]pp" >/dev/null; then
    echo "layering: $dir has sources but the build adds no targets from it"
    bad=1
  fi
done

if [ $bad -eq 0 ]; then
  echo "layering: ok (${#folders[@]} folders, $checked includes checked against the build's links)"
fi
exit $bad
