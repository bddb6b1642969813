#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit tests and real-mount
# integration tests on the release build, then the unit tests again under
# AddressSanitizer and UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/install-deps.sh
scripts/build.sh build
scripts/build.sh build-asan -DTESSERA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug

echo "== unit and integration tests (release build)"
(cd build && ctest --output-on-failure --timeout 900)
echo "== unit tests under ASan+UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -L unit --timeout 600)
echo "== all tests passed in $(( $(date +%s) - start ))s"
