#!/usr/bin/env bash
# Sets up if needed, builds, and runs the whole test suite through ctest, then the same suite
# built with AddressSanitizer + UndefinedBehaviorSanitizer. Exit status = result.
#   scripts/test.sh            # everything
#   scripts/test.sh -L stage   # extra arguments go to both ctest runs (e.g. one suite)
#   HEARTH_SKIP_SANITIZE=1 scripts/test.sh   # quick local run without the sanitizer build
set -euo pipefail
cd "$(dirname "$0")/.."

# CI treats warnings as errors.
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
HEARTH_CMAKE_ARGS="-DHEARTH_WERROR=$werror ${HEARTH_CMAKE_ARGS:-}" scripts/setup.sh
scripts/test_tools.sh  # node + chromium (apt-get) and `npm ci --prefix tests/openai`, for tests/http_test.cpp

echo "== tests (Release)" >&2
ctest --test-dir build --output-on-failure -j 2 "$@"

if [ -z "${HEARTH_SKIP_SANITIZE:-}" ]; then
  echo "== tests (ASan + UBSan)" >&2
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_SANITIZE=ON -DHEARTH_WERROR=$werror >/dev/null
  cmake --build build-asan -j 2
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j 2 "$@"
fi
