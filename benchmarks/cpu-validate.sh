#!/bin/bash
# The CPU gate's validation runs (issue 14): `pytest suites/` on the CPU build once per
# NAME given, a run named "slow" with a planted 20% slowdown, each run's report and log
# under DIR (default /tmp/cpu-validate), one "NAME rc=N SECONDSs HH:MM" line per run in
# DIR/summary.txt; then `python3 benchmarks/cpu_validation.py DIR NAME...` prints the table.
#
#   bash benchmarks/cpu-validate.sh [--dir DIR] slow aa-1 aa-2
set -u
DIR=/tmp/cpu-validate
if [ "${1:-}" = "--dir" ]; then DIR=$2; shift 2; fi
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$DIR"
for n in "$@"; do
  extra=""; [ "$n" = slow ] && extra="--llmperf-slowdown=0.2"
  t0=$(date +%s)
  scripts/cpu-env pytest suites/ -p no:cacheprovider $extra --llmperf-json="$DIR/$n.json" > "$DIR/$n.log" 2>&1
  rc=$?
  echo "$n rc=$rc $(( $(date +%s) - t0 ))s $(date +%H:%M)" >> "$DIR/summary.txt"
done
