#!/bin/bash
# Two-GPU measurements for issue 16: tp1 vs tp2 on one config-table row, and the wall
# time of the suites with one pytest-xdist worker per GPU vs one process.
# Needs a host with 2 GPUs (nvidia-h200-x2) after `source .gpu-stage/remote-env`, and
# pytest-xdist + execnet importable there (they are not in the vLLM stage: copy their
# wheels and `pip install --no-index --no-deps --target /tmp/site` them).
# Results go to $OUT; the summary is printed at the end. About 15 minutes.
set -u
OUT=${OUT:-/tmp/llmperf-out}
mkdir -p "$OUT"
PY=python3
T="-p pytest_llmperf -p no:cacheprovider --gpu --llmperf-baselines $OUT/baselines"
{
  nvidia-smi --query-gpu=index,name,pci.bus_id,uuid,memory.total,memory.used --format=csv
  nvidia-smi topo -m
  $PY -c "import vllm, torch, xdist; print('vllm', vllm.__version__, 'torch', torch.__version__, 'xdist', xdist.__version__)"
} > "$OUT/env.txt" 2>&1
$PY -c "import xdist" 2>/dev/null || { echo "pytest-xdist is not importable: see the header of $0"; exit 2; }
# Warm vLLM's compile cache for every config first, so neither timed run pays it alone.
$PY -m pytest suites/ benchmarks/multi_gpu/ $T --llmperf-trials 1 > "$OUT/0-warm.txt" 2>&1
# 1. tp1 beside tp2 (config-table row len1536 new192 batch4 util0.88).
$PY -m pytest benchmarks/multi_gpu/ $T --llmperf-json "$OUT/tp-table.json" > "$OUT/1-tp-table.txt" 2>&1
# 2. Wall time of the suites: one process, then one worker per GPU.
TIMEFORMAT=%R
{ time $PY -m pytest suites/ benchmarks/multi_gpu/ $T --llmperf-json "$OUT/suite-1.json" > "$OUT/2-suite-1.txt" 2>&1 ; } 2> "$OUT/wall-1.txt"
{ time $PY -m pytest suites/ benchmarks/multi_gpu/ $T -p xdist -n 2 --llmperf-json "$OUT/suite-n2.json" > "$OUT/3-suite-n2.txt" 2>&1 ; } 2> "$OUT/wall-n2.txt"
$PY benchmarks/multi_gpu_report.py "$OUT" | tee "$OUT/summary.txt"
tail -n 15 "$OUT"/[123]-*.txt
