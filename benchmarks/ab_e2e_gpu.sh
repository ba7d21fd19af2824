#!/bin/bash
# Paired A/B end to end on the GPU: a git repo whose head widens the MLP of a local card.
set -e
# Run from the project root after `source .gpu-stage/remote-env`; results go to $OUT.
OUT=${OUT:-/tmp/llmperf-out}; mkdir -p "$OUT"
ROOT=$PWD
R=/tmp/abrepo; rm -rf $R; mkdir -p $R/models/m $R/suites
cp $ROOT/pytest_llmperf/cards/llama-3.1-8b/config.json $R/models/m/config.json
cat > $R/suites/test_ab.py <<'PY'
from pytest_llmperf import perf

@perf(model="models/m", max_model_len=512, batch=24, input_len=256, output_len=128, trials=3)
def test_decode(llmperf):
    llmperf.run()
PY
cd $R; git init -q; git config user.email a@b; git config user.name ab; git add -A; git commit -qm base
python3 -c "import json;p='models/m/config.json';c=json.load(open(p));c['intermediate_size']+=800;json.dump(c,open(p,'w'),indent=1)"
git commit -qam "head: MLP +800 (about +4% decode cost)"
python3 -m pytest -p pytest_llmperf -p no:cacheprovider suites/ --gpu --llmperf-ab=HEAD~1 --llmperf-confirm=1 --llmperf-json=$OUT/ab-e2e.json -rA 2>&1 | tee $OUT/ab-e2e.log | tail -60
