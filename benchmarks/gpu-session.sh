#!/bin/bash
# One device call's worth of GPU measurements (see README, "Measured").
# Run on the GPU host after `source .gpu-stage/remote-env`; results go to $OUT.
set -u
OUT=${OUT:-/tmp/llmperf-out}
mkdir -p "$OUT"
PY=python3
ROW1="suites/test_throughput.py::test_config_table[tp1-len1024-new256-batch24-util0.93]"
T="-p pytest_llmperf -p no:cacheprovider --gpu --llmperf-baselines $OUT/baselines"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  $PY -c "import vllm, torch, pytest, psutil, jsonschema, pynvml; print('vllm', vllm.__version__, 'torch', torch.__version__, 'pytest', pytest.__version__)"
} > "$OUT/env.txt" 2>&1
case "${1:-plugin}" in
plugin)
  # 1. Record baselines for the whole suite on this GPU.
  $PY -m pytest suites/ $T --llmperf-update-baselines --llmperf-json $OUT/update.json > $OUT/1-update.txt 2>&1
  # 2. A/A through the plugin: a fresh engine start against the fresh baseline.
  $PY -m pytest "$ROW1" $T --llmperf-json $OUT/aa.json > $OUT/2-aa.txt 2>&1
  # 3. A known 5% slowdown must fail the gate.
  $PY -m pytest "$ROW1" $T --llmperf-slowdown 0.05 --llmperf-json $OUT/slow5.json > $OUT/3-slow5.txt 2>&1
  # 4. The reference: a bare LLM.generate loop on the decode-heavy config.
  $PY benchmarks/bare_generate.py --model llama-3.1-8b --batch 24 --input-len 256 --output-len 256 --max-model-len 1024 --trials 5 > $OUT/4-bare.txt 2>&1
  ;;
proof)
  $PY benchmarks/gate_proof.py --starts "${2:-5}" --out $OUT/gate-proof.json > $OUT/5-proof.txt 2>&1
  $PY benchmarks/gate_proof.py --analyse $OUT/gate-proof.json > $OUT/5-proof-analysis.json 2>&1
  ;;
gate-v2)
  # Gate v2 proof (issue 13): interleaved engine starts of Llama-3.1-8B and its 1/2/4%
  # MLP-widened cards within a wall-clock budget (default 480 s); analysed offline.
  $PY benchmarks/gate_v2_proof.py --budget-s "${2:-480}" --out $OUT/gate-v2.json > $OUT/6-gate-v2.txt 2>&1
  ;;
esac
tail -n 25 $OUT/*.txt
