#!/usr/bin/env bash
# Configures and builds Tessera into build/ (the binary is build/tessera).
# BUILD_DIR and extra CMake arguments may be given: scripts/build.sh build-asan -DTESSERA_SANITIZE=ON
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
