#!/usr/bin/env bash
# Does the runner-speed probe follow the engine when the runner slows down?
#
# Records baselines of a few CPU suite tests on a quiet machine (one engine start, with
# the probe), then runs the same tests against them with N busy-loop processes beside
# them (a neighbour taking cores for the whole job, as on a shared CI runner), and once
# more quiet (an A/A check). Each run writes its --llmperf-json report; the summary
# prints, per run, the probe's score and each test's throughput change against the
# baseline, raw and as the gate judged it after scaling.
#
#   benchmarks/host_speed_check.sh OUT_DIR [HOGS...]     (default hogs: 1 2)
#
# Run nothing else on the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: host_speed_check.sh OUT_DIR [HOGS...]}
shift
hogs=("$@"); [ $# -gt 0 ] || hogs=(1 2)
tests=(suites/test_batch_curve.py suites/test_memory.py::test_kv_capacity_matches_the_card
       "suites/test_serving.py::test_latency_slos_at_fixed_concurrency")
mkdir -p "$out"
bl="$out/baselines"
py=.venv/bin/python
run() {  # name, extra pytest args...
  local name=$1
  shift
  "$py" -m pytest "${tests[@]}" -p no:cacheprovider --llmperf-baselines="$bl" \
    --llmperf-json="$out/$name.json" "$@" > "$out/$name.log" 2>&1 || true
  grep -E "runner speed probe|passed|failed" "$out/$name.log" | tail -2
}
echo "== record (quiet)"
run record --llmperf-update-baselines
for n in "${hogs[@]}"; do
  echo "== $n busy process(es)"
  pids=()
  for _ in $(seq "$n"); do "$py" -c "while True: pass" & pids+=($!); done
  run "hog$n" || true
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
done
echo "== quiet again"
run quiet
"$py" - "$out" <<'EOF'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ["record", *sorted(p.stem for p in out.glob("hog*.json")), "quiet"]:
    log = (out / f"{name}.log").read_text()
    m = re.search(r"runner speed probe: ([0-9.]+)", log)
    print(f"{name}: probe {m.group(1) if m else '?'}")
    doc = json.loads((out / f"{name}.json").read_text())
    for t in doc["tests"]:
        rows = {r["metric"]: r for r in t.get("comparison") or []}
        r = rows.get("output_tok_s")
        line = f"  {t['test_id']}: {t['outcome']}"
        stored = ((t.get("baseline") or {}).get("metrics") or {}).get("output_tok_s")
        if r:
            raw = r["current"] / stored["median"] - 1 if stored else float("nan")
            line += (f"; output_tok_s {r['current']:.1f}: raw {raw:+.1%}, against the scaled "
                     f"baseline {r['baseline']:.1f} {r['change']:+.1%} {r['verdict']}")
        notes = [m for m in t.get("messages", []) if "runner" in m or "set aside" in m or "reproduced" in m]
        print(line + "".join(f"\n    {n}" for n in notes))
EOF
