#!/usr/bin/env bash
# Sets up if needed, builds, and runs the whole test suite through ctest; the arm64 build's suites
# under qemu-aarch64 (and, natively, a cluster with an arm64 stage); the same suite built with
# AddressSanitizer + UndefinedBehaviorSanitizer; and every libFuzzer target briefly. Exit status =
# result.
#   scripts/test.sh            # everything
#   scripts/test.sh -L stage   # extra arguments go to every ctest run (e.g. one suite)
#   scripts/test.sh -LE arm64  # without the arm64 build and its suites
#   HEARTH_SKIP_SANITIZE=1 HEARTH_SKIP_FUZZ=1 scripts/test.sh   # a quicker local run
# With CI=true it also runs one round of scripts/chaos (HEARTH_SKIP_CHAOS=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each part says when it starts and how long the run has taken so far (CI's time budget).
phase() { echo "== $1 ($(date +%T), ${SECONDS} s in)" >&2; }

# CI treats warnings as errors.
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
phase "setup and build (Release)"
HEARTH_CMAKE_ARGS="-DHEARTH_WERROR=$werror ${HEARTH_CMAKE_ARGS:-}" scripts/setup.sh
scripts/test_tools.sh  # node + chromium (apt-get) and `npm ci --prefix tests/openai`, for tests/http_test.cpp
# Cross build + the arm64 suites under qemu (label arm64); first, because the native mixed_arch
# test runs build-arm64/bin/hearthd as a stage.
phase "arm64 cross build and suites"
scripts/test-arm64.sh "$@"

phase "tests (Release)"
ctest --test-dir build --output-on-failure -j 2 "$@"

# The chaos tries (scripts/chaos) are not part of a local run; CI runs one round of them.
if [ "${CI:-}" = "true" ] && [ -z "${HEARTH_SKIP_CHAOS:-}" ]; then
  phase "chaos (one round)"
  scripts/chaos --short
fi

if [ -z "${HEARTH_SKIP_SANITIZE:-}" ]; then
  phase "tests (ASan + UBSan)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DHEARTH_SANITIZE=ON -DHEARTH_WERROR=$werror >/dev/null
  cmake --build build-asan -j 2 --target hearth_tests  # and the hearth, hearthd it starts
  phase "tests (ASan + UBSan): built, running"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j 2 "$@"
fi

if [ -z "${HEARTH_SKIP_FUZZ:-}" ]; then
  phase "fuzzing (libFuzzer, 20 s per target)"
  scripts/fuzz.sh 20
fi
phase "done"
