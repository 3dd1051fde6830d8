#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for Keel: installs the Debian packages,
# configures and builds (Release by default) into ./build. Idempotent: run it
# again after pulling and it only rebuilds what changed.
#
#   ./deploy/setup.sh                 # Release build in ./build
#   BUILD_TYPE=Debug ./deploy/setup.sh
#   BUILD_DIR=build-asan CMAKE_ARGS=-DKEEL_SANITIZE=ON ./deploy/setup.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-build}
build_type=${BUILD_TYPE:-Release}

# libssl-dev: https for model providers and http tools; ca-certificates: the
# system trust store that verifies their certificates; libseccomp-dev: the
# exec tool sandbox's system call filter; curl: the README's HTTP quick
# start, which the tests run as written; libraft-dev (with libuv1-dev, which
# its headers include) and pkgconf: consensus for replicated groups;
# nftables and iproute2: the partition tests cut links inside a private
# network namespace.
packages=(g++ cmake ninja-build ccache pkgconf libcaf-dev librocksdb-dev libboost-dev
          nlohmann-json3-dev doctest-dev libssl-dev ca-certificates libseccomp-dev curl
          libraft-dev libuv1-dev nftables iproute2)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cd "$root"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${CMAKE_ARGS:-}
# Two compilers at once need ~2 GB; more jobs than cores only thrash.
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_type into $root/$build_dir (keeld, keel, tests, benchmarks)"
