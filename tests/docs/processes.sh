# Shell functions the scripts in tests/docs/ share (sourced).

# Whether process $1 runs: exists and is not a zombie. A node outlives the
# script that started it and is reaped by init, maybe not at once, and a
# finished child stays a zombie until waited for: kill -0 says yes to both.
alive() {
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
