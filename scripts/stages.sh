#!/usr/bin/env bash
# Runs make targets one after the other, stops at the first that fails, and prints the wall
# time of each (also on failure), so that a CI log shows where `make test`'s time goes.
#
# usage: scripts/stages.sh STAGE...   (called by `make test`; MAKE and MAKEFLAGS come from make)
#   TARGET    runs `make TARGET` in the foreground.
#   TARGET&   starts `make TARGET` in the background (output to target/stages/TARGET.log) and
#             goes on with the next stage: for network-bound installs beside CPU-bound compiles.
#   wait      waits for the background stages, prints their logs and stops if one failed. The
#             table shows each background stage's own wall time and the wait as its own row
#             (the total counts the foreground stages and the waits: the wall time).
set -uo pipefail
cd "$(dirname "$0")/.."

rows=""
total=0
rc=0
bg_names=()
bg_pids=()
bg_starts=()
logdir=target/stages

wait_background() {
  local i brc took status
  for i in "${!bg_pids[@]}"; do
    wait "${bg_pids[$i]}"
    brc=$?
    took=$(( $(cat "$logdir/${bg_names[$i]}.end") - bg_starts[$i] ))
    echo "=== background stage ${bg_names[$i]} (log $logdir/${bg_names[$i]}.log):"
    cat "$logdir/${bg_names[$i]}.log"
    status=ok
    [ "$brc" -ne 0 ] && { status="FAILED (exit $brc)"; rc=$brc; }
    rows+="${bg_names[$i]} (background)\t${took}\t$status\n"
  done
  bg_names=(); bg_pids=(); bg_starts=()
}

for stage in "$@"; do
  start=$(date +%s)
  if [ "$stage" = wait ]; then
    echo "=== stage: wait for ${bg_names[*]:-nothing}"
    wait_background
    took=$(( $(date +%s) - start ))
    total=$(( total + took ))
    rows+="wait\t${took}\t$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (a background stage)")\n"
    [ "$rc" -ne 0 ] && break
    continue
  fi
  if [ "${stage%&}" != "$stage" ]; then
    name=${stage%&}
    mkdir -p "$logdir"
    echo "=== stage: $name in the background (log $logdir/$name.log)"
    ( ${MAKE:-make} --no-print-directory "$name" >"$logdir/$name.log" 2>&1; s=$?; date +%s >"$logdir/$name.end"; exit $s ) &
    bg_names+=("$name"); bg_pids+=($!); bg_starts+=("$start")
    continue
  fi
  echo "=== stage: $stage"
  ${MAKE:-make} --no-print-directory "$stage"
  rc=$?
  took=$(( $(date +%s) - start ))
  total=$(( total + took ))
  status=ok
  [ "$rc" -ne 0 ] && status="FAILED (exit $rc)"
  rows+="$stage\t${took}\t$status\n"
  [ "$rc" -ne 0 ] && break
done
# A foreground stage failed before the wait: still report (and reap) the background ones.
[ ${#bg_pids[@]} -gt 0 ] && wait_background
printf "\nstage\tseconds\tresult\n${rows}total\t${total}\n" | column -t -s "$(printf '\t')"
exit "$rc"
