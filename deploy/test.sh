#!/usr/bin/env bash
# Runs every test (unit and integration, via ctest) against the build made
# by deploy/setup.sh. Ends with ctest's summary line.
#
#   ./deploy/test.sh                  # tests in ./build
#   BUILD_DIR=build-asan ./deploy/test.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-build}
cd "$root"
cmake --build "$build_dir" -j "$(nproc)"
exec ctest --test-dir "$build_dir" --output-on-failure --timeout 900 "$@"
