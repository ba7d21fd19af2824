#!/bin/bash
# Named GPU measurement steps run back to back inside one device call's deadline.
#
#   source .gpu-stage/remote-env && bash benchmarks/gpu-steps.sh [--deadline S] STEP...
#
# Each step gets the time left before the deadline (default 570 s after the start), is
# skipped when less than its minimum is left, and writes its output under $OUT. Baselines
# are recorded outside the checkout (/tmp/llmperf-bl, seeded from baselines/) because the
# next device call replaces the checkout; after every step that folder is copied to
# $OUT/bl, so a step cut off by the deadline still returns the rows it finished (baseline
# files are written one test at a time). STARTS=N sets the engine starts of the spec-draft
# and sched-prefill recordings (default 2). RESERVE=S keeps S seconds of the deadline from
# every step but cachesize and cachepack, so that a cut-off run still packs its cache.
set -u
OUT=${OUT:-/tmp/llmperf-out}
BL=/tmp/llmperf-bl
DEADLINE=570
if [ "${1:-}" = "--deadline" ]; then DEADLINE=$2; shift 2; fi
T0=$(date +%s)
mkdir -p "$OUT" "$BL"
cp -r --update=none baselines/. "$BL"/
P="python3 -m pytest -p pytest_llmperf -p no:cacheprovider --gpu --llmperf-baselines=$BL -rA --durations=0"
REC="--llmperf-update-baselines"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv > "$OUT/env.txt" 2>&1

step() {  # name minimum-seconds command...
  local name=$1 min=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) - ${RESERVE:-0} ))
  if [ "$left" -lt "$min" ]; then
    echo "$name: skipped, ${left}s left < ${min}s" | tee -a "$OUT/steps.txt"; return
  fi
  local t=$(date +%s)
  timeout -s INT -k 20 $(( left - 5 )) "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - t ))s" | tee -a "$OUT/steps.txt"
  tar -C "$BL" -cf "$OUT/bl.tar" .
}

suite_files() {  # throughput+batch_curve -> suites/test_throughput.py suites/test_batch_curve.py
  local f; for f in $(echo "$1" | tr + ' '); do echo -n " suites/test_$f.py"; done
}

