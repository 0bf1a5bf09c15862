#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, clang 14 + ASan + UBSan) in build-fuzz/ and runs each
# for SECONDS (default 60), starting from its seed corpus in tests/fuzz/corpus/<target>/.
#   scripts/fuzz.sh                    # every target, 60 s each
#   scripts/fuzz.sh 20                 # CI: every target briefly (5 x 20 s over the cores, after the build)
#   scripts/fuzz.sh 300 gguf_fuzz      # one target, longer
#   HEARTH_FUZZ_JOBS=1 scripts/fuzz.sh # build with one job (default: all cores)
# Prints executions, new coverage inputs and crashes per target; exits 1 if any target crashed
# (its crashing inputs are copied to build-fuzz/findings/<target>/: add them to the target's corpus as
# regress-* once fixed). The fuzzers write only to a temporary directory; tests/ is never changed.
# Installs clang-14, libclang-rt-14-dev (libFuzzer) and llvm-14 (symbolizer) if missing (Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
case "$seconds" in ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_fuzz wire_fuzz openai_json_fuzz http_request_fuzz tokenizer_fuzz)

# shellcheck source=scripts/lib/apt.sh
. scripts/lib/apt.sh
apt_ensure fuzz clang-14 libclang-rt-14-dev llvm-14

build=build-fuzz
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_FUZZ=ON \
  -DHEARTH_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target hearth_fuzzers -j "${HEARTH_FUZZ_JOBS:-$(nproc)}"

work=$(mktemp -d /tmp/hearth-fuzz.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-14/bin/llvm-symbolizer}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# One target: its summary row in $work/$t/row, and $work/$t/failed if it crashed.
fuzz_target() {
  local t=$1 bin seeds n_seeds dict rc execs rate cov n_corpus crashes slow note
  bin="$build/fuzz/$t"
  seeds="tests/fuzz/corpus/$t"
  # The fuzzer grows a copy of the seeds; new inputs stay in the temporary directory.
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  cp "$seeds"/* "$work/$t/corpus/" 2>/dev/null || true
  n_seeds=$(find "$work/$t/corpus" -type f | wc -l)
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  echo "fuzz: $t for ${seconds} s from $n_seeds seeds" >&2
  rc=0
  "$bin" "$work/$t/corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/$t/artifacts/" -print_final_stats=1 >"$work/$t/log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t/log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t/log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1 | cut -d' ' -f2 || true)
  n_corpus=$(find "$work/$t/corpus" -type f | wc -l)
  # crash-, leak-, timeout-, oom-: findings; slow-unit- (over 10 s, libFuzzer carries on): reported only.
  crashes=$(find "$work/$t/artifacts" -type f ! -name 'slow-unit-*' | wc -l)
  slow=$(find "$work/$t/artifacts" -type f -name 'slow-unit-*' | wc -l)
  if [ "$slow" -gt 0 ]; then
    mkdir -p "$build/findings/$t"
    cp "$work/$t/artifacts"/slow-unit-* "$build/findings/$t/"
    echo "fuzz: $t: $slow input(s) took over 10 s (copied to $build/findings/$t/)" >&2
  fi
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    touch "$work/$t/failed"
    mkdir -p "$build/findings/$t"
    cp "$work/$t/artifacts"/* "$build/findings/$t/" 2>/dev/null || true
    cp "$work/$t/log" "$build/findings/$t/log.txt"
    echo "fuzz: $t FAILED (exit $rc); log and inputs in $build/findings/$t/:" >&2
    grep -m1 -A25 -E '^==[0-9]+==ERROR|runtime error|deadly signal|ERROR: libFuzzer' "$work/$t/log" >&2 || tail -n 30 "$work/$t/log" >&2
  fi
  note=""
  [ "$rc" -ne 0 ] && note=" (exit $rc)"
  [ "$slow" -gt 0 ] && note="$note, $slow slow"
  echo "| $t | $seconds | ${execs:-?} | ${rate:-?} | ${cov:-?} | $n_seeds -> $n_corpus | $crashes$note |" >"$work/$t/row"
}

for t in "${targets[@]}"; do
  [ -x "$build/fuzz/$t" ] || { echo "fuzz: no target '$t'" >&2; exit 2; }
done
# A target is one process on one core: as many at once as there are cores (CI's two halve the
# phase's wall time).
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$(nproc)" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_target "$t" &
  running=$((running + 1))
done
wait

failed=0
rows=()
for t in "${targets[@]}"; do
  [ ! -e "$work/$t/failed" ] || failed=1
  rows+=("$(cat "$work/$t/row" 2>/dev/null || echo "| $t | $seconds | ? | ? | ? | ? | did not finish |")")
  [ -e "$work/$t/row" ] || failed=1
done

echo
echo "| target | seconds | executions | exec/s | coverage (edges) | corpus | crashes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
exit "$failed"
