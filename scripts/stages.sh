#!/usr/bin/env bash
# Runs make targets one after the other, stops at the first that fails, and prints the wall
# time of each (also on failure), so that a CI log shows where `make test`'s time goes.
#
# usage: scripts/stages.sh TARGET...   (called by `make test`; MAKE and MAKEFLAGS come from make)
set -uo pipefail
cd "$(dirname "$0")/.."

rows=""
total=0
rc=0
for stage in "$@"; do
  echo "=== stage: $stage"
  start=$(date +%s)
  ${MAKE:-make} --no-print-directory "$stage"
  rc=$?
  took=$(( $(date +%s) - start ))
  total=$(( total + took ))
  status=ok
  [ "$rc" -ne 0 ] && status="FAILED (exit $rc)"
  rows+="$stage\t${took}\t$status\n"
  [ "$rc" -ne 0 ] && break
done
printf "\nstage\tseconds\tresult\n${rows}total\t${total}\n" | column -t -s "$(printf '\t')"
exit "$rc"
