#!/usr/bin/env bash
# The arm64 stage of the test suite: cross-builds build-arm64/ (scripts/build-arm64.sh installs
# what is missing) and runs, through ctest under qemu-aarch64, the suites that start no daemon:
# kernels (every table this CPU model has: scalar, neon, neon-dotprod), the stories260K reference
# test, tokenizers, sampler, stage, ... (tests/CMakeLists.txt lists them; all labelled arm64).
# tests/mixed_arch_test.cpp, in the native suite, then runs build-arm64/bin/hearthd as a stage.
#   scripts/test-arm64.sh                 # build, then every emulated suite
#   scripts/test-arm64.sh -L kernels      # extra arguments go to ctest
#   scripts/test-arm64.sh -LE arm64       # does nothing, as `scripts/test.sh -LE arm64` means
#   HEARTH_SKIP_ARM64=1 scripts/test-arm64.sh   # does nothing
# qemu is no speed reference: nothing here measures speed.
set -euo pipefail
cd "$(dirname "$0")/.."

args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -LE | --label-exclude)
      re="${args[i + 1]:-}"
      if [[ arm64 =~ $re ]]; then
        echo "test-arm64: skipped (ctest arguments exclude label arm64)" >&2
        exit 0
      fi
      ;;
  esac
done
if [ -n "${HEARTH_SKIP_ARM64:-}" ]; then
  echo "test-arm64: skipped (HEARTH_SKIP_ARM64 is set)" >&2
  exit 0
fi

start=$SECONDS
# CI treats warnings as errors.
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
# Only what the suites run: the emulated suites' binary and the hearthd mixed_arch starts (the
# arm64 CLI is the native one's source, compiled by scripts/build-arm64.sh for users).
HEARTH_CMAKE_ARGS="-DHEARTH_WERROR=$werror ${HEARTH_CMAKE_ARGS:-}" scripts/build-arm64.sh hearthd hearth_tests

echo "== tests (arm64, under qemu-aarch64)" >&2
# Every arm64 library, the loader and libc included, comes from Debian multiarch (see
# cmake/aarch64-linux-gnu.cmake for why not the cross toolchain's libc).
QEMU_LD_PREFIX=/ ctest --test-dir build-arm64 --output-on-failure -j 2 "$@"
echo "test-arm64: done in $((SECONDS - start)) s (install, build, tests)" >&2
