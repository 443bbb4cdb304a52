#!/usr/bin/env bash
# Runs the fuzz targets (built by `make fuzz-build`) one after the other, SECONDS each, and
# prints per target: executions, executions per second, coverage (edges), features, corpus
# size and crashes. Exit code 1 if any target crashed (inputs under $FUZZ_OUT/artifacts/).
#
# usage: scripts/fuzz.sh SECONDS TARGET...
# env:   FUZZ_OUT     corpus/<target>, artifacts/<target>, logs/<target>.log (default target/fuzz)
#        FUZZ_BIN_DIR the fuzz binaries (default fuzz/target/x86_64-unknown-linux-gnu/release)
#        FUZZ_ARGS    extra libFuzzer flags
#        FUZZ_JOBS    targets run at once (default 1). libFuzzer uses one core per target, so on
#                     an otherwise idle N-core machine N jobs give each target the same CPU time
#                     in SECONDS as one job would, in 1/N of the wall time (`make fuzz-smoke`).
#
# Each target's corpus starts from the inputs it generates itself (written by the binary into
# the corpus directory when DVFUZZ_SEED_DIR is set) and the committed seeds in fuzz/seeds/<t>/.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: scripts/fuzz.sh SECONDS TARGET...}
shift
out=${FUZZ_OUT:-target/fuzz}
bin=${FUZZ_BIN_DIR:-fuzz/target/x86_64-unknown-linux-gnu/release}
rows="target\texecs\texec/s\tcov\tfeatures\tcorpus\tcrashes\tseconds\n"
failed=()

num() { grep -o "$1 *[0-9]*" "$2" | tail -1 | grep -o '[0-9]*$' || true; }

# libFuzzer options of one target, before FUZZ_ARGS (a later flag wins, so FUZZ_ARGS overrides).
target_args() {
  case $1 in
    # SSE events are a few hundred bytes, but the recorded streams (16 KiB) would set max_len and
    # the parser's time grows with the input: 4 KiB holds several events (docs/FUZZING.md: 1.45x
    # less CPU per execution at equal coverage).
    sse) echo "-max_len=4096" ;;
  esac
}

# One target: its log, and its table row (and a `failed` marker) under $out/logs/.
run_target() {
  local t=$1 corpus art log dirs start rc took last execs eps cov ft corp crashes
  corpus=$out/corpus/$t
  art=$out/artifacts/$t
  log=$out/logs/$t.log
  mkdir -p "$corpus" "$art" "$out/logs"
  dirs=("$corpus")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  echo "=== fuzz: $t for ${secs}s (log $log)"
  start=$(date +%s)
  # -timeout: one input running 10 s is a hang; -malloc_limit_mb: one allocation of 1 GiB
  # (a size a remote party chose) is a crash; -rss_limit_mb stays at libFuzzer's 2 GiB.
  # -entropic=0: entropic's per-feature frequency bookkeeping took 17-35% of the CPU of the slow
  # targets; without it they run 1.2-1.6x more executions per CPU second (docs/FUZZING.md).
  # FUZZ_ARGS=-entropic=1 brings it back.
  DVFUZZ_SEED_DIR=$corpus "$bin/$t" "${dirs[@]}" -max_total_time="$secs" -print_final_stats=1 \
    -timeout=10 -malloc_limit_mb=1024 -entropic=0 -artifact_prefix="$art/" $(target_args "$t") \
    ${FUZZ_ARGS:-} \
    >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(num 'stat::number_of_executed_units:' "$log")
  eps=$(num 'stat::average_exec_per_sec:' "$log")
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
  corp=$(find "$corpus" -type f | wc -l)
  crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    touch "$out/logs/$t.failed"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5
  fi
  printf '%s' "$t\t${execs:--}\t${eps:--}\t${cov:--}\t${ft:--}\t$corp\t$crashes\t$took\n" >"$out/logs/$t.row"
}

jobs=${FUZZ_JOBS:-1}
mkdir -p "$out/logs"
for t in "$@"; do
  rm -f "$out/logs/$t.row" "$out/logs/$t.failed"
  if [ "$jobs" -gt 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    run_target "$t" &
  else
    run_target "$t"
  fi
done
wait
for t in "$@"; do
  rows+=$(cat "$out/logs/$t.row" 2>/dev/null || printf '%s' "$t\t-\t-\t-\t-\t-\t-\t-\n")
  if [ -e "$out/logs/$t.failed" ] || [ ! -e "$out/logs/$t.row" ]; then failed+=("$t"); fi
done

printf "\n$rows" | column -t -s "$(printf '\t')"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: crashes in: ${failed[*]} (inputs under $out/artifacts/)" >&2
  exit 1
fi
