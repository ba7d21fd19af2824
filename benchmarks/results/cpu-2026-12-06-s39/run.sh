#!/bin/bash
# Validation of the pooled CPU baselines (session 39): a planted 20% slowdown, then unchanged runs.
cd /work/main
for n in "$@"; do
  extra=""; [ $n = slow ] && extra="--llmperf-slowdown=0.2"
  t0=$(date +%s)
  scripts/cpu-env pytest suites/ -p no:cacheprovider $extra --llmperf-json=/tmp/val39/$n.json > /tmp/val39/$n.log 2>&1
  rc=$?
  echo "$n rc=$rc $(( $(date +%s)-t0 ))s $(date +%H:%M)" >> /tmp/val39/summary.txt
done
