#!/usr/bin/env bash
# Runs the fuzz targets (built by `make fuzz-build`) one after the other, SECONDS each, and
# prints per target: executions, executions per second, coverage (edges), features, corpus
# size and crashes. Exit code 1 if any target crashed (inputs under $FUZZ_OUT/artifacts/) or
# failed otherwise (a fuzzer that exits non-zero without a crash input, e.g. killed).
# SIGINT/SIGTERM (Ctrl-C, `kill PID` of this script) stop the running fuzzers (libFuzzer prints
# its figures and exits), start no further target, print the table of what ran and exit 130
# (INT) / 143 (TERM) saying "interrupted" — an interruption is not a crash. Interrupting one
# fuzzer by its own pid (`kill -INT FUZZER_PID`) counts the same for its target. Under `flock`,
# signal this script, not flock (flock does not pass signals on to its command).
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

# The whole script is one compound command, parsed before it runs: bash reads a script as it
# executes it, so editing this file (a rebase, a checkout) under a running batch would otherwise
# feed the rest of the new file to the old run.
{
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:?usage: scripts/fuzz.sh SECONDS TARGET...}
shift
out=${FUZZ_OUT:-target/fuzz}
bin=${FUZZ_BIN_DIR:-fuzz/target/x86_64-unknown-linux-gnu/release}
rows="target\texecs\texec/s\tcov\tfeatures\tcorpus\tcrashes\tseconds\tend\n"
crashed=() failed=() interrupted=() notrun=()
signal=
mkdir -p "$out/logs"
rm -f "$out/logs/interrupted"

# A signal to this shell: remember it (in a file, which the targets' subshells of FUZZ_JOBS > 1
# see too) and pass SIGTERM on to the children: the fuzzers (libFuzzer stops, prints its final
# stats, exits 72) or, with FUZZ_JOBS > 1, the subshells running them (which pass it on again).
# TERM, not INT: a non-interactive shell starts its background children with SIGINT ignored.
on_signal() {
  signal=$1
  echo "$1" >"$out/logs/interrupted"
  local p
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null; done
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

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

# One target: its log, table row and how it ended (<t>.log, <t>.row, <t>.end) under $out/logs/.
run_target() {
  local t=$1 corpus art log dirs start rc took last execs eps cov ft corp crashes end pid
  # (a subshell of FUZZ_JOBS > 1 resets the traps: it passes a signal on to its fuzzer too)
  trap 'on_signal INT' INT
  trap 'on_signal TERM' TERM
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
  # -reload=0: libFuzzer re-lists and stats its whole corpus directory every second by default
  # (to pick up inputs other processes add; one fuzzer per corpus here): with ~20,000 inputs that
  # took 8-11% of the CPU, and more of a fuzzer at nice 19 that gets a fraction of a core, since
  # the re-read costs the same per wall-clock second (docs/FUZZING.md).
  # In the background and waited for, so that a signal to this shell runs its trap at once.
  DVFUZZ_SEED_DIR=$corpus "$bin/$t" "${dirs[@]}" -max_total_time="$secs" -print_final_stats=1 \
    -timeout=10 -malloc_limit_mb=1024 -entropic=0 -reload=0 -artifact_prefix="$art/" $(target_args "$t") \
    ${FUZZ_ARGS:-} \
    >"$log" 2>&1 &
  pid=$!
  # `wait` returns early (> 128) when a trap ran; wait again until the fuzzer has exited.
  while :; do
    wait "$pid"
    rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  took=$(( $(date +%s) - start ))
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(num 'stat::number_of_executed_units:' "$log")
  eps=$(num 'stat::average_exec_per_sec:' "$log")
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || true)
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
  corp=$(find "$corpus" -type f | wc -l)
  crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  # How it ended: a crash input saved; interrupted (libFuzzer's "run interrupted", exit 72, or
  # a signal to this script); another non-zero exit (no input saved: not called a crash).
  if [ "$crashes" -ne 0 ]; then
    end=crash
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5
  elif [ "$rc" -eq 0 ]; then
    end=ok
  elif [ -e "$out/logs/interrupted" ] || grep -q 'libFuzzer: run interrupted' "$log"; then
    end=interrupted
  else
    end="exit-$rc"
    tail -n 3 "$log"
  fi
  echo "$end" >"$out/logs/$t.end"
  printf '%s' "$t\t${execs:--}\t${eps:--}\t${cov:--}\t${ft:--}\t$corp\t$crashes\t$took\t$end\n" >"$out/logs/$t.row"
}

jobs=${FUZZ_JOBS:-1}
for t in "$@"; do
  rm -f "$out/logs/$t.row" "$out/logs/$t.end" "$out/logs/$t.failed"
done
for t in "$@"; do
  [ -e "$out/logs/interrupted" ] && break
  if [ "$jobs" -gt 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    [ -e "$out/logs/interrupted" ] && break
    run_target "$t" &
  else
    run_target "$t"
  fi
done
# `wait` returns early when a trap ran: wait until every target's subshell has ended.
while [ -n "$(jobs -rp)" ]; do wait; done
[ -z "$signal" ] && [ -e "$out/logs/interrupted" ] && signal=$(cat "$out/logs/interrupted")
for t in "$@"; do
  end=$(cat "$out/logs/$t.end" 2>/dev/null || echo "not-run")
  rows+=$(cat "$out/logs/$t.row" 2>/dev/null || printf '%s' "$t\t-\t-\t-\t-\t-\t-\t-\t$end\n")
  case $end in
    ok) ;;
    crash) crashed+=("$t") ;;
    interrupted) interrupted+=("$t") ;;
    not-run) notrun+=("$t") ;;
    *) failed+=("$t($end)") ;;
  esac
done

printf "\n$rows" | column -t -s "$(printf '\t')"
status=0
if [ ${#crashed[@]} -ne 0 ]; then
  echo "fuzz: crashes in: ${crashed[*]} (inputs under $out/artifacts/)" >&2
  status=1
fi
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: failed without a crash input: ${failed[*]} (logs under $out/logs/)" >&2
  status=1
fi
if [ -n "$signal" ] || [ ${#interrupted[@]} -ne 0 ]; then
  echo "fuzz: interrupted${signal:+ (SIG$signal)}: ${interrupted[*]:-none} stopped early${notrun[*]:+, not run: ${notrun[*]}}; their figures above are up to the interruption, not a crash" >&2
  [ "$status" -eq 0 ] && { [ "$signal" = TERM ] && status=143 || status=130; }
elif [ ${#notrun[@]} -ne 0 ]; then
  echo "fuzz: not run: ${notrun[*]}" >&2
  status=1
fi
exit "$status"
}
