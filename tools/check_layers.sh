#!/usr/bin/env bash
# Fails when a layer includes a layer above it (dependencies point down:
# base <- config, persistence <- agent <- actors <- net <- apps).
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A may=(
  [base]=""
  [config]="base"
  [persistence]="base"
  [agent]="base config"
  [actors]="base config persistence agent"
  [net]="base config persistence agent actors"
)
bad=0
for layer in "${!may[@]}"; do
  for other in base config persistence agent actors net apps; do
    [ "$other" = "$layer" ] && continue
    case " ${may[$layer]} " in *" $other "*) continue ;; esac
    if hits=$(grep -rnE "#include +\"$other/" "$layer" 2>/dev/null); then
      echo "layering: $layer must not include $other/:"
      echo "$hits"
      bad=1
    fi
  done
done
[ $bad -eq 0 ] && echo "layering: ok"
exit $bad