for s in "$@"; do
  left=$(( DEADLINE - ($(date +%s) - T0) ))
  case $s in
  agree-c1)  # issue 12: TTFT at c1 against vllm bench serve, more runs than last time
    step $s 420 python3 benchmarks/serve_agreement.py --gpu --model llama-3.1-8b \
      --max-model-len 1024 --max-num-seqs 64 --input-len 256 --output-len 256 \
      --concurrency 1 --runs 7 --also-ids --out "$OUT/agree-c1.json" ;;
  agree-c1n)  # issue 12: TTFT at c1 with 24 prompts per run (3x the p50's sample), 5 runs each
    step $s 300 python3 benchmarks/serve_agreement.py --gpu --model llama-3.1-8b \
      --max-model-len 1024 --max-num-seqs 64 --input-len 256 --output-len 256 \
      --concurrency 1 --runs 5 --min-prompts 24 --out "$OUT/agree-c1n.json" ;;
  serving)     step $s 240 $P suites/test_serving.py $REC --llmperf-json="$OUT/serving.json" ;;
  serving-gate) step $s 240 $P suites/test_serving.py --llmperf-json="$OUT/serving-gate.json" \
                  --llmperf-markdown="$OUT/serving-gate.md" ;;
  thr)         step $s 240 $P suites/test_throughput.py -k "len1024 or len1536" $REC \
                  --llmperf-baseline-starts=3 --llmperf-json="$OUT/thr.json" ;;
  thr1536)     step $s 200 $P suites/test_throughput.py -k len1536 $REC \
                  --llmperf-baseline-starts=${STARTS:-3} --llmperf-json="$OUT/thr1536.json" ;;
  thr1024)     step $s 150 $P suites/test_throughput.py -k len1024 $REC \
                  --llmperf-baseline-starts=${STARTS:-3} --llmperf-json="$OUT/thr1024.json" ;;
  thr768)      step $s 150 $P suites/test_throughput.py -k len768 $REC \
                  --llmperf-baseline-starts=${STARTS:-2} --llmperf-json="$OUT/thr768.json" ;;
  thr2048)     step $s 200 $P suites/test_throughput.py -k len2048 $REC \
                  --llmperf-baseline-starts=${STARTS:-2} --llmperf-json="$OUT/thr2048.json" ;;
  curve)       step $s 240 $P suites/test_batch_curve.py $REC --llmperf-baseline-starts=2 \
                  --llmperf-json="$OUT/curve.json" ;;
  sched)       step $s 240 $P suites/test_scheduler.py $REC --llmperf-baseline-starts=2 \
                  --llmperf-json="$OUT/sched.json" ;;
  spec)        step $s 240 $P suites/test_speculative.py $REC --llmperf-baseline-starts=2 \
                  --llmperf-json="$OUT/spec.json" ;;
  spec-ngram)  step $s 150 $P suites/test_speculative.py -k "ngram or none" $REC \
                  --llmperf-baseline-starts=${STARTS:-2} --llmperf-json="$OUT/spec-ngram.json" ;;
  sched-seqs)  step $s 150 $P suites/test_scheduler.py -k max_num_seqs $REC \
                  --llmperf-baseline-starts=${STARTS:-2} --llmperf-json="$OUT/sched-seqs.json" ;;
  spec-draft)  step $s 150 $P suites/test_speculative.py -k draft $REC --llmperf-baseline-starts=${STARTS:-2} \
                  --llmperf-json="$OUT/spec-draft.json" ;;
  sched-prefill) step $s 150 $P suites/test_scheduler.py -k prefill $REC --llmperf-baseline-starts=${STARTS:-2} \
                  --llmperf-json="$OUT/sched-prefill.json" ;;
  thr-rest)    step $s 200 $P suites/test_throughput.py -k "len768 or len2048" $REC \
                  --llmperf-baseline-starts=${STARTS:-2} --llmperf-json="$OUT/thr-rest.json" ;;
  quant-gate)  step $s 200 $P suites/test_quantization.py --llmperf-json="$OUT/quant-gate.json" \
                  --llmperf-markdown="$OUT/quant-gate.md" ;;
  memory)      step $s 200 $P suites/test_memory.py --llmperf-json="$OUT/memory.json" ;;
  quant)       step $s 240 $P suites/test_quantization.py $REC --llmperf-baseline-starts=2 \
                  --llmperf-json="$OUT/quant.json" ;;
  gate-*)      # one suite gated against the committed baselines: gate-throughput, gate-serving...
    step $s 150 $P suites/test_${s#gate-}.py --llmperf-json="$OUT/$s.json" \
      --llmperf-markdown="$OUT/$s.md" ;;
  gate+*)      # several suites gated in one pytest run, so its suite check sees all their
               # tests: gate+throughput+batch_curve; K=EXPR (or KG=EXPR) selects tests (-k EXPR)
    files=$(suite_files "${s#gate+}")
    kg=${KG:-${K:-}}
    step ${s//+/_} 150 $P $files ${kg:+-k "$kg"} --llmperf-json="$OUT/${s//+/_}.json" \
      --llmperf-markdown="$OUT/${s//+/_}.md" ;;  # "+" does not come back from the device
  rec+*)       # record the tests of several suites (K=EXPR selects them), STARTS engine
               # starts each (default 1): rec+memory+quantization; KR=EXPR (or K) selects tests
    files=$(suite_files "${s#rec+}")
    kr=${KR:-${K:-}}
    step ${s//+/_} 150 $P $files ${kr:+-k "$kr"} $REC --llmperf-baseline-starts=${STARTS:-1} \
      --llmperf-json="$OUT/${s//+/_}.json" --llmperf-markdown="$OUT/${s//+/_}.md" ;;
  pyc)         # the staged vLLM is unpacked without bytecode and the host may set
               # PYTHONDONTWRITEBYTECODE: then every engine process compiles vLLM's source
               # again. Compile /tmp/site once, then time an import (see pyc-site.sh).
    step $s 90 bash benchmarks/pyc-site.sh /tmp/site ;;
  gate)        # live.txt: each test's outcome (a failure's report in full) as it ends;
               # ORDER=serving+speculative+... runs those suites' files first, then the rest
               # (the same tests as suites/, so a run cut short still returns the ones named)
    files=suites/
    if [ -n "${ORDER:-}" ]; then
      files=$(suite_files "$ORDER")
      for f in suites/test_*.py; do case " $files " in *" $f "*) ;; *) files="$files $f" ;; esac; done
    fi
    LLMPERF_LIVE=$OUT/live.txt step $s 300 $P -p benchmarks.live_reports $files \
      --llmperf-json="$OUT/gate.json" --llmperf-markdown="$OUT/gate.md" ;;
  cachesize)   # how big vLLM's compile cache grew (could a later call carry it in?)
    RESERVE=0 step $s 1 bash -c 'du -s -m ~/.cache/vllm/* /tmp/torchinductor_* 2>&1; du -s -m ~/.cache/vllm' ;;
  cachepack)   # vLLM's compile cache (and Triton's) in pieces under 16 MiB, for a later call
               # to carry in as .vllm-cache/ (gpu-bg.sh start unpacks it): cold starts compile
    RESERVE=0 step $s 5 bash -c 'cd ~ && tar -czf - $(ls -d .cache/vllm .triton 2>/dev/null) | split -b 15m -d - "$OUT/vllmcache.tgz."' ;;
  gv2)         # issue 13: tile-aligned cards; the budget is what is left of this call
    n=$(ls "$OUT"/gv2-*.json 2>/dev/null | wc -l)
    step $s 200 python3 benchmarks/gate_v2_proof.py --budget-s $(( left - 25 )) --granule 256 \
      --out "$OUT/gv2-$n.json" ;;
  gv2m)        # issue 13: MLP steps of 128 (~1%, ~2.5%, ~5% decode cost measured on the H100,
               # about twice the extra bytes); cards in one fixed folder so that vLLM's compile
               # cache serves them again in the next call on the same host
    n=$(ls "$OUT"/gv2m-*.json 2>/dev/null | wc -l)
    step $s 200 python3 benchmarks/gate_v2_proof.py --budget-s $(( left - 25 )) --granule 128 \
      --changes 0.63,1.25,2.5 --cycle 1.25,0.63,1.25,2.5 --cards-dir /tmp/gv2m-cards \
      --out "$OUT/gv2m-$n.json" ;;
  gv2v)        # issue 13: vocabulary steps (LM head) of about 1.25% and 2.5% of the bytes a
               # decode step reads; same cards folder as gv2m, so the base card stays compiled
    n=$(ls "$OUT"/gv2v-*.json 2>/dev/null | wc -l)
    step $s 200 python3 benchmarks/gate_v2_proof.py --budget-s $(( left - 25 )) --granule 256 \
      --widen vocab --changes 1.25,2.5 --cycle 2.5,1.25 --cards-dir /tmp/gv2m-cards \
      --out "$OUT/gv2v-$n.json" ;;
  *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
cat "$OUT/steps.txt"
tail -n 15 "$OUT"/*.txt | cut -c1-300
# the reports too, cut short, so that the figures come back even where a file does not
for f in "$OUT"/*.md; do [ -f "$f" ] && { echo "==> $f"; sed "/^Changes are against/q" "$f" | cut -c1-300 | head -c 7000; }; done
# and the suite table of every report written (roofline share, KV vs formula, starts apart)
ls "$OUT"/*.json > /dev/null 2>&1 && python3 -m pytest_llmperf table "$OUT"/*.json | cut -c1-320
