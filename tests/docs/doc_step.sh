# The functions a doc block's script runs its steps with (sourced first by
# every script tests/docs/run_doc_blocks.sh writes). A step runs in the
# block's own shell, so exports, cd and background jobs carry over to the
# next, as when pasted into a terminal.

# Runs step N (the file $DOC_STEPS/N.sh); fails the block unless it exits
# WANT_CODE and its output holds EXPECT ("..." matching anything, runs of
# blanks compared as one).
doc_step() {
  local n=$1 want_code=$2 expect=$3 rc out rest piece
  printf '$ %s\n' "$(<"$DOC_STEPS/$n.sh")"
  # shellcheck disable=SC1090
  . "$DOC_STEPS/$n.sh" >"$DOC_STEPS/$n.out" 2>&1 </dev/null
  rc=$?
  cat "$DOC_STEPS/$n.out"
  if ((rc != want_code)); then
    printf 'doc-step: exit code %d, the doc says %d\n' "$rc" "$want_code"
    exit 1
  fi
  [ -z "$expect" ] && return 0
  out=$(tr -s ' \t' '  ' <"$DOC_STEPS/$n.out")
  rest=$(printf '%s' "$expect" | tr -s ' \t' '  ')
  while [ -n "$rest" ]; do
    piece=${rest%%...*}
    if [ "$piece" = "$rest" ]; then rest=""; else rest=${rest#*...}; fi
    piece=${piece# }
    piece=${piece% }
    [ -z "$piece" ] && continue
    if [[ $out != *"$piece"* ]]; then
      printf 'doc-step: the output does not hold "%s" (the doc promises: %s)\n' "$piece" "$expect"
      exit 1
    fi
    out=${out#*"$piece"}
  done
}

doc_end() {
  echo "doc-step: done"
}
