#!/bin/bash
cd /work/rec
export PYTHONPATH=/work/rec LLMPERF_VENV=/work/main/.venv
for n in slow aa-1 aa-2 aa-3 aa-4 aa-5; do
  extra=""; [ $n = slow ] && extra="--llmperf-slowdown=0.2"
  t0=$(date +%s)
  scripts/cpu-env pytest suites/ -p no:cacheprovider $extra --llmperf-json=/tmp/val3/$n.json > /tmp/val3/$n.log 2>&1
  rc=$?
  echo "$n rc=$rc $(( $(date +%s)-t0 ))s $(date +%H:%M)" >> /tmp/val3/summary.txt
done
