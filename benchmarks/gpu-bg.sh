#!/bin/bash
# Runs gpu-steps.sh for longer than one device call may last (10 minutes): `start` copies
# the checkout to /tmp/llmperf-bg/src (the next call replaces the checkout, and engine
# workers are spawned, so they import the plugin afresh) and launches the steps there in a
# process session of their own, which the device keeps running while the machine stays
# warm; `wait S` waits up to S seconds for them and copies what they have written so far
# to $OUT, so that a machine taken back later loses only what came after the last wait.
#
#   source .gpu-stage/remote-env && bash benchmarks/gpu-bg.sh start --deadline 1500 STEP...
#   source .gpu-stage/remote-env && bash benchmarks/gpu-bg.sh wait 560   # again, until done
set -u
BG=/tmp/llmperf-bg
OUT=${OUT:-/tmp/llmperf-out}
case ${1:-} in
start)
  shift
  [ -f "$BG/pid" ] && kill -0 "$(cat "$BG/pid")" 2>/dev/null && { echo "gpu-bg: already running" >&2; exit 2; }
  rm -rf "$BG"; mkdir -p "$BG/out" "$BG/src"
  if ls .vllm-cache/vllmcache.tgz.* >/dev/null 2>&1; then  # carried in: a warm compile cache
    cat .vllm-cache/vllmcache.tgz.* | tar -C ~ -xzf - && echo "gpu-bg: compile cache unpacked ($(du -sm ~/.cache/vllm | cut -f1) MiB)"
  fi
  tar --exclude=./.gpu-stage --exclude=./.venv --exclude=./.vllm-cache -cf - . | tar -C "$BG/src" -xf -
  cd "$BG/src" || exit 2
  export PYTHONPATH=/tmp/site:$BG/src
  OUT=$BG/out setsid nohup bash benchmarks/gpu-steps.sh "$@" > "$BG/log" 2>&1 < /dev/null &
  echo $! > "$BG/pid"
  echo "gpu-bg: started pid $(cat "$BG/pid"): $*" ;;
wait)
  limit=${2:?wait SECONDS}; t0=$(date +%s)
  [ -f "$BG/pid" ] || { echo "gpu-bg: nothing started on this machine" >&2; exit 2; }
  while kill -0 "$(cat "$BG/pid")" 2>/dev/null && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
    sleep 5
  done
  # At most 8 files come back from the device: the steps' files travel as one tar, and
  # the compile-cache pieces (step cachepack) beside it.
  mkdir -p "$OUT"; cp "$BG/log" "$BG/out/bg.log"
  tar -C "$BG/out" --exclude='vllmcache.tgz.*' -cf "$OUT/out.tar" .
  cp "$BG"/out/vllmcache.tgz.* "$OUT/" 2>/dev/null
  if kill -0 "$(cat "$BG/pid")" 2>/dev/null; then state=running; else state=finished; fi
  echo "gpu-bg: $state after $(( $(date +%s) - t0 ))s of waiting"
  cat "$BG/out/steps.txt" 2>/dev/null
  # the steps' own output, last lines, so the figures come back in the output tail
  for f in "$BG"/out/*.txt; do
    [ "$(basename "$f")" = steps.txt ] || { echo "==> $f"; grep -E "passed|failed|error|^[0-9.]+s (call|setup)" "$f" | tail -n 12; }
  done
  [ -f "$BG/out/live.txt" ] && { echo "==> live.txt"; tail -n 80 "$BG/out/live.txt" | cut -c1-300; }
  [ $state = finished ] && tail -n 60 "$BG/log" | cut -c1-300
  true ;;
*) echo "usage: gpu-bg.sh start [--deadline S] STEP... | wait SECONDS" >&2; exit 2 ;;
esac
