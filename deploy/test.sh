#!/usr/bin/env bash
# Runs every test (unit, integration, and the README's blocks as written,
# via ctest). On a machine without a build it first sets up what is missing
# (deploy/setup.sh: packages, configure, build); otherwise it brings the
# build up to date. Ends with ctest's summary line.
#
#   ./deploy/test.sh                  # tests in ./build
#   BUILD_DIR=build-asan ./deploy/test.sh
#   ./deploy/test.sh -R counter       # extra arguments go to ctest
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-build}
cd "$root"
if [ -f "$build_dir/CMakeCache.txt" ]; then
  cmake --build "$build_dir" -j "$(nproc)"
else
  "$root/deploy/setup.sh"
fi
exec ctest --test-dir "$build_dir" --output-on-failure --timeout 900 "$@"
