"""TPOT p50 of the A/B end-to-end test's workload for tiny-card variants, alternating starts.

Run: scripts/cpu-env python benchmarks/results/cpu-2026-12-08-s47/plant.py ROUNDS KEY=VALUE[,KEY=VALUE] ...
(e.g. 3 num_hidden_layers=2 num_hidden_layers=6); one JSON line per engine start.
"""

import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))

from pytest_llmperf.cards import CARDS_DIR  # noqa: E402
from pytest_llmperf.config import EngineConfig, Workload  # noqa: E402
from pytest_llmperf.engine import start_engine  # noqa: E402


def main() -> None:
    base = json.loads((CARDS_DIR / "tiny-llama-2l" / "config.json").read_text())
    variants = {}
    for spec in sys.argv[2:]:
        card = dict(base)
        for kv in spec.split(","):
            k, v = kv.split("=")
            card[k] = int(v)
        d = pathlib.Path(tempfile.mkdtemp()) / spec.replace(",", "_").replace("=", "")
        d.mkdir()
        (d / "config.json").write_text(json.dumps(card))
        variants[spec] = str(d)
    wl = Workload(batch=4, input_len=32, output_len=16, trials=3)
    for rnd in range(int(sys.argv[1])):
        for spec, path in variants.items():
            cfg = EngineConfig(model=path, max_model_len=256, enforce_eager=True,
                               gpu_memory_utilization=0.2,
                               extra={"kv_cache_memory_bytes": 256 * 2**20})
            h = start_engine(cfg, "cpu", log_dir=tempfile.mkdtemp())
            try:
                res = h.run(wl)
            finally:
                h.stop()
            print(json.dumps({"round": rnd, "spec": spec,
                              "tpot_p50": [t.tpot_ms.p50 for t in res.trials],
                              "tok_s": [t.output_tok_s for t in res.trials]}), flush=True)


if __name__ == "__main__":
    main()
