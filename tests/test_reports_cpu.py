"""One real run on vLLM's CPU build writes every report format (one engine start).

Everything else about the reports is tested on recorded result objects
(test_reports.py, test_cli.py, test_benchmark_interop.py).
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from pytest_llmperf.reports.json import validate_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.full  # CI: every format from fake results in test_reports.py
def test_one_real_run_writes_every_format(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real="""
        import pytest
        from pytest_llmperf import perf

        @pytest.mark.parametrize("batch", [2, 4])
        @perf(model="tiny-llama-2l", device="cpu", max_model_len=256, max_num_seqs=4,
              input_len=32, output_len=16, trials=2, gpu_memory_utilization=0.2,
              enforce_eager=True, extra={"kv_cache_memory_bytes": 256 * 2**20})
        def test_tiny(llmperf, batch):
            assert llmperf.run(batch=batch).output_tok_s > 0
    """)
    result = pytester.runpytest(
        "--llmperf-update-baselines", "--llmperf-json=out/r.json", "--llmperf-markdown=out/r.md",
        "--llmperf-plots=out/plots", "--llmperf-history=out/h.db",
        "--benchmark-json=bench.json",  # pytest-benchmark writes first and makes no folders
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "[[]llmperf[]] starting engine tiny-llama-2l tp1 seqs4 len256 [[]cpu[]]*",
        "[[]llmperf[]]   KV cache: * tokens",
        "[[]llmperf[]]   1 untimed round(s), then 2 timed trial(s) of b2 32/16",
        "[[]llmperf[]]   1/2: * s, * tok/s",
        "[[]llmperf[]]   2/2: * s, * tok/s",
    ])
    assert result.stdout.str().count("starting engine") == 1  # both tests share it
    out = pytester.path / "out"

    data = json.loads((out / "r.json").read_text())
    validate_report(data)
    assert [t["outcome"] for t in data["tests"]] == ["updated", "updated"]
    assert [t["result"]["workload"]["batch"] for t in data["tests"]] == [2, 4]
    assert all(len(t["result"]["trials"]) == 2 for t in data["tests"])
    [fingerprint] = data["machines"].values()
    assert fingerprint["device"] == "cpu" and fingerprint["vllm_version"]

    markdown = (out / "r.md").read_text()
    assert markdown.count("| 📝 | `test_real.py::test_tiny[") == 2
    assert markdown.count("<details>") == 2

    pngs = sorted(p.name for p in (out / "plots").iterdir())
    assert sum(n.startswith("latency-test_real.py-test_tiny") for n in pngs) == 2
    assert any(n.startswith("throughput-tiny-llama-2l") for n in pngs)  # batch 2 and 4
    for name in pngs:
        assert (out / "plots" / name).read_bytes()[:8] == PNG

    with sqlite3.connect(out / "h.db") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
        assert db.execute("SELECT COUNT(DISTINCT test_id) FROM measurements").fetchone() == (2,)

    bench = {b["name"]: b for b in json.loads((pytester.path / "bench.json").read_text())["benchmarks"]}
    b2 = bench["test_tiny[2]"]
    assert b2["stats"]["rounds"] == 2
    assert b2["extra_info"]["output_tok_s"] > 0 and b2["extra_info"]["ttft_p50_ms"] > 0
    assert b2["extra_info"]["llmperf"]["device"] == "cpu"
