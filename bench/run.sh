#!/usr/bin/env bash
# Runs every benchmark and writes bench/results/<name>.json.
#
#   bench/run.sh            full scale (~16 min, 7 of them turn_overhead)
#   bench/run.sh --quick    scaled down, a smoke run (well under a minute)
#
# BUILD_DIR (default: build, a Release build) must hold bench/<name>;
# missing programs are built first with `cmake --build` (JOBS, default 1).
# Data goes to temp dirs under ${TMPDIR:-/tmp}, removed afterwards.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build_dir="${BUILD_DIR:-$root/build}"
[[ "$build_dir" = /* ]] || build_dir="$root/$build_dir"
results="$here/results"
quick=0

for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help)
      sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

benches=(hibernate_resume step_throughput memory turn_overhead ledger_growth cluster_messaging
         replay_speed fork_cost exec_sandbox_cost replication)

missing=()
for b in "${benches[@]}"; do
  [[ -x "$build_dir/bench/$b" ]] || missing+=("keel_bench_$b")
done
if ((${#missing[@]})); then
  if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
    echo "run.sh: $build_dir is not a configured build dir; configure it first, e.g." >&2
    echo "  cmake -S $root -B $build_dir -G Ninja -DCMAKE_BUILD_TYPE=Release" >&2
    exit 1
  fi
  build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt")"
  [[ "$build_type" == Release ]] || echo "run.sh: warning: $build_dir is a '$build_type' build" >&2
  for t in "${missing[@]}"; do
    cmake --build "$build_dir" --target "$t" -j "${JOBS:-1}"
  done
fi

mkdir -p "$results"
export TMPDIR="${TMPDIR:-/tmp}"

if ((quick)); then
  hibernate_args=(--agents 1000)
  step_args=(--levels 1,10,100,1000 --duration-s 1 --warmup-s 0.2 --fsync-samples 300)
  memory_args=(--agents 5000 --startup-agents 50000 --startup-runs 1)
  turn_args=(--turns 200 --warmup-turns 20 --levels 1,10,100 --duration-s 1 --warmup-s 0.2)
  ledger_args=(--checkpoints 10,100)
  cluster_args=(--duration-s 0.5 --warmup-s 0.2 --local-s 0.3 --hibernated-agents 200
                --forward-samples 100 --idle-s 0 --fsync-samples 100)
  replay_args=(--events 1000 --reps 3 --cold-reps 1)
  fork_args=(--at 100,1000 --reps 2 --fsync-samples 50)
  sandbox_args=(--calls 30)
  replication_args=(--idle-s 3 --step-blocks 1 --step-messages 50 --agents 100 --clients 8
                    --warmup-s 0.5 --duration-s 2 --failover-rounds 1)
else
  hibernate_args=()
  step_args=()
  memory_args=()
  turn_args=()
  ledger_args=()
  cluster_args=()
  replay_args=()
  fork_args=()
  sandbox_args=()
  replication_args=()
fi

run_one() {
  local name="$1"; shift
  local out="$results/$name.json"
  echo
  echo "### $name $*"
  local t0=$SECONDS
  "$build_dir/bench/$name" --json "$out" "$@"
  echo "### $name finished in $((SECONDS - t0)) s -> ${out#"$root"/}"
}

run_one hibernate_resume "${hibernate_args[@]}"
run_one step_throughput "${step_args[@]}"
run_one memory "${memory_args[@]}"
run_one turn_overhead "${turn_args[@]}"
run_one ledger_growth "${ledger_args[@]}"
run_one cluster_messaging "${cluster_args[@]}"
run_one replay_speed "${replay_args[@]}"
run_one fork_cost "${fork_args[@]}"
run_one exec_sandbox_cost "${sandbox_args[@]}"
run_one replication "${replication_args[@]}"
