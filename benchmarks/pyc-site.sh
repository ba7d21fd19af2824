#!/bin/bash
# Compiles the bytecode of a staged site folder (default /tmp/site) once, then times a
# fresh `import vllm`. The GPU stage unpacks vLLM's wheel without bytecode,
# and a host that sets PYTHONDONTWRITEBYTECODE never caches it: every engine process
# (and vLLM's EngineCore beside it) then compiles vLLM's source again.
# PYC_TIME_BEFORE=1 also times the import before compiling (~22 s on the H100 host, a
# figure RESULTS.md has from s39-s46); by default it is skipped to save device time.
set -u
SITE=${1:-/tmp/site}
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }  # seconds since a now()
imp() {
  local t=$(now)
  python3 -c "import vllm, vllm.entrypoints.llm" > /dev/null 2>&1
  echo "import vllm ($1): $(since "$t") s"
}
echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
echo "bytecode files in $SITE before: $(find "$SITE" -name '*.pyc' | wc -l)"
[ "${PYC_TIME_BEFORE:-0}" = 1 ] && imp before
# and the host's own packages (torch, transformers) where they lack bytecode too
HOSTSITE=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
echo "bytecode files in $HOSTSITE before: $(find "$HOSTSITE" -name '*.pyc' | wc -l)"
for d in "$SITE" "$HOSTSITE"; do
  t=$(now); python3 -m compileall -q -j0 "$d" > /dev/null 2>&1; rc=$?
  echo "compileall $d: $(since "$t") s, rc=$rc"
done
echo "bytecode files in $SITE after: $(find "$SITE" -name '*.pyc' | wc -l)"
imp after
